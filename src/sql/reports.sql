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
			   baseline_cost numeric, saved numeric, run_seconds double precision)
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
		WHEN 'hour' THEN $k$to_char(c.at AT TIME ZONE hx_local_zone(), 'YYYY-MM-DD HH24:00')$k$
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
		'SELECT %s, c.currency, count(DISTINCT c.task_id) FILTER (WHERE c.correction_of IS NULL),
				count(*) FILTER (WHERE c.correction_of IS NULL), sum(c.cost), sum(c.baseline_cost),
				sum(c.baseline_cost) - sum(c.cost),
				round(coalesce(sum(c.wall_seconds), 0)::numeric, 3)::double precision
		   FROM hx_cost c
		  WHERE c.at >= $1 AND c.at < $2
		  GROUP BY 1, 2
		  ORDER BY 1, 2', key)
	USING "from", "to";
END
$$;

COMMENT ON FUNCTION hx_cost_report(text, timestamptz, timestamptz) IS
'Costs booked in [from, to) grouped by department, task_type, route, window, executor, rule, day or hour (local days in hybridexec.time_zone): tasks, attempts, cost, stream baseline, saved against it, run seconds; one row per group and currency';

CREATE FUNCTION hx_stats(span interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, route text, queued bigint, running bigint, failed bigint,
			   done bigint, dead bigint, oldest_queued interval,
			   per_min_1 double precision, per_min_5 double precision, per_min_15 double precision,
			   error_rate double precision,
			   wait_p50_ms double precision, wait_p95_ms double precision, wait_p99_ms double precision,
			   run_p50_ms double precision, run_p95_ms double precision, run_p99_ms double precision)
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
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '1 minute') AS d1,
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '5 minutes') AS d5,
			   sum(s.done) FILTER (WHERE s.minute >= date_trunc('minute', now()) - interval '15 minutes') AS d15,
			   hx_hist_sum(s.wait_hist) AS wait_hist, hx_hist_sum(s.run_hist) AS run_hist
		  FROM hx_stat_minute s
		 WHERE s.minute >= date_trunc('minute', now() - span)
		 GROUP BY 1, 2
	)
	SELECT coalesce(l.task_type, m.task_type), coalesce(l.route, m.route),
		   coalesce(l.queued, 0)::bigint, coalesce(l.running, 0)::bigint, coalesce(l.failed, 0)::bigint,
		   coalesce(m.done, 0)::bigint, coalesce(m.dead, 0)::bigint,
		   now() - l.oldest,
		   /* the current minute is partial: rates over the whole minutes plus it */
		   coalesce(m.d1, 0)::double precision / (1 + extract(epoch FROM now() - date_trunc('minute', now())) / 60),
		   coalesce(m.d5, 0)::double precision / (5 + extract(epoch FROM now() - date_trunc('minute', now())) / 60),
		   coalesce(m.d15, 0)::double precision / (15 + extract(epoch FROM now() - date_trunc('minute', now())) / 60),
		   CASE WHEN m.done + m.failed_attempts + m.dead > 0
				THEN (m.failed_attempts + m.dead)::double precision / (m.done + m.failed_attempts + m.dead) END,
		   hx_hist_percentile(m.wait_hist, 0.5), hx_hist_percentile(m.wait_hist, 0.95),
		   hx_hist_percentile(m.wait_hist, 0.99),
		   hx_hist_percentile(m.run_hist, 0.5), hx_hist_percentile(m.run_hist, 0.95),
		   hx_hist_percentile(m.run_hist, 0.99)
	  FROM l FULL JOIN m ON m.task_type = l.task_type AND m.route = l.route
	 ORDER BY 1, 2
$$;

COMMENT ON FUNCTION hx_stats(interval) IS
'Per task type and route: unfinished tasks now (queued, running, failed = waiting for a retry) and the age of the oldest queued one; over the last span from hx_stat_minute: done and dead attempts, error rate, percentiles of queue wait and run time; done per minute over the last 1, 5 and 15 minutes';

CREATE VIEW hx_stats AS SELECT * FROM hx_stats('1 hour');

COMMENT ON VIEW hx_stats IS 'hx_stats() over the last hour';

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
'Window runs with their duration against what the measured throughput predicted when they started (hx_window_run.expected_duration); overran = stopped at max_duration, or took more than 1.5 times the prediction plus a minute';

CREATE TABLE hx_alert_state (
	problem			text NOT NULL,
	subject			text NOT NULL,
	severity		text NOT NULL,
	detail			text,
	first_seen		timestamptz NOT NULL DEFAULT now(),
	last_seen		timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (problem, subject)
);

COMMENT ON TABLE hx_alert_state IS
'Problems of hx_health() already announced with NOTIFY hx_alert; a row goes when its problem clears, so a problem that comes back is announced again';
COMMENT ON COLUMN hx_alert_state.problem IS 'Problem, as hx_health() names it';
COMMENT ON COLUMN hx_alert_state.subject IS 'What it is about (task type, window, department, ...)';
COMMENT ON COLUMN hx_alert_state.severity IS 'Severity when announced';
COMMENT ON COLUMN hx_alert_state.detail IS 'Detail when announced';
COMMENT ON COLUMN hx_alert_state.first_seen IS 'When it was announced';
COMMENT ON COLUMN hx_alert_state.last_seen IS 'When the maintenance last saw it';

CREATE FUNCTION hx_health()
RETURNS TABLE (problem text, severity text, subject text, detail text, hint text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	backlog_age double precision := hx_setting_seconds('hybridexec.alert_backlog_age', 300);
	max_rate double precision := coalesce(current_setting('hybridexec.alert_failure_rate', true)::double precision, 0.1);
	want integer;
	have integer;
	tz text := hx_cron_time_zone();
	r record;
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
			hint := CASE WHEN hx_cron_available() THEN 'Check cron.job_run_details for its job ' || hx_cron_job_name(r.name) || '.'
						 ELSE 'Install pg_cron, or open the window with hx_run_window().' END;
			RETURN NEXT;
		END IF;
	END LOOP;

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
		hint := 'SELECT id, last_error FROM hx_task WHERE status = ''dead''; fix the cause, then resubmit them.';
		RETURN NEXT;
	END LOOP;

	/* workers */
	IF current_database() = current_setting('hybridexec.database_name', true) THEN
		want := coalesce(current_setting('hybridexec.stream_workers', true)::integer, 0);
		SELECT count(*) INTO have FROM pg_stat_activity a
		 WHERE a.backend_type = 'hybridexec stream worker' AND a.datname = current_database();
		IF have < want THEN
			problem := 'workers not running'; severity := 'critical'; subject := 'stream workers';
			detail := format('%s of %s stream workers are running', have, want);
			hint := 'Look in the server log for why they exit; check max_worker_processes.';
			RETURN NEXT;
		END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.backend_type = 'hybridexec scheduler') THEN
			problem := 'workers not running'; severity := 'critical'; subject := 'scheduler';
			detail := 'the hybridexec scheduler is not running: no window maintenance, retention or alerts';
			hint := 'Put hybridexec in shared_preload_libraries and restart.';
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
	IF EXISTS (SELECT 1 FROM hx_window w WHERE w.enabled) AND NOT hx_cron_available() THEN
		problem := 'pg_cron missing'; severity := 'warning'; subject := 'pg_cron';
		detail := 'windows are enabled but pg_cron is not installed in this database, so they open only by hand or early';
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
END
$$;

COMMENT ON FUNCTION hx_health() IS
'One row per current problem with severity and hint: stream backlog older than hybridexec.alert_backlog_age, window overran or missed its schedule, tasks waiting for a window that does not exist, failure rate above hybridexec.alert_failure_rate, dead tasks, workers not running, scheduler steps failing, pg_cron missing, budget exhausted';

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
			   interactive_tasks bigint, interactive_p50_s double precision,
			   interactive_p95_s double precision, all_batch_p50_s double precision,
			   all_batch_p95_s double precision, latency_cut_pct numeric)
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
		SELECT c.currency, count(*) FILTER (WHERE c.correction_of IS NULL) AS attempts,
			   sum(c.cost) AS actual, sum(c.baseline_cost) AS stream, sum(c.batch_cost) AS batch,
			   sum(c.cost) FILTER (WHERE c.origin IS DISTINCT FROM 'user') AS bg_actual,
			   sum(c.baseline_cost) FILTER (WHERE c.origin IS DISTINCT FROM 'user') AS bg_stream
		  FROM c GROUP BY c.currency
	), lat AS (
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
		   lat.n, lat.p50, lat.p95, lat.b50, lat.b95,
		   CASE WHEN lat.b50 > 0 THEN round((100 * (lat.b50 - lat.p50) / lat.b50)::numeric, 1) END
	  FROM money m CROSS JOIN lat
	 ORDER BY m.currency;
END
$$;

COMMENT ON FUNCTION hx_savings(timestamptz, timestamptz, text) IS
'For bookings in [from, to): actual cost against all-stream (the baselines) and all-batch (batch_cost), saved and saved % (overall and for non-user tasks); and the latency interactive (origin user) tasks saw, p50/p95 in seconds, against all-batch: waiting for the next start of batch_window (NULL = the catch-all rule''s window) after submission, plus their run time';

CREATE FUNCTION hx_advise("from" timestamptz DEFAULT now() - interval '7 days',
						  "to" timestamptz DEFAULT now(),
						  urgent interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, tasks bigint, streamed_share numeric, urgent_share numeric,
			   sla_met_share numeric, p95_latency_s double precision, cost numeric,
			   cost_if_all_batch numeric, movable_per_day numeric,
			   break_even_share numeric, recommendation text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	days numeric;
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR "from" >= "to" THEN
		RAISE EXCEPTION 'the period must have a start before its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_advise(now() - interval ''7 days'', now()).';
	END IF;
	days := greatest(extract(epoch FROM "to" - "from") / 86400, 1e-9);
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
		SELECT f.task_type, count(*) AS n,
			   count(*) FILTER (WHERE f.route = 'stream') AS streamed,
			   count(*) FILTER (WHERE f.needs_now) AS urgent_n,
			   count(*) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable,
			   count(*) FILTER (WHERE least(f.sla, f.deadline - f.submitted_at) IS NOT NULL) AS with_sla,
			   count(*) FILTER (WHERE f.latency_seconds <= extract(epoch FROM least(f.sla, f.deadline - f.submitted_at))) AS met,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY f.latency_seconds) AS p95,
			   sum(f.cost) AS cost,
			   sum(f.batch_cost) AS all_batch,
			   sum(f.cost - f.batch_cost) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable_cost
		  FROM f GROUP BY f.task_type
	)
	SELECT a.task_type, a.n,
		   round(a.streamed::numeric / a.n, 3),
		   round(a.urgent_n::numeric / a.n, 3),
		   CASE WHEN a.with_sla > 0 THEN round(a.met::numeric / a.with_sla, 3) END,
		   a.p95, a.cost, a.all_batch,
		   round(coalesce(a.movable_cost, 0) / days, 4),
		   round(a.urgent_n::numeric / a.n, 3),
		   CASE
			 WHEN a.movable > 0 AND coalesce(a.movable_cost, 0) > 0 THEN
				format('type %s: %s%% of streamed tasks (%s of %s) had SLAs of %s or more, or none, and no user waiting; routing them to window %s would save %s per day',
					   a.task_type, round(100.0 * a.movable / a.streamed), a.movable, a.streamed, urgent,
					   coalesce(win.window_name, hx_catch_all_window()), round(a.movable_cost / days, 2))
			 WHEN a.with_sla > 0 AND a.met::numeric / a.with_sla < 0.95 THEN
				format('type %s: only %s%% of tasks with an SLA met it; route more of them to stream, or add workers',
					   a.task_type, round(100.0 * a.met / a.with_sla))
			 ELSE
				format('type %s: routing matches what was needed (%s%% streamed, %s%% urgent); nothing to change',
					   a.task_type, round(100.0 * a.streamed / a.n), round(100.0 * a.urgent_n / a.n))
		   END
	  FROM agg a LEFT JOIN win ON win.task_type = a.task_type
	 ORDER BY a.task_type;
END
$$;

COMMENT ON FUNCTION hx_advise(timestamptz, timestamptz, interval) IS
'Per task type, from the tasks finished in [from, to): share streamed, share that needed it (user origin or SLA/deadline under "urgent"), share of SLAs met, p95 latency, cost against all-batch, what moving the streamed tasks nobody needed at once would save per day, the break-even share of real-time work (= the urgent share: streaming more pays for latency nobody needed) and a plain recommendation';
