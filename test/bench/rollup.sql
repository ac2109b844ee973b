-- test/bench/rollup.sql - what rolling the ledger up costs per booking
-- (hybridexec.ledger_retention).  Run with psql as a superuser in a
-- scratch database that has the extension and no workers (not
-- hybridexec.database_name), after ALTER SYSTEM SET
-- hybridexec.ledger_retention = '1d' and a reload.  200,000 bookings of
-- 20 departments and 5 task types dated three days back are rolled up by
-- the scheduler's own step, hybridexec.retention_batch per call, each call
-- its own transaction; three rounds, the best printed.  Figures only.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\pset footer off
DROP TABLE IF EXISTS bench_rollup;
CREATE TABLE bench_rollup (round integer, bookings bigint, ms double precision, hx_cost_day_rows bigint);

CREATE PROCEDURE bench_rollup_round(round integer)
LANGUAGE plpgsql AS $$
DECLARE
	t0 timestamptz;
	total bigint := 0;
	n integer;
BEGIN
	INSERT INTO hx_cost_attempt (at, task_id, attempt, outcome, task_type, route, department, origin,
						 submitted_at, wait_seconds, wall_seconds, latency_seconds, currency, cost,
						 baseline_cost, batch_cost)
	SELECT now() - interval '3 days' + i * interval '1 ms', i, 1, 'done', 'type' || (i % 5), 'batch',
		   'd' || (i % 20), 'background', now() - interval '3 days', 1, 0.01, 1.01, 'USD', 0.005, 0.01, 0.005
	  FROM generate_series(1, 200000) i;
	TRUNCATE hx_cost_day;
	COMMIT;
	t0 := clock_timestamp();
	LOOP
		n := _hybridexec.hx_ledger_rollup_step();
		COMMIT;
		EXIT WHEN n = 0;
		total := total + n;
	END LOOP;
	INSERT INTO bench_rollup
	SELECT round, total, extract(epoch FROM clock_timestamp() - t0) * 1000, count(*) FROM hx_cost_day;
END
$$;

SET synchronous_commit = off;	-- measure the roll-up, not the WAL flushes
CALL bench_rollup_round(1);
CALL bench_rollup_round(2);
CALL bench_rollup_round(3);
TRUNCATE hx_cost_day;

SELECT max(bookings) AS bookings, round(min(ms)) AS best_ms,
	   round((min(ms) * 1000 / max(bookings))::numeric, 2) AS us_per_booking,
	   max(hx_cost_day_rows) AS hx_cost_day_rows
  FROM bench_rollup;
DROP PROCEDURE bench_rollup_round(integer);
DROP TABLE bench_rollup;
