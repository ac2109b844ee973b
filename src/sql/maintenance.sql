/*
 * src/sql/maintenance.sql
 *
 * Last part of the install script: the one function the scheduler worker
 * (src/scheduler.c) calls every hybridexec.scheduler_naptime.  Each concern
 * keeps its own step in its own part.
 */

CREATE FUNCTION hx_maintenance() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	PERFORM hx_window_maintenance();
	PERFORM hx_cost_maintenance();
	PERFORM hx_executor_maintenance();
END
$$;

COMMENT ON FUNCTION hx_maintenance() IS
'What the scheduler worker runs every hybridexec.scheduler_naptime: window runs to (re)launch or start early, escalations, the books, expired leases';
