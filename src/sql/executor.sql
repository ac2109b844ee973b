/*
 * src/sql/executor.sql
 *
 * Part of the install script: external executors (hx_claim leases,
 * hx_complete, hx_fail, hx_heartbeat) and watched tables (hx_attach).
 */

CREATE FUNCTION hx_executor_maintenance() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	/* nothing yet */
END
$$;

COMMENT ON FUNCTION hx_executor_maintenance() IS
'Scheduler step for external executors: reclaims expired leases';
