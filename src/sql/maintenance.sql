/*
 * src/sql/maintenance.sql
 *
 * Last part of the install script: retention, and the function the
 * scheduler worker (src/scheduler.c) calls every hybridexec.scheduler_naptime.
 * Each concern keeps its own step in its own part.
 */

/* ------------------------------------------------------------------------
 * The scheduler's share: retention and alerts
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_retention_step() RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	keep double precision := hx_setting_seconds('hybridexec.retention', 7 * 86400);
	batch integer := coalesce(current_setting('hybridexec.retention_batch', true)::integer, 10000);
	n integer;
BEGIN
	IF keep <= 0 THEN
		RETURN 0;
	END IF;
	/* with the tasks, which watched-table row they came from (executor.sql) */
	WITH gone AS (
		DELETE FROM hx_task t
		 WHERE t.id IN (SELECT x.id FROM hx_task x
						 WHERE x.status IN ('done', 'dead', 'cancelled')
						   AND x.finished_at < now() - make_interval(secs => keep)
						 ORDER BY x.finished_at
						 LIMIT batch
						   FOR UPDATE SKIP LOCKED)
		RETURNING t.id
	), sources AS (
		DELETE FROM hx_task_source s WHERE s.task_id IN (SELECT gone.id FROM gone)
	)
	SELECT count(*) INTO n FROM gone;
	DELETE FROM hx_error e
	 WHERE e.id IN (SELECT x.id FROM hx_error x
					 WHERE x.at < now() - make_interval(secs => keep)
					   AND NOT EXISTS (SELECT 1 FROM hx_task t WHERE t.id = x.task_id)
					 LIMIT batch);
	RETURN n;
END
$$;

COMMENT ON FUNCTION hx_retention_step() IS
'Deletes up to hybridexec.retention_batch finished tasks (done, dead, cancelled) older than hybridexec.retention, with their hx_task_source rows and old hx_error rows; the ledger and statistics stay; returns how many tasks';

CREATE FUNCTION hx_cost_maintenance() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	last timestamptz;
BEGIN
	PERFORM hx_retention_step();
	/* health checks and alerts every 5 seconds at most */
	SELECT s.at INTO last FROM hx_state s WHERE s.key = 'cost.alerts_checked';
	IF last IS NULL OR last <= now() - interval '5 seconds' THEN
		INSERT INTO hx_state (key, value, at) VALUES ('cost.alerts_checked', NULL, now())
		ON CONFLICT (key) DO UPDATE SET at = now();
		PERFORM hx_alert();
	END IF;
END
$$;

COMMENT ON FUNCTION hx_cost_maintenance() IS
'Scheduler step for the books: one retention batch every tick, hx_alert() (NOTIFY hx_alert for new problems) every 5 seconds';

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
