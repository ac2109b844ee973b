/*
 * src/sql/cost.sql
 *
 * Part of the install script: cost accounting and observability (prices,
 * the hx_cost ledger, reports, savings, advice, statistics, health and
 * retention).
 */

CREATE FUNCTION hx_cost_maintenance() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	/* nothing yet */
END
$$;

COMMENT ON FUNCTION hx_cost_maintenance() IS
'Scheduler step for the books: retention of finished tasks, health alerts';
