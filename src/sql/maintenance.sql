/*
 * src/sql/maintenance.sql
 *
 * Part of the install script: retention, and what the scheduler worker
 * (src/scheduler.c) tells of its steps.  Each concern keeps its own step
 * in its own part; the scheduler calls each in a transaction of its own.
 */

/* ------------------------------------------------------------------------
 * Retention
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_retention_step() RETURNS integer
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp
/*
 * Due tasks are found through the finished_at indexes whatever the
 * statistics say: taken while hx_task_history was small, they made the
 * planner read all of it, every tick, to find the few due rows.
 */
SET enable_seqscan = off SET jit = off AS $$
DECLARE
	keep double precision := hx_setting_seconds('hybridexec.retention', 7 * 86400);
	keep_dead double precision := hx_setting_seconds('hybridexec.retention_dead', 30 * 86400);
	keep_archive double precision := hx_setting_seconds('hybridexec.archive_retention', 90 * 86400);
	batch integer := coalesce(current_setting('hybridexec.retention_batch', true)::integer, 10000);
	n integer;
BEGIN
	IF keep <= 0 THEN
		RETURN 0;
	END IF;
	/* dead tasks stay at least as long as the others, or for good */
	keep_dead := CASE WHEN keep_dead <= 0 THEN 0 ELSE greatest(keep, keep_dead) END;
	/*
	 * The ids to delete are collected first, as an array (an InitPlan run
	 * once), and the rows then fetched by primary key: the scheduler runs
	 * this step with a cached generic plan after five calls, and a
	 * semi-join on "id IN (subquery)" with an unknown LIMIT is planned as a
	 * hash join over a sequential scan of the whole queue - every tick,
	 * however few rows are due, so that retention fell behind the load it
	 * was meant to clean.  Dead tasks are found through an index of their
	 * own (they are kept longer: the others' scan never steps over them);
	 * they only ever finish in the queue's own heap.  With the tasks go the
	 * watched-table rows they came from (attach.sql).
	 */
	WITH gone AS (
		DELETE FROM hx_task t
		 WHERE t.id = ANY (ARRAY (SELECT x.id FROM hx_task x
								   WHERE x.status IN ('done', 'cancelled')
									 AND x.finished_at < now() - make_interval(secs => keep)
								   ORDER BY x.finished_at
								   LIMIT batch
									 FOR UPDATE SKIP LOCKED)
						   || ARRAY (SELECT x.id FROM ONLY hx_task x
									  WHERE keep_dead > 0 AND x.status = 'dead'
										AND x.finished_at < now() - make_interval(secs => keep_dead)
									  ORDER BY x.finished_at
									  LIMIT batch
										FOR UPDATE SKIP LOCKED))
		RETURNING t.*
	), sources AS (
		DELETE FROM hx_task_source s WHERE s.task_id = ANY (ARRAY (SELECT gone.id FROM gone))
	), archived AS (
		/* done tasks' payloads and results outlive them, for hx_replay */
		INSERT INTO hx_archive (task_id, task_type, payload, result, route, department, dedupe_key,
								origin, submitted_by, submitted_at, finished_at)
		SELECT gone.id, gone.task_type, gone.payload, gone.result, gone.route, gone.department,
			   gone.dedupe_key, gone.origin, gone.submitted_by, gone.submitted_at, gone.finished_at
		  FROM gone WHERE gone.status = 'done' AND keep_archive > 0
	)
	SELECT count(*) INTO n FROM gone;
	DELETE FROM hx_archive a
	 WHERE a.task_id = ANY (ARRAY (SELECT x.task_id FROM hx_archive x
									WHERE keep_archive <= 0
									   OR x.finished_at < now() - make_interval(secs => keep_archive)
									ORDER BY x.finished_at
									LIMIT batch));
	DELETE FROM hx_error e
	 WHERE e.id = ANY (ARRAY (SELECT x.id FROM hx_error x
							   WHERE x.at < now() - make_interval(secs => keep)
								 AND NOT EXISTS (SELECT 1 FROM hx_task t WHERE t.id = x.task_id)
							   LIMIT batch));
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_retention_step() IS
'Deletes up to hybridexec.retention_batch done and cancelled tasks older than hybridexec.retention, and as many dead ones older than hybridexec.retention_dead, with their hx_task_source rows and old hx_error rows, keeping the done ones'' payloads and results in hx_archive for hybridexec.archive_retention (and retiring archived ones older than that); the ledger and statistics stay; returns how many tasks';

CREATE FUNCTION hx_scheduler_status()
RETURNS TABLE (step text, every text, last_ok timestamptz, last_failed timestamptz,
			   last_error text)
AS 'MODULE_PATHNAME', 'hx_scheduler_status' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_scheduler_status() IS
'The scheduler worker''s steps (each runs in a transaction of its own; one that fails never stops the others): how often each runs, when it last succeeded, and when and why it last failed, if it has failed since (needs shared_preload_libraries)';
