/*
 * src/sql/cost.sql
 *
 * Part of the install script: cost accounting and observability.  The price
 * catalog itself (hx_price, hx_price_period, hx_price_rule) is in core.sql
 * because hx_classify() needs it; here are its validation, the hx_cost
 * ledger and the rolling statistics written by one statement trigger on
 * hx_task, budgets, reports, savings, advice, health alerts and retention.
 */

/* ------------------------------------------------------------------------
 * Histograms (src/cost.c): bigint[32], bucket 0 < 1 ms, bucket k holds
 * [2^(k-1), 2^k) ms
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_hist_bucket(ms double precision) RETURNS integer
AS 'MODULE_PATHNAME', 'hx_hist_bucket' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION hx_hist_bucket(double precision) IS
'Bucket (0-31) of a duration in milliseconds in the log-scale histograms: 0 below 1 ms, k for [2^(k-1), 2^k) ms';

CREATE FUNCTION hx_hist_accum(state bigint[], ms double precision) RETURNS bigint[]
AS 'MODULE_PATHNAME', 'hx_hist_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION hx_hist_accum(bigint[], double precision) IS
'Transition function of hx_hist(): counts one duration (milliseconds) into a histogram';

CREATE AGGREGATE hx_hist(double precision) (SFUNC = hx_hist_accum, STYPE = bigint[]);

COMMENT ON AGGREGATE hx_hist(double precision) IS
'Log-scale histogram (bigint[32]) of durations in milliseconds';

CREATE FUNCTION hx_hist_merge(a bigint[], b bigint[]) RETURNS bigint[]
AS 'MODULE_PATHNAME', 'hx_hist_merge' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION hx_hist_merge(bigint[], bigint[]) IS
'Element-wise sum of two histograms (NULL = empty)';

CREATE AGGREGATE hx_hist_sum(bigint[]) (SFUNC = hx_hist_merge, STYPE = bigint[]);

COMMENT ON AGGREGATE hx_hist_sum(bigint[]) IS 'Sum of histograms, such as the minutes of an hour';

CREATE FUNCTION hx_hist_percentile(hist bigint[], q double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'hx_hist_percentile' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION hx_hist_percentile(bigint[], double precision) IS
'The q-quantile of a histogram in milliseconds, interpolated inside its bucket (so within a factor 2 of the truth); NULL when empty';

/* ------------------------------------------------------------------------
 * Price catalog validation
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_price_check() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NEW.route IS NULL OR NEW.route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'hx_price: unknown route "%"', NEW.route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route must be ''stream'' or ''batch''.';
	END IF;
	IF NEW.unit_cost < 0 OR NEW.per_second < 0 THEN
		RAISE EXCEPTION 'hx_price: prices must not be negative (unit_cost %, per_second %)',
				NEW.unit_cost, NEW.per_second
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A correction of booked costs is a new hx_cost row (hx_cost_correct()), not a negative price.';
	END IF;
	IF NEW.batch_discount < 0 OR NEW.batch_discount > 1 THEN
		RAISE EXCEPTION 'hx_price: batch_discount must be between 0 and 1, not %', NEW.batch_discount
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'It is the share taken off: 0.5 = half price, 0 = no discount.';
	END IF;
	IF NEW.task_type IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = NEW.task_type) THEN
		RAISE EXCEPTION 'hx_price: unknown task type "%"', NEW.task_type
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Register the type with hx_register() first, or use NULL for the default price.';
	END IF;
	IF NEW.currency IS NULL OR NEW.currency !~ '^[A-Za-z]{3}$' THEN
		RAISE EXCEPTION 'hx_price: currency must be a three-letter code, not "%"', NEW.currency
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use an ISO 4217 code such as ''USD'' or ''EUR''.';
	END IF;
	NEW.currency := upper(NEW.currency);
	IF TG_OP = 'UPDATE' AND (OLD.unit_cost, OLD.per_second, OLD.batch_discount, OLD.valid_from, OLD.route,
							 OLD.task_type, OLD.currency)
			IS DISTINCT FROM (NEW.unit_cost, NEW.per_second, NEW.batch_discount, NEW.valid_from, NEW.route,
							  NEW.task_type, NEW.currency)
	   AND EXISTS (SELECT 1 FROM hx_cost c WHERE c.price_id = OLD.id) THEN
		RAISE EXCEPTION 'hx_price: the % price of % from % has priced booked attempts and cannot change',
				OLD.route, coalesce(OLD.task_type, 'every type'), OLD.valid_from
			USING ERRCODE = 'object_in_use',
				  DETAIL = 'Prices are effective-dated so that changing one never rewrites history.',
				  HINT = 'Insert a new row with a later valid_from instead.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION hx_price_check() IS 'Trigger: rejects invalid hx_price rows, and changes to prices that already priced booked attempts';

CREATE TRIGGER hx_price_check BEFORE INSERT OR UPDATE ON hx_price
	FOR EACH ROW EXECUTE FUNCTION hx_price_check();

CREATE FUNCTION hx_price_period_check() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NEW.multiplier IS NULL OR NEW.multiplier <= 0 THEN
		RAISE EXCEPTION 'hx_price_period "%": multiplier must be positive, not %', NEW.name, NEW.multiplier
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use 1.5 for a 50% peak surcharge, 0.8 for a 20% off-peak rebate.';
	END IF;
	IF NEW.route IS NOT NULL AND NEW.route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'hx_price_period "%": unknown route "%"', NEW.name, NEW.route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route must be ''stream'', ''batch'' or NULL for both.';
	END IF;
	PERFORM hx_check_time_condition(format('hx_price_period "%s"', NEW.name), NEW.local_from, NEW.local_until, NEW.days, NEW.time_zone);
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION hx_price_period_check() IS 'Trigger: rejects invalid hx_price_period rows with a clear error';

CREATE TRIGGER hx_price_period_check BEFORE INSERT OR UPDATE ON hx_price_period
	FOR EACH ROW EXECUTE FUNCTION hx_price_period_check();

/* ------------------------------------------------------------------------
 * The ledger
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_cost (
	id				bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at				timestamptz NOT NULL,
	task_id			bigint NOT NULL,
	attempt			integer NOT NULL,
	outcome			text NOT NULL,
	task_type		text NOT NULL,
	route			text NOT NULL,
	window_name		text,
	run_id			bigint,
	rule_name		text,
	department		text,
	origin			text,
	executor		text,
	submitted_at	timestamptz,
	sla				interval,
	deadline		timestamptz,
	wait_seconds	double precision,
	wall_seconds	double precision NOT NULL DEFAULT 0,
	latency_seconds	double precision,
	price_id		bigint,
	currency		text NOT NULL,
	cost			numeric NOT NULL,
	baseline_cost	numeric NOT NULL,
	batch_cost		numeric NOT NULL,
	reported		boolean NOT NULL DEFAULT false,
	correction_of	bigint,
	note			text,
	CONSTRAINT hx_cost_outcome_check CHECK (outcome IN ('done', 'failed', 'dead', 'correction'))
);

/* bookings arrive in time order: a BRIN index costs the ledger trigger next to nothing */
CREATE INDEX hx_cost_at_idx ON hx_cost USING brin (at) WITH (pages_per_range = 32);
CREATE INDEX hx_cost_correction_idx ON hx_cost (correction_of) WHERE correction_of IS NOT NULL;

COMMENT ON TABLE hx_cost IS
'The cost ledger: one row per finished attempt (done, failed or dead), written by a trigger on hx_task in the transaction that finishes the attempt; append-only, a correction is a new row (hx_cost_correct)';
COMMENT ON COLUMN hx_cost.id IS 'Booking number';
COMMENT ON COLUMN hx_cost.at IS 'When the attempt finished (the booking moment)';
COMMENT ON COLUMN hx_cost.task_id IS 'The task (hx_task.id; the task row may be gone after hybridexec.retention)';
COMMENT ON COLUMN hx_cost.attempt IS 'Which attempt of the task (1 = first)';
COMMENT ON COLUMN hx_cost.outcome IS 'done, failed (will be retried), dead (gave up) or correction';
COMMENT ON COLUMN hx_cost.task_type IS 'Task type';
COMMENT ON COLUMN hx_cost.route IS 'Path the attempt ran on: stream or batch';
COMMENT ON COLUMN hx_cost.window_name IS 'Window of a batch attempt';
COMMENT ON COLUMN hx_cost.run_id IS 'Window run of a batch attempt (hx_window_run.id)';
COMMENT ON COLUMN hx_cost.rule_name IS 'Rule that routed the task';
COMMENT ON COLUMN hx_cost.department IS 'Who pays (hx_task.department)';
COMMENT ON COLUMN hx_cost.origin IS 'Who asked (user = someone was waiting)';
COMMENT ON COLUMN hx_cost.executor IS 'External executor that ran the attempt (NULL = in-database worker)';
COMMENT ON COLUMN hx_cost.submitted_at IS 'When the task was submitted';
COMMENT ON COLUMN hx_cost.sla IS 'The task''s SLA';
COMMENT ON COLUMN hx_cost.deadline IS 'The task''s deadline';
COMMENT ON COLUMN hx_cost.wait_seconds IS 'Seconds from submission to the start of this attempt';
COMMENT ON COLUMN hx_cost.wall_seconds IS 'Run time of the attempt, wall clock; attempts one worker finished together (a batch chunk, a stream batch) share the span from the first start to the last result equally';
COMMENT ON COLUMN hx_cost.latency_seconds IS 'Seconds from submission to the result (done and dead attempts only)';
COMMENT ON COLUMN hx_cost.price_id IS 'The hx_price row that priced the attempt, as of the second it started (NULL: no price applied, or the executor reported the cost)';
COMMENT ON COLUMN hx_cost.currency IS 'Currency of the costs';
COMMENT ON COLUMN hx_cost.cost IS 'What the attempt cost: the executor''s reported cost, else (unit_cost + per_second * wall_seconds) * factor of hx_price_rule()';
COMMENT ON COLUMN hx_cost.baseline_cost IS 'What the same attempt would have cost on the stream path at that moment';
COMMENT ON COLUMN hx_cost.batch_cost IS 'What the same attempt would have cost on the batch path at that moment (discount included)';
COMMENT ON COLUMN hx_cost.reported IS 'The cost was reported by the executor (hx_task.reported_cost) rather than taken from the catalog';
COMMENT ON COLUMN hx_cost.correction_of IS 'For a correction: the booking (hx_cost.id) it corrects; its costs are the differences';
COMMENT ON COLUMN hx_cost.note IS 'Why a correction was made';

CREATE FUNCTION hx_cost_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	RAISE EXCEPTION 'hx_cost is append-only: % is not allowed', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'The ledger keeps the books; history is never rewritten.',
			  HINT = 'Book a correction with hx_cost_correct(id, cost, note) instead.';
END
$$;

COMMENT ON FUNCTION hx_cost_append_only() IS 'Trigger: rejects UPDATE, DELETE and TRUNCATE of the ledger';

CREATE TRIGGER hx_cost_append_only BEFORE UPDATE OR DELETE ON hx_cost
	FOR EACH ROW EXECUTE FUNCTION hx_cost_append_only();
CREATE TRIGGER hx_cost_no_truncate BEFORE TRUNCATE ON hx_cost
	FOR EACH STATEMENT EXECUTE FUNCTION hx_cost_append_only();

CREATE FUNCTION hx_cost_correct(id bigint, cost numeric, note text) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	c hx_cost;
	new_id bigint;
	total numeric;
BEGIN
	SELECT * INTO c FROM hx_cost x WHERE x.id = hx_cost_correct.id;
	IF NOT FOUND OR c.correction_of IS NOT NULL THEN
		RAISE EXCEPTION 'booking % does not exist or is itself a correction', id
			USING ERRCODE = 'undefined_object',
				  HINT = 'Pass the id of an attempt''s booking in hx_cost.';
	END IF;
	IF cost IS NULL OR cost < 0 OR note IS NULL OR note = '' THEN
		RAISE EXCEPTION 'a correction needs the right cost (not negative) and a note'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_cost_correct(42, 0.37, ''provider invoice 2026-07'').';
	END IF;
	/* what the booking stands at now, corrections included */
	total := c.cost + coalesce((SELECT sum(x.cost) FROM hx_cost x WHERE x.correction_of = c.id), 0);
	INSERT INTO hx_cost (at, task_id, attempt, outcome, task_type, route, window_name, run_id,
						 rule_name, department, origin, executor, currency, cost,
						 baseline_cost, batch_cost, reported, correction_of, note)
	VALUES (c.at, c.task_id, c.attempt, 'correction', c.task_type, c.route, c.window_name, c.run_id,
			c.rule_name, c.department, c.origin, c.executor, c.currency,
			hx_cost_correct.cost - total, 0, 0, true, c.id, hx_cost_correct.note)
	RETURNING hx_cost.id INTO new_id;
	/* budgets see corrections too (done here, not by a trigger, so that a restore does not count them twice) */
	IF c.department IS NOT NULL THEN
		INSERT INTO hx_cost_daily AS d (day, department, currency, shard, cost)
		VALUES ((c.at AT TIME ZONE hx_local_zone())::date, c.department, c.currency,
				pg_backend_pid() % 16, hx_cost_correct.cost - total)
		ON CONFLICT (department, day, currency, shard) DO UPDATE SET cost = d.cost + EXCLUDED.cost;
	END IF;
	RETURN new_id;
END
$$;

COMMENT ON FUNCTION hx_cost_correct(bigint, numeric, text) IS
'Books a correction: a new hx_cost row dated like the booking it corrects and carrying the difference, so that the booking and its corrections add up to the given cost in every report of that period; returns its id';

/* ------------------------------------------------------------------------
 * Rolling aggregates, written by the same trigger as the ledger.  Rows are
 * spread over 16 shards by backend pid so that concurrent workers do not
 * queue on one row.
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_stat_minute (
	minute			timestamptz NOT NULL,
	task_type		text NOT NULL,
	route			text NOT NULL,
	shard			smallint NOT NULL,
	done			bigint NOT NULL DEFAULT 0,
	failed			bigint NOT NULL DEFAULT 0,
	dead			bigint NOT NULL DEFAULT 0,
	wall_seconds	double precision NOT NULL DEFAULT 0,
	cost			numeric NOT NULL DEFAULT 0,
	wait_hist		bigint[] NOT NULL,
	run_hist		bigint[] NOT NULL,
	PRIMARY KEY (minute, task_type, route, shard)
);

COMMENT ON TABLE hx_stat_minute IS
'Per-minute rolling statistics of finished attempts per task type and route (histograms: see hx_hist_bucket); what hx_stats and hx_health read instead of task history';
COMMENT ON COLUMN hx_stat_minute.minute IS 'The minute the attempts finished in';
COMMENT ON COLUMN hx_stat_minute.task_type IS 'Task type';
COMMENT ON COLUMN hx_stat_minute.route IS 'stream or batch';
COMMENT ON COLUMN hx_stat_minute.shard IS 'Writer shard (backend pid modulo 16); sum over shards';
COMMENT ON COLUMN hx_stat_minute.done IS 'Attempts that succeeded';
COMMENT ON COLUMN hx_stat_minute.failed IS 'Attempts that failed and will be retried';
COMMENT ON COLUMN hx_stat_minute.dead IS 'Attempts that failed for the last time';
COMMENT ON COLUMN hx_stat_minute.wall_seconds IS 'Run time of the attempts';
COMMENT ON COLUMN hx_stat_minute.cost IS 'Their cost';
COMMENT ON COLUMN hx_stat_minute.wait_hist IS 'Histogram of queue wait (submission to start of the attempt), milliseconds';
COMMENT ON COLUMN hx_stat_minute.run_hist IS 'Histogram of run time, milliseconds';

CREATE TABLE hx_cost_daily (
	day				date NOT NULL,
	department		text NOT NULL,
	currency		text NOT NULL,
	shard			smallint NOT NULL,
	cost			numeric NOT NULL DEFAULT 0,
	PRIMARY KEY (department, day, currency, shard)
);

COMMENT ON TABLE hx_cost_daily IS
'Cost per department and day (in hybridexec.time_zone), kept by the ledger trigger so that budget checks read a handful of rows';
COMMENT ON COLUMN hx_cost_daily.day IS 'Local day of the bookings';
COMMENT ON COLUMN hx_cost_daily.department IS 'Department (tasks without one are not counted here)';
COMMENT ON COLUMN hx_cost_daily.currency IS 'Currency';
COMMENT ON COLUMN hx_cost_daily.shard IS 'Writer shard (backend pid modulo 16); sum over shards';
COMMENT ON COLUMN hx_cost_daily.cost IS 'Cost booked, corrections included';

CREATE FUNCTION hx_local_zone() RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT coalesce(current_setting('hybridexec.time_zone', true), 'UTC')
$$;

COMMENT ON FUNCTION hx_local_zone() IS 'hybridexec.time_zone (UTC when the library is not loaded): the zone of days, weeks and months in the books';

/*
 * The ledger trigger: one INSERT ... SELECT per hx_task UPDATE statement.
 * A finished attempt is a row whose new status is done, failed or dead and
 * whose status or attempt count changed: stream workers (running -> ...),
 * batch chunk bookings (queued/failed -> done, many rows, one shared
 * started_at), lost workers (running -> dead) and external executors.
 */
CREATE FUNCTION hx_cost_book() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
	v_ts timestamptz := clock_timestamp();
	v_shard smallint := pg_backend_pid() % 16;
	v_zone text := hx_local_zone();
BEGIN
	/* most statements (claims, put-backs) finish nothing: leave at once */
	IF NOT EXISTS (SELECT 1 FROM hx_cost_new n WHERE n.status IN ('done', 'failed', 'dead')) THEN
		RETURN NULL;
	END IF;
	WITH fin AS (
		SELECT n.id, n.task_type, n.status, n.route, n.window_name, n.run_id, n.rule_name,
			   n.department, n.origin, n.executor, n.submitted_at, n.sla, n.deadline,
			   n.attempts, n.started_at, n.worker_pid, n.reported_cost,
			   o.status = 'running' AS was_running, coalesce(n.finished_at, v_ts) AS fin_at
		  FROM hx_cost_new n JOIN hx_cost_old o ON o.id = n.id
		 WHERE n.status IN ('done', 'failed', 'dead')
		   AND (o.status IS DISTINCT FROM n.status OR o.attempts IS DISTINCT FROM n.attempts)
	), timed AS (
		/*
		 * Attempts one worker finishes in one statement ran one after the
		 * other (a stream batch) or together (a batch chunk): they share
		 * the span from the first start to the last result equally.
		 */
		SELECT f.*,
			   CASE WHEN f.started_at IS NULL THEN 0
					ELSE greatest(extract(epoch FROM max(f.fin_at) OVER w - min(f.started_at) OVER w)::double precision, 0)
						 / count(*) OVER w
			   END AS wall,
			   date_trunc('second', coalesce(f.started_at, f.fin_at)) AS priced_at
		  FROM fin f
		WINDOW w AS (PARTITION BY f.worker_pid, f.run_id, f.was_running)
	), prices AS MATERIALIZED (
		/*
		 * One catalog lookup per type and second the attempts started in,
		 * and the costs once per run time: the attempts of one statement
		 * share their run time, so a 5,000-task chunk prices one row here.
		 */
		SELECT k.task_type, k.priced_at, k.wall,
			   s.price_id AS s_id, s.currency AS s_cur, b.price_id AS b_id, b.currency AS b_cur,
			   round(coalesce((s.unit_cost + s.per_second * k.wall::numeric) * s.factor, 0), 6) AS s_cost,
			   round(coalesce((b.unit_cost + b.per_second * k.wall::numeric) * b.factor, 0), 6) AS b_cost
		  FROM (SELECT DISTINCT t.task_type, t.priced_at, t.wall FROM timed t) k
		  LEFT JOIN LATERAL hx_price_rule(k.task_type, 'stream', k.priced_at) s ON true
		  LEFT JOIN LATERAL hx_price_rule(k.task_type, 'batch', k.priced_at) b ON true
	), priced AS (
		SELECT t.*, c.s_id, c.s_cur, c.b_id, c.b_cur, c.s_cost, c.b_cost
		  FROM timed t JOIN prices c
			ON c.task_type = t.task_type AND c.priced_at = t.priced_at
		   AND c.wall IS NOT DISTINCT FROM t.wall
	), ins AS (
		INSERT INTO hx_cost (at, task_id, attempt, outcome, task_type, route, window_name, run_id,
							 rule_name, department, origin, executor, submitted_at, sla, deadline,
							 wait_seconds, wall_seconds, latency_seconds, price_id, currency,
							 cost, baseline_cost, batch_cost, reported)
		SELECT p.fin_at, p.id, p.attempts, p.status, p.task_type, p.route, p.window_name, p.run_id,
			   p.rule_name, p.department, p.origin, p.executor, p.submitted_at, p.sla, p.deadline,
			   extract(epoch FROM coalesce(p.started_at, p.fin_at) - p.submitted_at)::double precision,
			   p.wall,
			   CASE WHEN p.status IN ('done', 'dead')
					THEN extract(epoch FROM p.fin_at - p.submitted_at)::double precision END,
			   CASE WHEN p.reported_cost IS NOT NULL THEN NULL
					WHEN p.route = 'stream' THEN p.s_id ELSE p.b_id END,
			   coalesce(CASE WHEN p.route = 'stream' THEN p.s_cur ELSE p.b_cur END,
						p.s_cur, current_setting('hybridexec.currency', true), 'USD'),
			   coalesce(p.reported_cost, CASE WHEN p.route = 'stream' THEN p.s_cost ELSE p.b_cost END),
			   CASE WHEN p.reported_cost IS NOT NULL AND p.route = 'stream' THEN p.reported_cost ELSE p.s_cost END,
			   CASE WHEN p.reported_cost IS NOT NULL AND p.route = 'batch' THEN p.reported_cost ELSE p.b_cost END,
			   p.reported_cost IS NOT NULL
		  FROM priced p
		RETURNING at, task_type, route, outcome, wait_seconds, wall_seconds, department, currency, cost
	), stat AS (
		INSERT INTO hx_stat_minute AS s (minute, task_type, route, shard, done, failed, dead,
										 wall_seconds, cost, wait_hist, run_hist)
		SELECT date_trunc('minute', i.at), i.task_type, i.route, v_shard,
			   count(*) FILTER (WHERE i.outcome = 'done'),
			   count(*) FILTER (WHERE i.outcome = 'failed'),
			   count(*) FILTER (WHERE i.outcome = 'dead'),
			   sum(i.wall_seconds), sum(i.cost),
			   hx_hist(i.wait_seconds * 1000), hx_hist(i.wall_seconds * 1000)
		  FROM ins i
		 GROUP BY 1, 2, 3
		 ORDER BY 1, 2, 3
		ON CONFLICT (minute, task_type, route, shard) DO UPDATE
		   SET done = s.done + EXCLUDED.done, failed = s.failed + EXCLUDED.failed,
			   dead = s.dead + EXCLUDED.dead, wall_seconds = s.wall_seconds + EXCLUDED.wall_seconds,
			   cost = s.cost + EXCLUDED.cost,
			   wait_hist = hx_hist_merge(s.wait_hist, EXCLUDED.wait_hist),
			   run_hist = hx_hist_merge(s.run_hist, EXCLUDED.run_hist)
	)
	INSERT INTO hx_cost_daily AS d (day, department, currency, shard, cost)
	SELECT (i.at AT TIME ZONE v_zone)::date, i.department, i.currency, v_shard, sum(i.cost)
	  FROM ins i
	 WHERE i.department IS NOT NULL
	 GROUP BY 1, 2, 3
	 ORDER BY 2, 1, 3
	ON CONFLICT (department, day, currency, shard) DO UPDATE SET cost = d.cost + EXCLUDED.cost;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION hx_cost_book() IS
'Statement trigger on hx_task: books every attempt the statement finished into hx_cost (catalog or reported cost, stream baseline, batch alternative) and adds it to hx_stat_minute and hx_cost_daily; SECURITY DEFINER, so whoever finishes a task (a worker, an executor''s role) needs no rights on the books';

CREATE TRIGGER hx_cost_book AFTER UPDATE ON hx_task
	REFERENCING OLD TABLE AS hx_cost_old NEW TABLE AS hx_cost_new
	FOR EACH STATEMENT EXECUTE FUNCTION hx_cost_book();

/* ------------------------------------------------------------------------
 * Attribution
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cost_report(group_by text DEFAULT 'department',
							   "from" timestamptz DEFAULT now() - interval '1 day',
							   "to" timestamptz DEFAULT now())
RETURNS TABLE ("group" text, currency text, tasks bigint, attempts bigint, cost numeric,
			   baseline_cost numeric, saved numeric, run_seconds double precision)
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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

/* ------------------------------------------------------------------------
 * Budgets
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_budget (
	department		text NOT NULL,
	period			text NOT NULL,
	amount			numeric NOT NULL,
	currency		text NOT NULL DEFAULT coalesce(current_setting('hybridexec.currency', true), 'USD'),
	description		text,
	PRIMARY KEY (department, period),
	CONSTRAINT hx_budget_period_check CHECK (period IN ('day', 'week', 'month')),
	CONSTRAINT hx_budget_amount_check CHECK (amount >= 0)
);

COMMENT ON TABLE hx_budget IS
'Spending limits per department and period (day, ISO week, month in hybridexec.time_zone); a rule with budget_exhausted = true matches tasks of a department past its limit';
COMMENT ON COLUMN hx_budget.department IS 'Department (hx_task.department)';
COMMENT ON COLUMN hx_budget.period IS 'day, week or month';
COMMENT ON COLUMN hx_budget.amount IS 'What the department may spend per period';
COMMENT ON COLUMN hx_budget.currency IS 'Currency of amount; only bookings in that currency count';
COMMENT ON COLUMN hx_budget.description IS 'Free text for humans';

CREATE FUNCTION hx_budget_check() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NEW.period IS NULL OR NEW.period NOT IN ('day', 'week', 'month') THEN
		RAISE EXCEPTION 'hx_budget: unknown period "%"', NEW.period
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'period must be ''day'', ''week'' or ''month''.';
	END IF;
	IF NEW.amount IS NULL OR NEW.amount < 0 THEN
		RAISE EXCEPTION 'hx_budget: amount must not be negative or NULL'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use 0 for a department that may not spend; delete the row for no limit.';
	END IF;
	IF NEW.department IS NULL OR NEW.department = '' THEN
		RAISE EXCEPTION 'hx_budget: department must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use the department name tasks are submitted with.';
	END IF;
	NEW.currency := upper(NEW.currency);
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION hx_budget_check() IS 'Trigger: rejects invalid hx_budget rows with a clear error';

CREATE TRIGGER hx_budget_check BEFORE INSERT OR UPDATE ON hx_budget
	FOR EACH ROW EXECUTE FUNCTION hx_budget_check();

CREATE FUNCTION hx_budget_status(at timestamptz DEFAULT now())
RETURNS TABLE (department text, period text, period_start date, currency text,
			   amount numeric, spent numeric, remaining numeric, exhausted boolean)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	SELECT b.department, b.period, s.start, b.currency, b.amount,
		   coalesce(sp.spent, 0), b.amount - coalesce(sp.spent, 0),
		   coalesce(sp.spent, 0) >= b.amount
	  FROM hx_budget b
	 CROSS JOIN LATERAL (SELECT date_trunc(b.period, (at AT TIME ZONE hx_local_zone()))::date AS start) s
	 CROSS JOIN LATERAL (SELECT sum(d.cost) AS spent FROM hx_cost_daily d
						  WHERE d.department = b.department AND d.currency = b.currency
							AND d.day >= s.start
							AND d.day <= (at AT TIME ZONE hx_local_zone())::date) sp
	 ORDER BY b.department, b.period
$$;

COMMENT ON FUNCTION hx_budget_status(timestamptz) IS
'Every budget as of "at": the current period''s start, amount, spent (from hx_cost_daily), remaining and whether it is exhausted';

CREATE FUNCTION hx_budget_exhausted(department text, at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
	SELECT coalesce(bool_or(s.exhausted), false)
	  FROM hx_budget_status(at) s
	 WHERE s.department = hx_budget_exhausted.department
$$;

COMMENT ON FUNCTION hx_budget_exhausted(text, timestamptz) IS
'True when one of the department''s budgets is used up at that moment: what a rule with budget_exhausted tests (SECURITY DEFINER: submitting roles need no rights on the books)';

/* ------------------------------------------------------------------------
 * Cost-benefit routing
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_latency_value(task_type text, payload jsonb) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
BEGIN
	IF payload ? 'latency_value' THEN
		BEGIN
			RETURN (payload->>'latency_value')::numeric;
		EXCEPTION WHEN invalid_text_representation THEN
			RAISE EXCEPTION 'payload latency_value must be a number, not "%"', payload->>'latency_value'
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'It is the value of an hour of latency, in the price currency, such as 2.5.';
		END;
	END IF;
	RETURN (SELECT y.latency_value FROM hx_type y WHERE y.task_type = hx_latency_value.task_type);
END
$$;

COMMENT ON FUNCTION hx_latency_value(text, jsonb) IS
'Value of an hour of latency for a task: the payload''s "latency_value" if given, else hx_type.latency_value (NULL = unknown)';

CREATE FUNCTION hx_batch_wait(at timestamptz DEFAULT now()) RETURNS interval
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	SELECT min(hx_cron_next(w.schedule, at, hx_cron_time_zone())) - at
	  FROM hx_window w WHERE w.enabled
$$;

COMMENT ON FUNCTION hx_batch_wait(timestamptz) IS
'How long a task submitted at "at" waits at least on the batch path: until the soonest scheduled start of an enabled window (NULL without windows)';

CREATE FUNCTION hx_worth_streaming(task_type text, payload jsonb DEFAULT '{}',
								   at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path FROM CURRENT AS $$
	SELECT coalesce(hx_latency_value(task_type, payload)
					* extract(epoch FROM hx_batch_wait(at))::numeric / 3600
					> coalesce(hx_price_at(task_type, 'stream', at), 0)
					  - coalesce(hx_price_at(task_type, 'batch', at), 0),
					false)
$$;

COMMENT ON FUNCTION hx_worth_streaming(text, jsonb, timestamptz) IS
'True when the latency streaming saves (hx_batch_wait) is worth more (hx_latency_value per hour) than the extra unit cost of streaming at that moment; false when no latency value is known: what a rule with worth_streaming tests';

/* ------------------------------------------------------------------------
 * Observability
 * ------------------------------------------------------------------------ */

CREATE INDEX hx_task_finished_idx ON hx_task (finished_at)
	WHERE status IN ('done', 'dead', 'cancelled');

CREATE FUNCTION hx_stats(span interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, route text, queued bigint, running bigint, failed bigint,
			   done bigint, dead bigint, oldest_queued interval,
			   per_min_1 double precision, per_min_5 double precision, per_min_15 double precision,
			   error_rate double precision,
			   wait_p50_ms double precision, wait_p95_ms double precision, wait_p99_ms double precision,
			   run_p50_ms double precision, run_p95_ms double precision, run_p99_ms double precision)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
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
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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

CREATE FUNCTION hx_setting_seconds(name text, fallback double precision) RETURNS double precision
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
DECLARE
	v text := current_setting(name, true);
BEGIN
	/* time settings read back with their unit ("5min", "7d"); bare numbers are seconds */
	IF v IS NULL OR v = '' THEN
		RETURN fallback;
	ELSIF v ~ '^-?[0-9.]+$' THEN
		RETURN v::double precision;
	END IF;
	RETURN extract(epoch FROM v::interval);
END
$$;

COMMENT ON FUNCTION hx_setting_seconds(text, double precision) IS
'A time setting such as hybridexec.retention in seconds (fallback when the library is not loaded)';

CREATE FUNCTION hx_health()
RETURNS TABLE (problem text, severity text, subject text, detail text, hint text)
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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
'One row per current problem with severity and hint: stream backlog older than hybridexec.alert_backlog_age, window overran or missed its schedule, failure rate above hybridexec.alert_failure_rate, dead tasks, workers not running, pg_cron missing, budget exhausted';

CREATE FUNCTION hx_alert() RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
	SELECT count(pg_notify('hx_alert', json_build_object('event', 'health', 'problem', ins.problem,
						   'severity', ins.severity, 'subject', ins.subject,
						   'detail', ins.detail)::text)) INTO n
	  FROM ins;
	RETURN n;
END
$$;

COMMENT ON FUNCTION hx_alert() IS
'Announces new problems of hx_health() with NOTIFY hx_alert (JSON: event, problem, severity, subject, detail), each once until it clears; returns how many were sent';

/* ------------------------------------------------------------------------
 * Savings and advice
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_catch_all_window() RETURNS text
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	SELECT r.window_name FROM hx_rule r
	 WHERE r.enabled AND r.route = 'batch'
	 ORDER BY r.position DESC, r.name DESC LIMIT 1
$$;

COMMENT ON FUNCTION hx_catch_all_window() IS
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
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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

/* ------------------------------------------------------------------------
 * pg_dump keeps the books and what the DBA entered (extension tables are
 * otherwise left out of dumps)
 * ------------------------------------------------------------------------ */

SELECT pg_catalog.pg_extension_config_dump('hx_cost', '');
SELECT pg_catalog.pg_extension_config_dump('hx_cost_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('hx_stat_minute', '');
SELECT pg_catalog.pg_extension_config_dump('hx_cost_daily', '');
SELECT pg_catalog.pg_extension_config_dump('hx_budget', '');
SELECT pg_catalog.pg_extension_config_dump('hx_price_period', '');
SELECT pg_catalog.pg_extension_config_dump('hx_price_period_id_seq', '');
