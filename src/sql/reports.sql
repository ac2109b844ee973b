/*
 * src/sql/reports.sql
 *
 * Part of the install script: what the books and the queue tell a DBA -
 * cost reports, savings, advice, live statistics, window history, health
 * checks and the alerts the scheduler sends for them.
 */

/* ------------------------------------------------------------------------
 * Attribution
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cost_report(group_by text DEFAULT 'department',
							   "from" timestamptz DEFAULT now() - interval '1 day',
							   "to" timestamptz DEFAULT now())
RETURNS TABLE ("group" text, currency text, tasks bigint, attempts bigint, cost numeric,
			   baseline_cost numeric, saved numeric, run_seconds numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	key text;
BEGIN
	key := CASE group_by
		WHEN 'department' THEN $k$coalesce(c.department, '(none)')$k$
		WHEN 'task_type' THEN 'c.task_type'
		WHEN 'route' THEN 'c.route'
		WHEN 'window' THEN $k$coalesce(c.window_name, '(stream)')$k$
		WHEN 'executor' THEN $k$coalesce(c.executor, '(in-database)')$k$
		WHEN 'rule' THEN $k$coalesce(c.rule_name, '(none)')$k$
		WHEN 'day' THEN $k$to_char(c.at AT TIME ZONE hx_local_zone(), 'YYYY-MM-DD')$k$
		WHEN 'hour' THEN $k$to_char(c.at AT TIME ZONE hx_local_zone(),
									 CASE WHEN c.rolled THEN 'YYYY-MM-DD "(whole day)"' ELSE 'YYYY-MM-DD HH24:00' END)$k$
	END;
	IF key IS NULL THEN
		RAISE EXCEPTION 'cannot group costs by "%"', group_by
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Group by department, task_type, route, window, executor, rule, day or hour.';
	END IF;
	IF "from" IS NULL OR "to" IS NULL OR "from" > "to" THEN
		RAISE EXCEPTION 'the period must have a start not after its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_cost_report(''department'', now() - interval ''7 days'', now()).';
	END IF;
	RETURN QUERY EXECUTE format(
		'SELECT %s, c.currency,
				(count(DISTINCT c.task_id) FILTER (WHERE c.outcome <> ''correction'') + sum(c.tasks))::bigint,
				sum(c.attempts)::bigint, sum(c.cost), sum(c.baseline_cost),
				sum(c.baseline_cost) - sum(c.cost),
				round(coalesce(sum(c.wall_seconds), 0)::numeric, 3)
		   FROM hx_books($1, $2) c
		  GROUP BY 1, 2
		  ORDER BY 1, 2', key)
	USING "from", "to";
END
$$;

COMMENT ON FUNCTION hx_cost_report(text, timestamptz, timestamptz) IS
'Costs booked in [from, to) grouped by department, task_type, route, window, executor, rule, day or hour (local days in hybridexec.time_zone): tasks, attempts, cost, stream baseline, saved against it (exact sums of the bookings), run seconds (to the millisecond); one row per group and currency.  Days rolled up after hybridexec.ledger_retention (hx_cost_day) count when they start in the period, as whole days (grouped by hour: one "(whole day)" group)';

CREATE FUNCTION hx_stats(span interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, route text, queued bigint, running bigint, failed bigint,
			   done bigint, dead bigint, oldest_queued interval,
			   per_min_1 numeric, per_min_5 numeric, per_min_15 numeric,
			   error_rate numeric,
			   wait_p50_ms numeric, wait_p95_ms numeric, wait_p99_ms numeric,
			   run_p50_ms numeric, run_p95_ms numeric, run_p99_ms numeric, reused bigint,
			   quality numeric, evaluations bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	/*
	 * Live counts from the partial indexes of unfinished tasks; everything
	 * about finished attempts from hx_stat_minute (the last "span").
	 */
	WITH live AS (
		SELECT t.task_type, t.route, t.status, count(*) AS n,
			   min(t.submitted_at) FILTER (WHERE t.status = 'queued') AS oldest
		  FROM hx_task t WHERE t.status IN ('queued', 'failed') AND t.route = 'stream'
		 GROUP BY 1, 2, 3
		UNION ALL
		SELECT t.task_type, t.route, t.status, count(*),
			   min(t.submitted_at) FILTER (WHERE t.status = 'queued')
		  FROM hx_task t WHERE t.status IN ('queued', 'failed') AND t.route = 'batch'
		 GROUP BY 1, 2, 3
		UNION ALL
		SELECT t.task_type, t.route, t.status, count(*), NULL
		  FROM hx_task t WHERE t.status = 'running'
		 GROUP BY 1, 2, 3
	), l AS (
		SELECT live.task_type, live.route,
			   sum(n) FILTER (WHERE status = 'queued') AS queued,
			   sum(n) FILTER (WHERE status = 'running') AS running,
			   sum(n) FILTER (WHERE status = 'failed') AS failed,
			   min(oldest) AS oldest
		  FROM live GROUP BY 1, 2
	), m AS (
		SELECT s.task_type, s.route,
			   sum(s.done) AS done, sum(s.dead) AS dead, sum(s.failed) AS failed_attempts,
			   sum(s.reused) AS reused,
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '1 minute') AS d1,
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '5 minutes') AS d5,
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '15 minutes') AS d15,
			   hx_hist_sum(s.wait_hist) AS wait_hist, hx_hist_sum(s.run_hist) AS run_hist
		  FROM hx_stat_minute s
		 WHERE s.minute >= date_trunc('minute', now() - span)
		 GROUP BY 1, 2
	), q AS (
		SELECT e.task_type, e.route, avg(e.value) AS quality, count(*) AS n
		  FROM hx_quality e WHERE e.at >= now() - span
		 GROUP BY 1, 2
	)
	SELECT coalesce(l.task_type, m.task_type), coalesce(l.route, m.route),
		   coalesce(l.queued, 0)::bigint, coalesce(l.running, 0)::bigint, coalesce(l.failed, 0)::bigint,
		   coalesce(m.done, 0)::bigint, coalesce(m.dead, 0)::bigint,
		   now() - l.oldest,
		   /*
		    * The current minute is partial: rates over the whole minutes plus
		    * it.  Numbers are shown rounded (rates to hundredths, the error
		    * rate to 0.1%, percentiles - within a factor of two anyway - to
		    * a tenth of a millisecond), never as float arithmetic leaves them.
		    */
		   round(coalesce(m.d1, 0) / (1 + extract(epoch FROM now() - date_trunc('minute', now())) / 60), 2),
		   round(coalesce(m.d5, 0) / (5 + extract(epoch FROM now() - date_trunc('minute', now())) / 60), 2),
		   round(coalesce(m.d15, 0) / (15 + extract(epoch FROM now() - date_trunc('minute', now())) / 60), 2),
		   CASE WHEN m.done + m.failed_attempts + m.dead > 0
				THEN round((m.failed_attempts + m.dead)::numeric / (m.done + m.failed_attempts + m.dead), 3) END,
		   round(hx_hist_percentile(m.wait_hist, 0.5)::numeric, 1),
		   round(hx_hist_percentile(m.wait_hist, 0.95)::numeric, 1),
		   round(hx_hist_percentile(m.wait_hist, 0.99)::numeric, 1),
		   round(hx_hist_percentile(m.run_hist, 0.5)::numeric, 1),
		   round(hx_hist_percentile(m.run_hist, 0.95)::numeric, 1),
		   round(hx_hist_percentile(m.run_hist, 0.99)::numeric, 1),
		   coalesce(m.reused, 0)::bigint,
		   round(q.quality, 3), coalesce(q.n, 0)::bigint
	  FROM l FULL JOIN m ON m.task_type = l.task_type AND m.route = l.route
	  LEFT JOIN q ON q.task_type = coalesce(l.task_type, m.task_type) AND q.route = coalesce(l.route, m.route)
	 ORDER BY 1, 2
$$;

COMMENT ON FUNCTION hx_stats(interval) IS
'Per task type and route: unfinished tasks now (queued, running, failed = waiting for a retry) and the age of the oldest queued one; over the last span from hx_stat_minute: done and dead attempts, error rate, percentiles of queue wait and run time, submissions that reused a done task''s result; done per minute over the last 1, 5 and 15 minutes; the average of the evaluations recorded in the span (hx_quality, all metrics) and their count';

CREATE VIEW hx_stats AS SELECT * FROM hx_stats('1 hour');

COMMENT ON VIEW hx_stats IS 'hx_stats() over the last hour';
COMMENT ON COLUMN hx_stats.task_type IS 'Task type';
COMMENT ON COLUMN hx_stats.route IS 'stream or batch';
COMMENT ON COLUMN hx_stats.quality IS 'Average evaluation (hx_quality, all metrics) recorded in the last hour for results of this type and route, to 0.001';
COMMENT ON COLUMN hx_stats.evaluations IS 'Evaluations recorded in the last hour';
COMMENT ON COLUMN hx_stats.queued IS 'Tasks queued now';
COMMENT ON COLUMN hx_stats.running IS 'Tasks running now';
COMMENT ON COLUMN hx_stats.failed IS 'Tasks waiting for a retry now (status failed)';
COMMENT ON COLUMN hx_stats.done IS 'Attempts that succeeded in the last hour';
COMMENT ON COLUMN hx_stats.dead IS 'Attempts that failed for the last time (the task gave up) in the last hour';
COMMENT ON COLUMN hx_stats.oldest_queued IS 'How long the oldest queued task has waited (NULL when none is queued)';
COMMENT ON COLUMN hx_stats.per_min_1 IS 'Tasks done per minute over the last minute (and the current one so far), to hundredths';
COMMENT ON COLUMN hx_stats.per_min_5 IS 'Tasks done per minute over the last 5 minutes, to hundredths';
COMMENT ON COLUMN hx_stats.per_min_15 IS 'Tasks done per minute over the last 15 minutes, to hundredths';
COMMENT ON COLUMN hx_stats.error_rate IS 'Share of the last hour''s attempts that failed (failed and dead over all), 0 to 1, to 0.001; NULL without attempts';
COMMENT ON COLUMN hx_stats.wait_p50_ms IS 'Median queue wait (submission to start of the attempt) in the last hour, milliseconds, from a log-scale histogram (within a factor of two)';
COMMENT ON COLUMN hx_stats.wait_p95_ms IS '95th percentile of the queue wait in the last hour, milliseconds (histogram: within a factor of two)';
COMMENT ON COLUMN hx_stats.wait_p99_ms IS '99th percentile of the queue wait in the last hour, milliseconds (histogram: within a factor of two)';
COMMENT ON COLUMN hx_stats.run_p50_ms IS 'Median run time of an attempt in the last hour, milliseconds (histogram: within a factor of two)';
COMMENT ON COLUMN hx_stats.run_p95_ms IS '95th percentile of the run time in the last hour, milliseconds (histogram: within a factor of two)';
COMMENT ON COLUMN hx_stats.run_p99_ms IS '99th percentile of the run time in the last hour, milliseconds (histogram: within a factor of two)';
COMMENT ON COLUMN hx_stats.reused IS 'Submissions answered with a done task''s result over the last hour (hx_submit''s reuse_within)';

CREATE FUNCTION hx_rule_stats("from" timestamptz DEFAULT now() - interval '1 day',
							  "to" timestamptz DEFAULT now(), bucket text DEFAULT 'hour')
RETURNS TABLE (period timestamptz, rule_name text, route text, window_name text, tasks bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF bucket IS NULL OR bucket NOT IN ('minute', 'hour', 'day', 'week', 'month') THEN
		RAISE EXCEPTION 'unknown bucket "%"', bucket
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use minute, hour, day, week or month.';
	END IF;
	/*
	 * Tasks by submission time: those that ran at least once are in the
	 * ledger (first attempt), those waiting for their first run in hx_task.
	 */
	RETURN QUERY
	SELECT date_trunc(bucket, x.submitted_at), x.rule_name, x.route, x.window_name, count(*)
	  FROM (SELECT c.submitted_at, c.rule_name, c.route, c.window_name FROM hx_cost c
			 WHERE c.attempt = 1 AND c.correction_of IS NULL
			   AND c.submitted_at >= "from" AND c.submitted_at < "to"
			UNION ALL
			/* not booked yet: no attempt, the first one running, or lost (put back) */
			SELECT t.submitted_at, t.rule_name, t.route, t.window_name FROM hx_task t
			 WHERE t.status IN ('queued', 'running') AND t.attempts <= 1
			   AND t.submitted_at >= "from" AND t.submitted_at < "to") x
	 GROUP BY 1, 2, 3, 4
	 ORDER BY 1, 2, 3, 4;
END
$$;

COMMENT ON FUNCTION hx_rule_stats(timestamptz, timestamptz, text) IS
'How many tasks submitted in [from, to) each rule routed where, per bucket (minute, hour, day, week, month); counts tasks that ran (ledger) or still wait; tasks cancelled before their first run are not counted';

CREATE VIEW hx_window_history AS
SELECT r.id AS run_id, r.window_name, r.status, r.started_by, r.started_at, r.finished_at,
	   coalesce(r.finished_at, now()) - r.started_at AS duration,
	   r.expected_duration,
	   CASE WHEN extract(epoch FROM r.expected_duration) > 0
			THEN round((extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at)
						/ extract(epoch FROM r.expected_duration))::numeric, 2) END AS ratio,
	   r.processed, r.failed,
	   r.overran OR r.status = 'overran'
		 OR (r.expected_duration IS NOT NULL
			 AND coalesce(r.finished_at, now()) - r.started_at > r.expected_duration * 1.5 + interval '1 minute')
		 AS overran
  FROM hx_window_run r;

COMMENT ON VIEW hx_window_history IS
'Window runs with their duration against what the measured throughput predicted when they were asked for (hx_window_run.expected_duration); overran = stopped at max_duration, or took more than 1.5 times the prediction plus a minute';
COMMENT ON COLUMN hx_window_history.run_id IS 'The run (hx_window_run.id)';
COMMENT ON COLUMN hx_window_history.window_name IS 'The window';
COMMENT ON COLUMN hx_window_history.status IS 'starting, running, done, overran, yielded or failed';
COMMENT ON COLUMN hx_window_history.started_by IS 'manual, cron, adaptive or opportunistic';
COMMENT ON COLUMN hx_window_history.started_at IS 'When a batch worker first took the run (NULL while it waits for one)';
COMMENT ON COLUMN hx_window_history.finished_at IS 'When the run ended (NULL while it runs)';
COMMENT ON COLUMN hx_window_history.duration IS 'How long the run took, or has taken so far';
COMMENT ON COLUMN hx_window_history.expected_duration IS 'What the measured throughput predicted when the run was asked for (NULL without history)';
COMMENT ON COLUMN hx_window_history.ratio IS 'duration / expected_duration, to hundredths (NULL without a prediction)';
COMMENT ON COLUMN hx_window_history.processed IS 'Tasks done in the run, by its batch workers and by external executors';
COMMENT ON COLUMN hx_window_history.failed IS 'Failed attempts in the run, by its batch workers and by external executors';
COMMENT ON COLUMN hx_window_history.overran IS 'The run stopped at max_duration, or took more than 1.5 times the prediction plus a minute';

-- [storage]
CREATE TABLE hx_alert_state (
	problem			text NOT NULL,
	subject			text NOT NULL,
	severity		text NOT NULL,
	detail			text,
	first_seen		timestamptz NOT NULL DEFAULT now(),
	last_seen		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (problem, subject)
);
-- [/storage]

COMMENT ON TABLE hx_alert_state IS
'Problems of hx_health() already announced with NOTIFY hx_alert; a row goes when its problem clears, so a problem that comes back is announced again';
COMMENT ON COLUMN hx_alert_state.problem IS 'Problem, as hx_health() names it';
COMMENT ON COLUMN hx_alert_state.subject IS 'What it is about (task type, window, department, ...)';
COMMENT ON COLUMN hx_alert_state.severity IS 'Severity when announced';
COMMENT ON COLUMN hx_alert_state.detail IS 'Detail when announced';
COMMENT ON COLUMN hx_alert_state.first_seen IS 'When it was announced';
COMMENT ON COLUMN hx_alert_state.last_seen IS 'When the maintenance last saw it';

/*
 * What pg_cron recorded for the job that opens a window: whether the job
 * exists and is active, its latest finished run, and how many runs failed
 * since its last success.  pg_cron's tables are read with dynamic SQL, so
 * that the extension works without pg_cron (everything false or NULL then).
 * A run that could not even connect has no start or end time: the latest
 * run is the one with the highest runid.  cron.job_run_details is never
 * purged by pg_cron and has no index but its runid, and hx_health() runs
 * every few seconds: only its newest 10,000 rows are looked at.
 */
CREATE FUNCTION _hybridexec.hx_cron_job_state(window_name text,
											  OUT job_exists boolean, OUT job_active boolean,
											  OUT last_status text, OUT last_message text,
											  OUT last_at timestamptz, OUT failures bigint)
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	job bigint;
	r record;
BEGIN
	job_exists := false;
	failures := 0;
	IF NOT hx_cron_available() THEN
		RETURN;
	END IF;
	EXECUTE 'SELECT j.jobid, j.active FROM cron.job j WHERE j.jobname = $1
			  ORDER BY j.username = current_user DESC, j.jobid LIMIT 1'
	   INTO job, job_active USING hx_cron_job_name(window_name);
	IF job IS NULL THEN
		RETURN;
	END IF;
	job_exists := true;
	FOR r IN EXECUTE 'SELECT d.status, d.return_message, coalesce(d.end_time, d.start_time) AS at
						FROM (SELECT * FROM cron.job_run_details x ORDER BY x.runid DESC LIMIT 10000) d
					   WHERE d.jobid = $1 AND d.status IN (''succeeded'', ''failed'')
					   ORDER BY d.runid DESC'
			 USING job LOOP
		IF last_status IS NULL THEN
			last_status := r.status;
			last_message := r.return_message;
			last_at := r.at;
		END IF;
		EXIT WHEN r.status = 'succeeded';
		failures := failures + 1;
	END LOOP;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_job_state(text) IS
'What pg_cron recorded for the job of a window (read with dynamic SQL; nothing without pg_cron): whether the job exists and is active, the status, message and time of its latest finished run and how many runs failed since its last success (among the newest 10,000 rows of cron.job_run_details)';

/* the likely reason why pg_cron did not open a window, as a hint */
CREATE FUNCTION _hybridexec.hx_cron_hint(window_name text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	job text := hx_cron_job_name(window_name);
	st record;
BEGIN
	IF NOT hx_cron_available() THEN
		RETURN 'Install pg_cron, or open the window with hx_run_window().';
	END IF;
	SELECT * INTO st FROM hx_cron_job_state(window_name);
	IF NOT st.job_exists THEN
		RETURN format('pg_cron has no job for this window: SELECT hx_sync_cron() creates the job "%s" of every enabled window.', job);
	ELSIF NOT st.job_active THEN
		RETURN format('The pg_cron job "%s" is inactive: UPDATE cron.job SET active = true WHERE jobname = %L.', job, job);
	ELSIF st.last_status = 'failed' AND st.last_message ~* 'connection (failed|lost)' THEN
		RETURN format('pg_cron cannot connect to the server to run its job "%s" (its last run failed with "%s"): set cron.use_background_workers = on in postgresql.conf (and raise max_worker_processes to leave room for its workers) and restart; or let it connect locally: cron.host (e.g. the Unix socket directory), listen_addresses and pg_hba.conf.',
					  job, btrim(st.last_message));
	ELSIF st.last_status = 'failed' AND st.last_message ~* 'could not start background process|out of background worker slots' THEN
		RETURN format('pg_cron could not start a background worker for its job "%s": raise max_worker_processes (shared by pg_cron''s workers, hybridexec''s stream and batch workers and parallel query) and restart the server.',
					  job);
	ELSIF st.last_status = 'failed' THEN
		RETURN format('The last run of the pg_cron job "%s" failed: %s (cron.job_run_details lists its runs).',
					  job, left(btrim(split_part(st.last_message, E'\n', 1)), 300));
	END IF;
	RETURN format('pg_cron did not run its job "%s" when due: check that pg_cron is in shared_preload_libraries with cron.database_name = %L, and the job''s runs in cron.job_run_details.',
				  job, current_database());
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_hint(text) IS
'hx_health()''s hint for a window pg_cron did not open: the likely cause from pg_cron''s own records (no pg_cron, no or inactive job, pg_cron cannot connect, no worker slot, the run''s error, or the job not run at all)';

CREATE FUNCTION hx_health()
RETURNS TABLE (problem text, severity text, subject text, detail text, hint text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	backlog_age double precision := hx_setting_seconds('hybridexec.alert_backlog_age', 300);
	max_rate double precision := coalesce(current_setting('hybridexec.alert_failure_rate', true)::double precision, 0.1);
	quality_drop numeric := coalesce(nullif(current_setting('hybridexec.alert_quality_drop', true), '')::numeric, 0.1);
	want integer;
	have integer;
	tz text := hx_cron_time_zone();
	r record;
	st record;
	missed text[] := '{}';
BEGIN
	/* stream backlog: the oldest due stream task waits too long */
	FOR r IN SELECT t.task_type, count(*) AS n, now() - min(t.submitted_at) AS age
			   FROM hx_task t
			  WHERE t.status IN ('queued', 'failed') AND t.route = 'stream'
				AND t.run_after <= now()
			  GROUP BY t.task_type
			 HAVING min(t.submitted_at) < now() - make_interval(secs => backlog_age) LOOP
		problem := 'stream backlog'; severity := 'critical'; subject := r.task_type;
		detail := format('%s stream tasks of type %s wait, the oldest for %s', r.n, r.task_type,
						 date_trunc('second', r.age));
		hint := 'Add stream workers (hybridexec.stream_workers), check the handler''s speed in hx_stats, or route less to stream.';
		RETURN NEXT;
	END LOOP;

	/* windows that overran in the last day (latest run per window) */
	FOR r IN SELECT DISTINCT ON (h.window_name) h.*
			   FROM hx_window_history h
			  WHERE h.started_at > now() - interval '1 day'
			  ORDER BY h.window_name, h.run_id DESC LOOP
		CONTINUE WHEN NOT r.overran;
		problem := 'window overran'; severity := 'warning'; subject := r.window_name;
		detail := format('run %s (%s) took %s, expected %s', r.run_id, r.status,
						 date_trunc('second', r.duration), coalesce(date_trunc('second', r.expected_duration)::text, 'unknown'));
		hint := 'Raise max_duration or parallel of the window, or start it earlier (deadline).';
		RETURN NEXT;
	END LOOP;

	/* windows that did not run when scheduled while tasks waited for them */
	FOR r IN SELECT w.name, hx_cron_prev(w.schedule, now() - interval '2 minutes', tz) AS due
			   FROM hx_window w WHERE w.enabled LOOP
		CONTINUE WHEN r.due IS NULL OR r.due < now() - interval '1 day';
		IF NOT EXISTS (SELECT 1 FROM hx_window_run x WHERE x.window_name = r.name
						AND x.requested_at >= r.due - interval '1 minute')
		   AND EXISTS (SELECT 1 FROM hx_task t WHERE t.window_name = r.name AND t.route = 'batch'
						AND t.status IN ('queued', 'failed') AND t.submitted_at < r.due) THEN
			problem := 'window missed'; severity := 'critical'; subject := r.name;
			detail := format('window %s was due at %s and has not run; tasks are waiting for it', r.name, r.due);
			hint := hx_cron_hint(r.name);
			missed := missed || r.name;
			RETURN NEXT;
		END IF;
	END LOOP;

	/*
	 * pg_cron jobs of windows that fail (before a window is missed: no
	 * task may wait yet), or that are gone
	 */
	IF hx_cron_available() THEN
		FOR r IN SELECT w.name FROM hx_window w WHERE w.enabled AND w.name <> ALL (missed) ORDER BY w.name LOOP
			SELECT * INTO st FROM hx_cron_job_state(r.name);
			IF NOT st.job_exists THEN
				problem := 'cron job missing'; severity := 'warning'; subject := r.name;
				detail := format('window %s has no pg_cron job (%s): it opens only by hand or early', r.name,
								 hx_cron_job_name(r.name));
				hint := 'SELECT hx_sync_cron() creates the job of every enabled window.';
				RETURN NEXT;
			ELSIF st.last_status = 'failed'
				  AND (st.last_at IS NULL OR st.last_at > now() - interval '7 days') THEN
				problem := 'cron job failing'; severity := 'warning'; subject := r.name;
				detail := format('the last %s run(s) of pg_cron job "%s" failed%s: %s', st.failures,
								 hx_cron_job_name(r.name),
								 coalesce(' (the latest at ' || date_trunc('second', st.last_at) || ')', ''),
								 left(btrim(split_part(st.last_message, E'\n', 1)), 300));
				hint := hx_cron_hint(r.name);
				RETURN NEXT;
			END IF;
		END LOOP;
	END IF;

	/* tasks waiting for a window that no longer exists (one index probe per window name) */
	FOR r IN WITH RECURSIVE names (name) AS (
				SELECT min(t.window_name) FROM hx_task t
				 WHERE t.status IN ('queued', 'failed') AND t.route = 'batch'
				UNION ALL
				SELECT (SELECT min(t.window_name) FROM hx_task t
						 WHERE t.status IN ('queued', 'failed') AND t.route = 'batch'
						   AND t.window_name > names.name)
				  FROM names WHERE names.name IS NOT NULL)
			 SELECT n.name,
					(SELECT count(*) FROM hx_task t WHERE t.window_name = n.name AND t.route = 'batch'
						AND t.status IN ('queued', 'failed')) AS waiting
			   FROM names n
			  WHERE n.name IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hx_window w WHERE w.name = n.name) LOOP
		problem := 'window missing'; severity := 'critical'; subject := r.name;
		detail := format('%s task(s) wait for window %s, which does not exist', r.waiting, r.name);
		hint := format('Create the window again (INSERT INTO hx_window (name, schedule) VALUES (%L, ''0 2 * * *'')), or cancel the tasks with hx_cancel().', r.name);
		RETURN NEXT;
	END LOOP;

	/* failure rate and dead tasks, from the rolling statistics */
	FOR r IN SELECT s.task_type, sum(s.done) AS done, sum(s.failed) AS failed, sum(s.dead) AS dead
			   FROM hx_stat_minute s
			  WHERE s.minute >= date_trunc('minute', now()) - interval '15 minutes'
			  GROUP BY s.task_type LOOP
		IF r.failed + r.dead >= 5
		   AND (r.failed + r.dead)::double precision / (r.done + r.failed + r.dead) > max_rate THEN
			problem := 'failure rate'; severity := 'warning'; subject := r.task_type;
			detail := format('%s of %s attempts of type %s failed in the last 15 minutes',
							 r.failed + r.dead, r.done + r.failed + r.dead, r.task_type);
			hint := 'Read the errors: SELECT * FROM hx_error ORDER BY id DESC; the threshold is hybridexec.alert_failure_rate.';
			RETURN NEXT;
		END IF;
	END LOOP;
	FOR r IN SELECT s.task_type, sum(s.dead) AS dead FROM hx_stat_minute s
			  WHERE s.minute >= date_trunc('minute', now()) - interval '1 day'
			  GROUP BY s.task_type HAVING sum(s.dead) > 0 LOOP
		problem := 'dead tasks'; severity := 'warning'; subject := r.task_type;
		detail := format('%s tasks of type %s gave up in the last day', r.dead, r.task_type);
		hint := format('SELECT id, last_error FROM hx_dead WHERE task_type = %L; fix the cause, then SELECT hx_retry(%L, now() - interval ''1 day'').', r.task_type, r.task_type);
		RETURN NEXT;
	END LOOP;

	/* workers: none at all without the preload */
	IF NOT hx_preloaded() THEN
		problem := 'workers not running'; severity := 'critical'; subject := 'shared_preload_libraries';
		detail := 'hybridexec is not loaded via shared_preload_libraries: no stream worker, batch worker or scheduler runs on this server, hx_submit() and hx_run_window() fail, and no alert is sent';
		hint := 'Add hybridexec to shared_preload_libraries in postgresql.conf (keeping what is listed there, such as pg_cron) and restart the server.';
		RETURN NEXT;
	ELSIF coalesce(current_setting('hybridexec.database_name', true), '') NOT IN ('', current_database()) THEN
		problem := 'workers not running'; severity := 'warning'; subject := 'hybridexec.database_name';
		detail := format('hybridexec.database_name = %L pins the workers to that database: here stream tasks wait for external executors (hx_worker) and no window runs, retention or alerts happen',
						 current_setting('hybridexec.database_name'));
		hint := 'Set hybridexec.database_name = '''' (every database with the extension) and restart the server.';
		RETURN NEXT;
	ELSE
		want := coalesce(current_setting('hybridexec.stream_workers', true)::integer, 0);
		IF want > 0 AND coalesce((SELECT d.stream_share FROM hx_databases() d WHERE d.database = current_database()), 0) = 0 THEN
			problem := 'workers not running'; severity := 'critical'; subject := 'stream workers';
			detail := format('the %s stream workers (hybridexec.stream_workers) are shared by %s databases with the extension, and this one has no share yet',
							 want, (SELECT count(*) FROM hx_databases() d WHERE d.state = 'served'));
			hint := 'Raise hybridexec.stream_workers to at least the number of served databases in hx_databases() and restart; meanwhile stream tasks here wait for external executors.';
			RETURN NEXT;
		ELSE
			SELECT d.stream_share INTO want FROM hx_databases() d WHERE d.database = current_database();
			SELECT count(*) INTO have FROM pg_stat_activity a
			 WHERE a.backend_type = 'hybridexec stream worker' AND a.datname = current_database();
			IF have < want THEN
				problem := 'workers not running'; severity := 'critical'; subject := 'stream workers';
				detail := format('%s of this database''s %s stream workers are running', have, want);
				hint := 'Look in the server log for why they exit; check max_worker_processes.';
				RETURN NEXT;
			END IF;
		END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a
						WHERE a.backend_type = 'hybridexec scheduler' AND a.datname = current_database()) THEN
			problem := 'workers not running'; severity := 'critical'; subject := 'scheduler';
			detail := 'the hybridexec scheduler of this database is not running: no window maintenance, retention or alerts';
			hint := 'Look in the server log and in hx_databases(); the launcher starts a scheduler in every database with the extension.';
			RETURN NEXT;
		END IF;
		/* scheduler steps whose last run failed (the others keep running) */
		FOR r IN SELECT * FROM hx_scheduler_status() s WHERE s.last_failed IS NOT NULL LOOP
			problem := 'scheduler step failing'; severity := 'critical'; subject := r.step;
			detail := format('the scheduler step "%s" failed at %s: %s', r.step,
							 date_trunc('second', r.last_failed), r.last_error);
			hint := 'The server log has the whole error; the step is tried again when next due, the other steps run meanwhile.';
			RETURN NEXT;
		END LOOP;
	END IF;

	/* pg_cron */
	IF (EXISTS (SELECT 1 FROM hx_window w WHERE w.enabled) OR EXISTS (SELECT 1 FROM hx_schedule s WHERE s.enabled))
	   AND NOT hx_cron_available() THEN
		problem := 'pg_cron missing'; severity := 'warning'; subject := 'pg_cron';
		detail := 'windows or schedules are enabled but pg_cron is not installed in this database, so windows open only by hand or early and schedules never fire';
		hint := 'CREATE EXTENSION pg_cron (preloaded, cron.database_name = this database), then SELECT hx_sync_cron().';
		RETURN NEXT;
	END IF;

	/* budgets */
	FOR r IN SELECT * FROM hx_budget_status(now()) b WHERE b.exhausted LOOP
		problem := 'budget exhausted'; severity := 'warning'; subject := r.department;
		detail := format('department %s spent %s of its %s %s budget of %s', r.department, r.spent,
						 r.period, r.currency, r.amount);
		hint := 'Rules with budget_exhausted = true route its tasks now; raise hx_budget.amount to lift the limit.';
		RETURN NEXT;
	END LOOP;

	/* quality: the last hour's evaluations below the type's minimum, or fallen from the week's */
	FOR r IN SELECT q.*, y.min_quality
			   FROM hx_quality_levels(now()) q JOIN hx_type y ON y.task_type = q.task_type
			  WHERE q.hour_n > 0 LOOP
		IF r.hour_avg < r.min_quality THEN
			problem := 'quality below minimum'; severity := 'warning'; subject := r.task_type;
			detail := format('type %s: %s averaged %s over the last hour (%s evaluations), under its min_quality of %s',
							 r.task_type, r.metric, round(r.hour_avg, 3), r.hour_n, r.min_quality);
			hint := 'Compare routes and handlers in hx_stats (quality per type and route) and hx_rollout_report; hx_type.min_quality sets the bar.';
			RETURN NEXT;
		ELSIF r.week_n > r.hour_n AND r.hour_avg < r.week_avg - quality_drop THEN
			problem := 'quality drop'; severity := 'warning'; subject := r.task_type;
			detail := format('type %s: %s averaged %s over the last hour (%s evaluations) against %s over 7 days',
							 r.task_type, r.metric, round(r.hour_avg, 3), r.hour_n, round(r.week_avg, 3));
			hint := 'A change of handler, model or route in the last hour is the likely cause; the threshold is hybridexec.alert_quality_drop.';
			RETURN NEXT;
		END IF;
	END LOOP;

	/* freshness: rows of watched tables waiting longer than max_lag for their result */
	FOR r IN SELECT a.source, a.max_lag, count(*) AS n, now() - min(t.submitted_at) AS age
			   FROM hx_attachment a
			   JOIN hx_task_source s ON s.source = a.source
			   JOIN ONLY hx_task t ON t.id = s.task_id
			  WHERE a.max_lag IS NOT NULL AND t.status IN ('queued', 'running', 'failed')
				AND t.submitted_at < now() - a.max_lag
			  GROUP BY a.source, a.max_lag LOOP
		problem := 'watched rows waiting'; severity := 'warning'; subject := r.source::text;
		detail := format('%s rows of %s wait for their result longer than its max_lag of %s, the oldest for %s',
						 r.n, r.source, r.max_lag, date_trunc('second', r.age));
		hint := 'Their tasks wait for a window or for workers: see hx_stats; route the table''s type to stream, or raise hx_attachment.max_lag.';
		RETURN NEXT;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_health() IS
'One row per current problem with severity and hint: stream backlog older than hybridexec.alert_backlog_age, window overran or missed its schedule (the hint names the likely cause from pg_cron''s records), a window''s pg_cron job failing or missing, tasks waiting for a window that does not exist, failure rate above hybridexec.alert_failure_rate, dead tasks, workers not running (the library not preloaded, stream workers or scheduler down), scheduler steps failing, pg_cron missing, budget exhausted, a type''s quality over the last hour below hx_type.min_quality or fallen by more than hybridexec.alert_quality_drop from its 7-day average, rows of watched tables waiting longer than hx_attachment.max_lag';

CREATE FUNCTION _hybridexec.hx_alert() RETURNS integer
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	now_json jsonb;
	n integer;
BEGIN
	SELECT coalesce(jsonb_agg(to_jsonb(h)), '[]') INTO now_json FROM hx_health() h;
	/* cleared problems go, so that they are announced again if they return */
	DELETE FROM hx_alert_state s
	 WHERE NOT EXISTS (SELECT 1 FROM jsonb_to_recordset(now_json) AS h (problem text, subject text)
						WHERE h.problem = s.problem AND h.subject = s.subject);
	UPDATE hx_alert_state s SET last_seen = now()
	  FROM jsonb_to_recordset(now_json) AS h (problem text, subject text)
	 WHERE h.problem = s.problem AND h.subject = s.subject;
	WITH ins AS (
		INSERT INTO hx_alert_state AS s (problem, subject, severity, detail)
		SELECT DISTINCT ON (h.problem, h.subject) h.problem, h.subject, h.severity, h.detail
		  FROM jsonb_to_recordset(now_json) AS h (problem text, subject text, severity text, detail text)
		ON CONFLICT (problem, subject) DO NOTHING
		RETURNING s.problem, s.subject, s.severity, s.detail
	)
	SELECT count(hx_alert_send(jsonb_build_object('event', 'health', 'problem', ins.problem,
												 'severity', ins.severity, 'subject', ins.subject,
												 'detail', ins.detail))) INTO n
	  FROM ins;
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_alert() IS
'Announces new problems of hx_health() with NOTIFY hx_alert (JSON: event, problem, severity, subject, detail), each once until it clears; returns how many were sent';

/* ------------------------------------------------------------------------
 * Savings and advice
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_catch_all_window() RETURNS text
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT r.window_name FROM hx_rule r
	 WHERE r.enabled AND r.route = 'batch'
	 ORDER BY r.position DESC, r.name DESC LIMIT 1
$$;

COMMENT ON FUNCTION _hybridexec.hx_catch_all_window() IS
'The window of the last enabled batch rule (usually the catch-all, such as nightly): where "all batch" would send everything';

CREATE FUNCTION hx_savings("from" timestamptz DEFAULT now() - interval '1 day',
						   "to" timestamptz DEFAULT now(),
						   batch_window text DEFAULT NULL)
RETURNS TABLE (currency text, attempts bigint, actual_cost numeric, all_stream_cost numeric,
			   all_batch_cost numeric, saved numeric, saved_pct numeric,
			   background_saved_pct numeric,
			   interactive_tasks bigint, interactive_p50_s numeric,
			   interactive_p95_s numeric, all_batch_p50_s numeric,
			   all_batch_p95_s numeric, latency_cut_pct numeric,
			   fixed_stream_cost numeric, fixed_batch_cost numeric, total_cost numeric,
			   all_stream_total numeric, all_batch_total numeric, saved_with_fixed numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	w text := coalesce(batch_window, hx_catch_all_window());
	sched text;
	tz text := hx_cron_time_zone();
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR "from" > "to" THEN
		RAISE EXCEPTION 'the period must have a start not after its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_savings(now() - interval ''7 days'', now()).';
	END IF;
	SELECT x.schedule INTO sched FROM hx_window x WHERE x.name = w;
	IF batch_window IS NOT NULL AND sched IS NULL THEN
		RAISE EXCEPTION 'unknown window "%"', batch_window
			USING ERRCODE = 'undefined_object',
				  HINT = 'Pass one of the names in hx_window, or NULL for the catch-all rule''s window.';
	END IF;
	RETURN QUERY
	WITH c AS (
		SELECT * FROM hx_cost x WHERE x.at >= "from" AND x.at < "to"
	), money AS (
		/* rolled-up days too */
		SELECT b.currency, sum(b.attempts)::bigint AS attempts,
			   sum(b.cost) AS actual, sum(b.baseline_cost) AS stream, sum(b.batch_cost) AS batch,
			   sum(b.cost) FILTER (WHERE b.origin IS DISTINCT FROM 'user') AS bg_actual,
			   sum(b.baseline_cost) FILTER (WHERE b.origin IS DISTINCT FROM 'user') AS bg_stream
		  FROM hx_books("from", "to") b GROUP BY b.currency
	), lat AS (
		/* per-task latencies: the bookings still in the ledger */
		/* interactive tasks done in the period: what they saw, and the batch alternative */
		SELECT count(*) AS n,
			   percentile_cont(0.5) WITHIN GROUP (ORDER BY c.latency_seconds) AS p50,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY c.latency_seconds) AS p95,
			   percentile_cont(0.5) WITHIN GROUP (ORDER BY b.s) AS b50,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY b.s) AS b95
		  FROM c
		  CROSS JOIN LATERAL (SELECT extract(epoch FROM hx_cron_next(sched, c.submitted_at, tz) - c.submitted_at)::double precision
									 + c.wall_seconds AS s) b
		 WHERE c.origin = 'user' AND c.outcome = 'done' AND c.correction_of IS NULL
	)
	SELECT m.currency, m.attempts, m.actual, m.stream, m.batch, m.stream - m.actual,
		   CASE WHEN m.stream > 0 THEN round(100 * (m.stream - m.actual) / m.stream, 1) END,
		   CASE WHEN m.bg_stream > 0 THEN round(100 * (m.bg_stream - m.bg_actual) / m.bg_stream, 1) END,
		   /* seconds to the millisecond, not as float arithmetic leaves them */
		   lat.n, round(lat.p50::numeric, 3), round(lat.p95::numeric, 3),
		   round(lat.b50::numeric, 3), round(lat.b95::numeric, 3),
		   CASE WHEN lat.b50 > 0 THEN round((100 * (lat.b50 - lat.p50) / lat.b50)::numeric, 1) END,
		   /* the hybrid pays for both paths' capacity, each single-path policy for its own */
		   coalesce(fs.amount, 0), coalesce(fb.amount, 0),
		   m.actual + coalesce(fs.amount, 0) + coalesce(fb.amount, 0),
		   m.stream + coalesce(fs.amount, 0),
		   m.batch + coalesce(fb.amount, 0),
		   m.stream + coalesce(fs.amount, 0) - (m.actual + coalesce(fs.amount, 0) + coalesce(fb.amount, 0))
	  FROM money m CROSS JOIN lat
	  LEFT JOIN hx_fixed_costs("from", "to") fs ON fs.route = 'stream' AND fs.currency = m.currency
	  LEFT JOIN hx_fixed_costs("from", "to") fb ON fb.route = 'batch' AND fb.currency = m.currency
	 ORDER BY m.currency;
END
$$;

COMMENT ON FUNCTION hx_savings(timestamptz, timestamptz, text) IS
'For bookings in [from, to) (rolled-up days included when they start in it): actual cost against all-stream (the baselines) and all-batch (batch_cost), saved and saved % (overall and for non-user tasks); and, from the bookings still in hx_cost, the latency interactive (origin user) tasks saw, p50/p95 in seconds (to the millisecond), against all-batch: waiting for the next start of batch_window (NULL = the catch-all rule''s window) after submission, plus their run time; and with the fixed costs of the period (hx_fixed_costs): the hybrid''s total (bookings and both routes'' capacity), all-stream''s (stream capacity only), all-batch''s (batch capacity only) and what the hybrid saved against all-stream counting them';

CREATE FUNCTION hx_advise("from" timestamptz DEFAULT now() - interval '7 days',
						  "to" timestamptz DEFAULT now(),
						  urgent interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, currency text, tasks bigint, streamed_share numeric, urgent_share numeric,
			   sla_met_share numeric, p95_latency_s numeric, cost numeric,
			   cost_if_all_batch numeric, movable_per_day numeric,
			   break_even_share numeric, recommendation text,
			   fixed_cost numeric, batch_first_total numeric, all_stream_total numeric)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	days numeric;
	share numeric := coalesce(nullif(current_setting('hybridexec.break_even_share', true), '')::numeric, 0.2);
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
		RAISE EXCEPTION 'the period must have a start before its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_advise(now() - interval ''7 days'', now()).';
	END IF;
	days := greatest(extract(epoch FROM "to" - "from") / 86400, 1e-9);
	/* money is never added across currencies: one row per type and currency */
	RETURN QUERY
	WITH f AS (
		/* one row per task: its final booking in the period */
		SELECT c.*,
			   (c.origin = 'user' OR coalesce(least(c.sla, c.deadline - c.submitted_at), interval '100 years') < urgent)
				 AS needs_now
		  FROM hx_cost c
		 WHERE c.at >= "from" AND c.at < "to" AND c.outcome IN ('done', 'dead')
	), win AS (
		SELECT DISTINCT ON (f.task_type) f.task_type, f.window_name
		  FROM f WHERE f.window_name IS NOT NULL
		 GROUP BY f.task_type, f.window_name
		 ORDER BY f.task_type, count(*) DESC, f.window_name
	), agg AS (
		/* per type, and overall (task_type NULL) */
		SELECT f.task_type, f.currency, count(*) AS n,
			   count(*) FILTER (WHERE f.route = 'stream') AS streamed,
			   count(*) FILTER (WHERE f.needs_now) AS urgent_n,
			   count(*) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable,
			   count(*) FILTER (WHERE least(f.sla, f.deadline - f.submitted_at) IS NOT NULL) AS with_sla,
			   count(*) FILTER (WHERE f.latency_seconds <= extract(epoch FROM least(f.sla, f.deadline - f.submitted_at))) AS met,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY f.latency_seconds) AS p95,
			   sum(f.cost) AS cost,
			   sum(f.batch_cost) AS all_batch,
			   sum(f.baseline_cost) AS all_stream,
			   /* batch-first: what needs it streams, the rest takes the batch price */
			   sum(CASE WHEN f.needs_now THEN f.baseline_cost ELSE f.batch_cost END) AS batch_first,
			   sum(f.cost - f.batch_cost) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable_cost
		  FROM f GROUP BY GROUPING SETS ((f.task_type, f.currency), (f.currency))
	), fixed AS (
		SELECT x.currency,
			   sum(x.amount) FILTER (WHERE x.route = 'stream') AS fs,
			   sum(x.amount) FILTER (WHERE x.route = 'batch') AS fb
		  FROM hx_fixed_costs("from", "to") x GROUP BY x.currency
	)
	SELECT coalesce(a.task_type, '(all)'), a.currency, a.n,
		   round(a.streamed::numeric / a.n, 3),
		   round(a.urgent_n::numeric / a.n, 3),
		   CASE WHEN a.with_sla > 0 THEN round(a.met::numeric / a.with_sla, 3) END,
		   round(a.p95::numeric, 3), a.cost, a.all_batch,
		   round(coalesce(a.movable_cost, 0) / days, 4),
		   share,
		   CASE
			 WHEN a.task_type IS NULL THEN
				/* the policy for the whole: the real-time share against the break-even share, with the capacity */
				format('overall: %s%% of the work needed real time, %s the break-even share of %s%%: %s; counting fixed costs of %s, batch-first would have cost %s %s against %s for all-stream%s',
					   round(100.0 * a.urgent_n / a.n, 1),
					   CASE WHEN a.urgent_n::numeric / a.n < share THEN 'under' ELSE 'over' END,
					   round(100 * share, 1),
					   CASE WHEN a.urgent_n::numeric / a.n < share
							THEN 'run batch-first (stream only what needs it)'
							ELSE 'stream more (keep batch for what can wait)' END,
					   round(coalesce(fx.fs, 0) + coalesce(fx.fb, 0), 2),
					   round(a.batch_first + coalesce(fx.fs, 0) + coalesce(fx.fb, 0), 2), a.currency,
					   round(a.all_stream + coalesce(fx.fs, 0), 2),
					   CASE WHEN a.urgent_n::numeric / a.n < share
								 AND a.batch_first + coalesce(fx.fb, 0) > a.all_stream
							THEN ' - at this volume the batch capacity costs more than the batch price saves'
							WHEN a.urgent_n::numeric / a.n >= share
								 AND a.batch_first + coalesce(fx.fb, 0) < a.all_stream
							THEN ' - batch-first still costs less: stream more only where the latency is worth it'
							ELSE '' END)
			 WHEN a.movable > 0 AND coalesce(a.movable_cost, 0) > 0 THEN
				format('type %s: %s%% of streamed tasks (%s of %s) had SLAs of %s or more, or none, and no user waiting; routing them to window %s would save %s %s per day',
					   a.task_type, round(100.0 * a.movable / a.streamed), a.movable, a.streamed, urgent,
					   coalesce(win.window_name, hx_catch_all_window()), round(a.movable_cost / days, 2),
					   a.currency)
			 WHEN a.with_sla > 0 AND a.met::numeric / a.with_sla < 0.95 THEN
				format('type %s: only %s%% of tasks with an SLA met it; route more of them to stream, or add workers',
					   a.task_type, round(100.0 * a.met / a.with_sla))
			 WHEN a.urgent_n::numeric / a.n >= share AND a.streamed < a.urgent_n THEN
				format('type %s: %s%% of tasks needed real time, over the break-even share of %s%%, but %s%% streamed; stream more of them',
					   a.task_type, round(100.0 * a.urgent_n / a.n), round(100 * share),
					   round(100.0 * a.streamed / a.n))
			 ELSE
				format('type %s: routing matches what was needed (%s%% streamed, %s%% urgent); nothing to change',
					   a.task_type, round(100.0 * a.streamed / a.n), round(100.0 * a.urgent_n / a.n))
		   END,
		   CASE WHEN a.task_type IS NULL THEN coalesce(fx.fs, 0) + coalesce(fx.fb, 0) END,
		   CASE WHEN a.task_type IS NULL THEN a.batch_first + coalesce(fx.fs, 0) + coalesce(fx.fb, 0) END,
		   CASE WHEN a.task_type IS NULL THEN a.all_stream + coalesce(fx.fs, 0) END
	  FROM agg a LEFT JOIN win ON win.task_type = a.task_type
	  LEFT JOIN fixed fx ON fx.currency = a.currency
	 ORDER BY a.task_type IS NULL, a.task_type, a.currency;
END
$$;

COMMENT ON FUNCTION hx_advise(timestamptz, timestamptz, interval) IS
'Per task type and currency, and overall ((all)), from the tasks finished in [from, to): share streamed, share that needed real time (user origin or SLA/deadline under "urgent"), share of SLAs met, p95 latency (seconds, to the millisecond), cost against all-batch, what moving the streamed tasks nobody needed at once would save per day, hybridexec.break_even_share and a plain recommendation: overall, batch-first when the real-time share is under the break-even share and streaming more when over, with the fixed costs of the period (hx_fixed_costs) and the totals of batch-first (what needed it streamed, the rest at the batch price, both routes'' capacity) and of all-stream (stream capacity only)';

/* ------------------------------------------------------------------------
 * Percentage rollouts
 * ------------------------------------------------------------------------ */

/*
 * Per sampled rule (hx_rule.sample), the tasks submitted in the period
 * that it took against those that fell through it (its other conditions
 * held, the sample did not take them: hx_task.sample_rule names it, and
 * rule_name another rule).  Read as the caller: its own tasks and
 * bookings, under their row security.
 */
CREATE FUNCTION hx_rollout_report("from" timestamptz DEFAULT now() - interval '7 days',
								  "to" timestamptz DEFAULT now())
RETURNS TABLE (rule_name text, sample numeric, arm text, routes text, tasks bigint, done bigint,
			   share numeric, currency text, cost numeric, cost_per_done numeric,
			   latency_p50 interval, latency_p95 interval, failure_rate numeric)
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR "from" > "to" THEN
		RAISE EXCEPTION 'the period must have a start not after its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_rollout_report(now() - interval ''1 day'', now()).';
	END IF;
	RETURN QUERY
	WITH t AS (
		SELECT x.id, x.sample_rule, x.rule_name = x.sample_rule AS took, x.route, x.status,
			   x.finished_at - x.submitted_at AS latency
		  FROM hx_task x
		 WHERE x.sample_rule IS NOT NULL AND x.submitted_at >= "from" AND x.submitted_at < "to"
	), b AS (
		SELECT c.task_id, min(c.currency) AS currency, max(c.currency) AS currency_max,
			   sum(c.cost) AS cost,
			   count(*) FILTER (WHERE c.outcome IN ('done', 'failed', 'dead')) AS attempts,
			   count(*) FILTER (WHERE c.outcome IN ('failed', 'dead')) AS failed
		  FROM hx_cost c
		 WHERE c.task_id IN (SELECT t.id FROM t) AND c.at >= "from"
		 GROUP BY c.task_id
	), arms AS (
		SELECT t.sample_rule, t.took,
			   string_agg(DISTINCT t.route, ', ') AS routes,
			   count(*) AS tasks, count(*) FILTER (WHERE t.status = 'done') AS done,
			   CASE WHEN count(DISTINCT b.currency) > 1 OR bool_or(b.currency <> b.currency_max)
					THEN 'mixed' ELSE min(b.currency) END AS currency,
			   coalesce(sum(b.cost), 0) AS cost,
			   percentile_cont(0.5) WITHIN GROUP (ORDER BY t.latency) FILTER (WHERE t.status = 'done') AS p50,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY t.latency) FILTER (WHERE t.status = 'done') AS p95,
			   sum(b.attempts) AS attempts, sum(b.failed) AS failed
		  FROM t LEFT JOIN b ON b.task_id = t.id
		 GROUP BY t.sample_rule, t.took
	)
	SELECT a.sample_rule, r.sample, CASE WHEN a.took THEN 'sampled' ELSE 'fell through' END,
		   a.routes, a.tasks, a.done,
		   round(a.tasks::numeric / sum(a.tasks) OVER (PARTITION BY a.sample_rule), 4),
		   a.currency, a.cost,
		   CASE WHEN a.done > 0 THEN round(a.cost / a.done, 6) END,
		   a.p50, a.p95,
		   CASE WHEN a.attempts > 0 THEN round(a.failed::numeric / a.attempts, 4) END
	  FROM arms a LEFT JOIN hx_rule r ON r.name = a.sample_rule
	 ORDER BY a.sample_rule, a.took DESC;
END
$$;

COMMENT ON FUNCTION hx_rollout_report(timestamptz, timestamptz) IS
'Per sampled rule, tasks submitted in [from, to) that it took (arm sampled) against those that fell through it (its other conditions held, the sample did not take them): routes, tasks, done, share of the rule''s tasks, cost booked, cost per done task, latency p50/p95 of done tasks (submit to finish), failed attempts per attempt; the caller''s own tasks and bookings';

