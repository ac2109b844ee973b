-- test/bench/ledger.sql - what the hx_cost ledger trigger costs per booked
-- attempt.  Run with psql as a superuser in a scratch database that has
-- the extension (it disables the trigger for a while: not on a busy
-- server).  20,000 running tasks of a type no worker touches are finished
-- :chunk per UPDATE and transaction (the trigger's UPDATE path, which books
-- external executors' outcomes and failures; -v chunk=64 as hx_worker
-- completes them, 5000 as a large statement), once with the trigger's
-- work and once without; three rounds each, best of each printed.  The
-- in-database workers' done tasks are booked by the same code as they
-- move to hx_task_history (BENCH=batch prices a chunk's).  Figures only.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
\if :{?chunk}
\else
\set chunk 64
\endif
\pset footer off
\o /dev/null
SELECT hx_register('ledger_bench') WHERE NOT EXISTS (SELECT 1 FROM hx_type WHERE task_type = 'ledger_bench');
\o

DROP TABLE IF EXISTS bench_result, bench_ids;
DROP PROCEDURE IF EXISTS bench_round(boolean, integer, integer);
CREATE TABLE bench_result (with_ledger boolean, round integer, ms double precision);

CREATE PROCEDURE bench_round(with_ledger boolean, round integer, chunk_size integer)
LANGUAGE plpgsql AS $$
DECLARE
	chunk bigint;
	t0 timestamptz;
BEGIN
	DELETE FROM hx_task WHERE task_type = 'ledger_bench';
	INSERT INTO hx_task (task_type, route, status, attempts, started_at, worker_pid, department)
	SELECT 'ledger_bench', 'stream', 'running', 1, clock_timestamp(), 1, 'd' || (i % 3)
	  FROM generate_series(1, 20000) i;
	CREATE TABLE IF NOT EXISTS bench_ids (id bigint, b bigint);
	TRUNCATE bench_ids;
	INSERT INTO bench_ids
	SELECT id, (row_number() OVER (ORDER BY id) - 1) / chunk_size FROM hx_task WHERE task_type = 'ledger_bench';
	CREATE INDEX IF NOT EXISTS bench_ids_b ON bench_ids (b);
	ANALYZE bench_ids;
	IF with_ledger THEN
		ALTER TABLE hx_task ENABLE TRIGGER hx_cost_book;
	ELSE
		ALTER TABLE hx_task DISABLE TRIGGER hx_cost_book;
	END IF;
	COMMIT;
	t0 := clock_timestamp();
	FOR chunk IN SELECT DISTINCT x.b FROM bench_ids x ORDER BY 1 LOOP
		UPDATE hx_task t SET status = 'done', finished_at = clock_timestamp()
		  FROM bench_ids x WHERE x.b = chunk AND t.id = x.id;
		COMMIT;
	END LOOP;
	INSERT INTO bench_result VALUES (with_ledger, round,
									 extract(epoch FROM clock_timestamp() - t0) * 1000);
	ALTER TABLE hx_task ENABLE TRIGGER hx_cost_book;
END
$$;

SET synchronous_commit = off;	-- measure the trigger, not the WAL flushes
CALL bench_round(false, 1, :chunk);
CALL bench_round(true, 1, :chunk);
CALL bench_round(false, 2, :chunk);
CALL bench_round(true, 2, :chunk);
CALL bench_round(false, 3, :chunk);
CALL bench_round(true, 3, :chunk);
DELETE FROM hx_task WHERE task_type = 'ledger_bench';

SELECT :chunk AS per_update, with_ledger, round(min(ms)) AS best_ms_for_20000,
	   round((min(ms) * 1000 / 20000)::numeric, 1) AS us_per_attempt
  FROM bench_result GROUP BY with_ledger ORDER BY with_ledger;
SELECT round((((SELECT min(ms) FROM bench_result WHERE with_ledger)
			   - (SELECT min(ms) FROM bench_result WHERE NOT with_ledger)) * 1000 / 20000)::numeric, 1)
	   AS ledger_us_per_attempt;
DROP PROCEDURE bench_round(boolean, integer, integer);
DROP TABLE bench_result, bench_ids;
