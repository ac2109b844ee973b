/*
 * src/sql/ledger.sql
 *
 * Part of the install script: the cost ledger (hx_cost), written by one
 * statement trigger on hx_task in the transaction that finishes each
 * attempt, the rolling statistics the same trigger keeps (hx_stat_minute,
 * hx_cost_daily, with the log-scale histograms of src/cost.c) and budgets.
 */

/* ------------------------------------------------------------------------
 * Histograms (src/cost.c): bigint[32], bucket 0 < 1 ms, bucket k holds
 * [2^(k-1), 2^k) ms
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_hist_bucket(ms double precision) RETURNS integer
AS 'MODULE_PATHNAME', 'hx_hist_bucket' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION _hybridexec.hx_hist_bucket(double precision) IS
'Bucket (0-31) of a duration in milliseconds in the log-scale histograms: 0 below 1 ms, k for [2^(k-1), 2^k) ms';

CREATE FUNCTION _hybridexec.hx_hist_accum(state bigint[], ms double precision) RETURNS bigint[]
AS 'MODULE_PATHNAME', 'hx_hist_accum' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION _hybridexec.hx_hist_accum(bigint[], double precision) IS
'Transition function of hx_hist(): counts one duration (milliseconds) into a histogram';

CREATE AGGREGATE _hybridexec.hx_hist(double precision) (SFUNC = _hybridexec.hx_hist_accum, STYPE = bigint[]);

COMMENT ON AGGREGATE _hybridexec.hx_hist(double precision) IS
'Log-scale histogram (bigint[32]) of durations in milliseconds';

CREATE FUNCTION _hybridexec.hx_hist_merge(a bigint[], b bigint[]) RETURNS bigint[]
AS 'MODULE_PATHNAME', 'hx_hist_merge' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION _hybridexec.hx_hist_merge(bigint[], bigint[]) IS
'Element-wise sum of two histograms (NULL = empty)';

CREATE AGGREGATE _hybridexec.hx_hist_sum(bigint[]) (SFUNC = _hybridexec.hx_hist_merge, STYPE = bigint[]);

COMMENT ON AGGREGATE _hybridexec.hx_hist_sum(bigint[]) IS 'Sum of histograms, such as the minutes of an hour';

CREATE FUNCTION _hybridexec.hx_hist_percentile(hist bigint[], q double precision)
RETURNS double precision
AS 'MODULE_PATHNAME', 'hx_hist_percentile' LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION _hybridexec.hx_hist_percentile(bigint[], double precision) IS
'The q-quantile of a histogram in milliseconds, interpolated inside its bucket (so within a factor 2 of the truth); NULL when empty';

/* ------------------------------------------------------------------------
 * The ledger
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_cost_attempt (
	id				bigint GENERATED ALWAYS AS IDENTITY CONSTRAINT hx_cost_pkey PRIMARY KEY,
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
	submitted_by	regrole,
	CONSTRAINT hx_cost_outcome_check CHECK (outcome IN ('done', 'failed', 'dead', 'correction', 'reused'))
);

/* bookings arrive in time order: a BRIN index costs the ledger trigger next to nothing */
CREATE INDEX hx_cost_at_idx ON hx_cost_attempt USING brin (at) WITH (pages_per_range = 32);
CREATE INDEX hx_cost_correction_idx ON hx_cost_attempt (correction_of) WHERE correction_of IS NOT NULL;
-- [/storage]

/*
 * A window run's chunk books its done tasks as few rows: one per group of
 * tasks that share every booking column but the task's own (id, attempt,
 * submission, deadline), which are arrays, ids from hx_cost_attempt's
 * sequence included.  5,000 bookings cost one row instead of 5,000 -
 * about 5 us a task less, the biggest share of a batch worker's time.
 * hx_cost unfolds them: nobody reads this table directly.
 */
-- [storage 0.4]
CREATE TABLE hx_cost_chunk (
	at				timestamptz NOT NULL,
	started_at		timestamptz NOT NULL,
	task_type		text NOT NULL,
	route			text NOT NULL,
	window_name		text,
	run_id			bigint,
	rule_name		text,
	department		text,
	origin			text,
	executor		text,
	submitted_by	regrole,
	sla				interval,
	wall_seconds	double precision NOT NULL,
	price_id		bigint,
	currency		text NOT NULL,
	cost			numeric NOT NULL,
	baseline_cost	numeric NOT NULL,
	batch_cost		numeric NOT NULL,
	ids				bigint[] NOT NULL,
	task_ids		bigint[] NOT NULL,
	attempts		integer[] NOT NULL,
	submitted_ats	timestamptz[] NOT NULL,
	deadlines		timestamptz[] NOT NULL,
	CONSTRAINT hx_cost_chunk_arrays_check CHECK (
		cardinality(ids) > 0 AND cardinality(task_ids) = cardinality(ids)
		AND cardinality(attempts) = cardinality(ids)
		AND cardinality(submitted_ats) = cardinality(ids)
		AND cardinality(deadlines) = cardinality(ids))
);

CREATE INDEX hx_cost_chunk_at_idx ON hx_cost_chunk USING brin (at) WITH (pages_per_range = 8);
-- [/storage]

COMMENT ON TABLE hx_cost_chunk IS
'Bookings of a window run''s chunk, done: one row per group of its tasks that share every booking column but their own (the arrays); read through hx_cost, which gives one row per booking';
COMMENT ON COLUMN hx_cost_chunk.at IS 'When the chunk finished (the booking moment of each of its tasks)';
COMMENT ON COLUMN hx_cost_chunk.started_at IS 'When the chunk started (the start of each task''s attempt)';
COMMENT ON COLUMN hx_cost_chunk.ids IS 'The bookings'' numbers (hx_cost.id), one per task';
COMMENT ON COLUMN hx_cost_chunk.task_ids IS 'The tasks (hx_task.id), in the order of ids';
COMMENT ON COLUMN hx_cost_chunk.attempts IS 'Which attempt of each task';
COMMENT ON COLUMN hx_cost_chunk.submitted_ats IS 'When each task was submitted';
COMMENT ON COLUMN hx_cost_chunk.deadlines IS 'Each task''s deadline';

/*
 * The bookings of one hx_cost_chunk row, one per task.  Plain SQL without
 * settings, so that the planner inlines it: a condition on hx_cost's "at"
 * reaches hx_cost_chunk's index.  (unnest with several arrays must be
 * written unqualified; pg_catalog comes first in any search_path.)
 * Executable by the roles that read hx_cost (a security_invoker view
 * calls it as its reader).
 */
CREATE FUNCTION _hybridexec.hx_cost_unfold(c hx_cost_chunk)
RETURNS TABLE (id bigint, at timestamptz, task_id bigint, attempt integer, outcome text,
			   task_type text, route text, window_name text, run_id bigint, rule_name text,
			   department text, origin text, executor text, submitted_at timestamptz,
			   sla interval, deadline timestamptz, wait_seconds double precision,
			   wall_seconds double precision, latency_seconds double precision, price_id bigint,
			   currency text, cost numeric, baseline_cost numeric, batch_cost numeric,
			   reported boolean, correction_of bigint, note text, submitted_by regrole)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
	SELECT u.id, c.at, u.task_id, u.attempt, 'done'::text, c.task_type, c.route, c.window_name,
		   c.run_id, c.rule_name, c.department, c.origin, c.executor, u.submitted_at, c.sla,
		   u.deadline, extract(epoch FROM c.started_at - u.submitted_at)::double precision,
		   c.wall_seconds, extract(epoch FROM c.at - u.submitted_at)::double precision,
		   c.price_id, c.currency, c.cost, c.baseline_cost, c.batch_cost, false, NULL::bigint,
		   NULL::text, c.submitted_by
	  FROM unnest(c.ids, c.task_ids, c.attempts, c.submitted_ats, c.deadlines)
		   AS u (id, task_id, attempt, submitted_at, deadline)
$$;

COMMENT ON FUNCTION _hybridexec.hx_cost_unfold(hx_cost_chunk) IS
'The bookings of one hx_cost_chunk row as hx_cost rows, one per task';

/* one row per booking, wherever it is kept */
CREATE VIEW hx_cost WITH (security_invoker = true) AS
SELECT a.id, a.at, a.task_id, a.attempt, a.outcome, a.task_type, a.route, a.window_name, a.run_id,
	   a.rule_name, a.department, a.origin, a.executor, a.submitted_at, a.sla, a.deadline,
	   a.wait_seconds, a.wall_seconds, a.latency_seconds, a.price_id, a.currency, a.cost,
	   a.baseline_cost, a.batch_cost, a.reported, a.correction_of, a.note, a.submitted_by
  FROM hx_cost_attempt a
UNION ALL
SELECT u.*
  FROM hx_cost_chunk c
 CROSS JOIN LATERAL _hybridexec.hx_cost_unfold(c) u;

COMMENT ON VIEW hx_cost IS
'The cost ledger: one row per finished attempt (done, failed or dead), booked by a trigger in the transaction that finishes the attempt; append-only, a correction is a new row (hx_cost_correct).  Single attempts are kept in hx_cost_attempt, a window run''s chunks in hx_cost_chunk; reads see the reader''s rows of both (security_invoker)';
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
COMMENT ON COLUMN hx_cost.submitted_by IS 'The role that submitted the task; it and its members see the booking';
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

COMMENT ON TABLE hx_cost_attempt IS
'Bookings of single attempts (stream, external executors, failures, corrections); read through hx_cost';

/* the tables' columns are the view's, and so are their comments */
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT r.relname, a.attname, pg_catalog.col_description('hx_cost'::regclass, v.attnum) AS note
			   FROM pg_class r
			   JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
			   JOIN pg_attribute v ON v.attrelid = 'hx_cost'::regclass AND v.attname = a.attname
			  WHERE r.oid IN ('hx_cost_attempt'::regclass, 'hx_cost_chunk'::regclass)
				AND (r.relname = 'hx_cost_attempt' OR pg_catalog.col_description(r.oid, a.attnum) IS NULL) LOOP
		EXECUTE format('COMMENT ON COLUMN %I.%I IS %L', c.relname, c.attname, c.note);
	END LOOP;
END
$$;

/*
 * Appended to by every finished attempt: vacuumed after 1% new rows, so
 * that the BRIN ranges on "at" the reports and the roll-up read through
 * are summarised while they are few.
 */
ALTER TABLE hx_cost_attempt SET (autovacuum_vacuum_insert_scale_factor = 0.01);
ALTER TABLE hx_cost_chunk SET (autovacuum_vacuum_insert_scale_factor = 0.01);
/* a chunk's arrays (40 kB each at 5,000 tasks) are stored as they are: compressing them cost a batch worker 10% */
ALTER TABLE hx_cost_chunk ALTER ids SET STORAGE EXTERNAL, ALTER task_ids SET STORAGE EXTERNAL,
	ALTER attempts SET STORAGE EXTERNAL, ALTER submitted_ats SET STORAGE EXTERNAL,
	ALTER deadlines SET STORAGE EXTERNAL;

CREATE FUNCTION _hybridexec.hx_cost_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	RAISE EXCEPTION 'hx_cost is append-only: % is not allowed', TG_OP
		USING ERRCODE = 'insufficient_privilege',
			  DETAIL = 'The ledger keeps the books; history is never rewritten.',
			  HINT = 'Book a correction with hx_cost_correct(id, cost, note) instead.';
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cost_append_only() IS 'Trigger: rejects UPDATE, DELETE and TRUNCATE of the ledger';

CREATE TRIGGER hx_cost_append_only BEFORE UPDATE OR DELETE ON hx_cost_attempt
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_cost_append_only();
CREATE TRIGGER hx_cost_no_truncate BEFORE TRUNCATE ON hx_cost_attempt
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cost_append_only();
CREATE TRIGGER hx_cost_append_only BEFORE UPDATE OR DELETE ON hx_cost_chunk
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_cost_append_only();
CREATE TRIGGER hx_cost_no_truncate BEFORE TRUNCATE ON hx_cost_chunk
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cost_append_only();
/* the view says so too, rather than that views cannot be updated */
CREATE TRIGGER hx_cost_append_only INSTEAD OF UPDATE OR DELETE ON hx_cost
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_cost_append_only();

CREATE FUNCTION hx_cost_correct(id bigint, cost numeric, note text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	c hx_cost;
	new_id bigint;
	total numeric;
BEGIN
	SELECT * INTO c FROM hx_cost x WHERE x.id = hx_cost_correct.id;
	IF NOT FOUND OR c.correction_of IS NOT NULL THEN
		RAISE EXCEPTION 'booking % does not exist or is itself a correction', id
			USING ERRCODE = 'undefined_object',
				  HINT = 'Pass the id of an attempt''s booking in hx_cost; bookings older than hybridexec.ledger_retention were rolled up into hx_cost_day and cannot be corrected one by one.';
	END IF;
	IF cost IS NULL OR cost < 0 OR note IS NULL OR note = '' THEN
		RAISE EXCEPTION 'a correction needs the right cost (not negative) and a note'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_cost_correct(42, 0.37, ''provider invoice 2026-07'').';
	END IF;
	/* what the booking stands at now, corrections included */
	total := c.cost + coalesce((SELECT sum(x.cost) FROM hx_cost x WHERE x.correction_of = c.id), 0);
	INSERT INTO hx_cost_attempt (at, task_id, attempt, outcome, task_type, route, window_name, run_id,
						 rule_name, department, origin, executor, submitted_by, currency, cost,
						 baseline_cost, batch_cost, reported, correction_of, note)
	VALUES (c.at, c.task_id, c.attempt, 'correction', c.task_type, c.route, c.window_name, c.run_id,
			c.rule_name, c.department, c.origin, c.executor, c.submitted_by, c.currency,
			hx_cost_correct.cost - total, 0, 0, true, c.id, hx_cost_correct.note)
	RETURNING hx_cost_attempt.id INTO new_id;
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
 * Roll-up: bookings older than hybridexec.ledger_retention leave hx_cost
 * for daily totals, so that the ledger stays bounded while every sum a
 * report gives for whole local days stays exact.
 * ------------------------------------------------------------------------ */

-- [storage 0.4]
CREATE TABLE hx_cost_day (
	day				date NOT NULL,
	task_type		text NOT NULL,
	route			text NOT NULL,
	window_name		text,
	rule_name		text,
	department		text,
	origin			text,
	executor		text,
	submitted_by	regrole,
	currency		text NOT NULL,
	outcome			text NOT NULL,
	bookings		bigint NOT NULL,
	tasks			bigint NOT NULL,
	wall_seconds	double precision NOT NULL,
	cost			numeric NOT NULL,
	baseline_cost	numeric NOT NULL,
	batch_cost		numeric NOT NULL,
	wait_hist		bigint[],
	latency_hist	bigint[],
	rolled_at		timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT hx_cost_day_outcome_check CHECK (outcome IN ('done', 'failed', 'dead', 'correction', 'reused'))
);

CREATE INDEX hx_cost_day_day_idx ON hx_cost_day (day);
-- [/storage]

COMMENT ON TABLE hx_cost_day IS
'Daily totals of the bookings older than hybridexec.ledger_retention, rolled out of hx_cost by the scheduler: one row per local day, task type, route, window, rule, department, origin, executor, submitter, currency and outcome (and roll-up pass); reports add them to the bookings still in hx_cost, exact for whole days';
COMMENT ON COLUMN hx_cost_day.day IS 'Local day (hybridexec.time_zone when rolled up) the bookings were made';
COMMENT ON COLUMN hx_cost_day.task_type IS 'Task type';
COMMENT ON COLUMN hx_cost_day.route IS 'stream or batch';
COMMENT ON COLUMN hx_cost_day.window_name IS 'Window of batch attempts';
COMMENT ON COLUMN hx_cost_day.rule_name IS 'Rule that routed the tasks';
COMMENT ON COLUMN hx_cost_day.department IS 'Who pays';
COMMENT ON COLUMN hx_cost_day.origin IS 'Who asked';
COMMENT ON COLUMN hx_cost_day.executor IS 'External executor (NULL = in-database workers)';
COMMENT ON COLUMN hx_cost_day.submitted_by IS 'The role that submitted the tasks; it and its members see the row';
COMMENT ON COLUMN hx_cost_day.currency IS 'Currency of the costs';
COMMENT ON COLUMN hx_cost_day.outcome IS 'done, failed, dead or correction, as in hx_cost';
COMMENT ON COLUMN hx_cost_day.bookings IS 'hx_cost rows rolled into this one';
COMMENT ON COLUMN hx_cost_day.tasks IS 'Distinct tasks among them (a task whose bookings of one day were rolled up in two passes counts in both)';
COMMENT ON COLUMN hx_cost_day.wall_seconds IS 'Sum of their run time';
COMMENT ON COLUMN hx_cost_day.cost IS 'Sum of their cost';
COMMENT ON COLUMN hx_cost_day.baseline_cost IS 'Sum of their stream baseline';
COMMENT ON COLUMN hx_cost_day.batch_cost IS 'Sum of their batch alternative';
COMMENT ON COLUMN hx_cost_day.wait_hist IS 'Histogram of their queue wait, milliseconds (hx_hist_bucket)';
COMMENT ON COLUMN hx_cost_day.latency_hist IS 'Histogram of their latency (done and dead), milliseconds';
COMMENT ON COLUMN hx_cost_day.rolled_at IS 'When the scheduler rolled them up';

/*
 * The bookings of whole local days older than hybridexec.ledger_retention,
 * up to hybridexec.retention_batch per call, leave hx_cost for hx_cost_day
 * in one statement; minutes of hx_stat_minute as old go too.  The rows
 * due are found through the BRIN index on "at", so a call with nothing
 * due reads only that small index.  Deleting from the append-only ledger
 * needs its guard trigger off: session_replication_role = replica for
 * this function alone (the scheduler runs it as a superuser; nobody else
 * may execute it).
 */
CREATE FUNCTION _hybridexec.hx_ledger_rollup_step() RETURNS integer
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp
SET session_replication_role = replica AS $$
DECLARE
	keep double precision := hx_setting_seconds('hybridexec.ledger_retention', 400 * 86400);
	batch integer := coalesce(current_setting('hybridexec.retention_batch', true)::integer, 10000);
	zone text := hx_local_zone();
	cutoff timestamptz;
	n integer;
BEGIN
	IF keep <= 0 THEN
		RETURN 0;
	END IF;
	cutoff := date_trunc('day', (now() - make_interval(secs => keep)) AT TIME ZONE zone) AT TIME ZONE zone;
	DELETE FROM hx_stat_minute s WHERE s.minute < cutoff;
	/*
	 * Chunk rows go whole (at least one, else as many as fit in the
	 * batch), then single bookings up to the rest of it, in hx_cost's
	 * shape (hx_cost_attempt's columns are the view's, in its order).
	 */
	WITH due_chunk AS (
		SELECT d.tid, d.ids
		  FROM (SELECT c.ctid AS tid, c.ids,
					   sum(cardinality(c.ids)) OVER (ORDER BY c.at, c.ctid) AS upto
				  FROM hx_cost_chunk c WHERE c.at < cutoff) d
		 WHERE d.upto <= batch OR d.upto = cardinality(d.ids)
	), gone_chunk AS (
		DELETE FROM hx_cost_chunk c WHERE c.ctid = ANY (ARRAY (SELECT tid FROM due_chunk))
		RETURNING c AS chunk
	), gone_attempt AS (
		DELETE FROM hx_cost_attempt c
		 WHERE c.id = ANY (ARRAY (SELECT x.id FROM hx_cost_attempt x WHERE x.at < cutoff
							LIMIT greatest(batch - (SELECT coalesce(sum(cardinality(ids)), 0) FROM due_chunk), 0)))
		RETURNING c.*
	), gone AS (
		SELECT a.* FROM gone_attempt a
		UNION ALL
		SELECT u.* FROM gone_chunk g CROSS JOIN LATERAL hx_cost_unfold(g.chunk) u
	), ins AS (
		INSERT INTO hx_cost_day (day, task_type, route, window_name, rule_name, department, origin,
								 executor, submitted_by, currency, outcome, bookings, tasks,
								 wall_seconds, cost, baseline_cost, batch_cost, wait_hist, latency_hist)
		SELECT (g.at AT TIME ZONE zone)::date, g.task_type, g.route, g.window_name, g.rule_name,
			   g.department, g.origin, g.executor, g.submitted_by, g.currency, g.outcome,
			   count(*), count(DISTINCT g.task_id), coalesce(sum(g.wall_seconds), 0),
			   sum(g.cost), sum(g.baseline_cost), sum(g.batch_cost),
			   hx_hist(g.wait_seconds * 1000), hx_hist(g.latency_seconds * 1000)
		  FROM gone g
		 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
	)
	SELECT count(*) INTO n FROM gone;
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_ledger_rollup_step() IS
'Rolls up to hybridexec.retention_batch bookings of whole local days older than hybridexec.ledger_retention out of hx_cost into hx_cost_day, and drops hx_stat_minute rows as old; returns how many bookings (the scheduler''s "ledger roll-up" step)';

/*
 * Every booking of [from, to) still in the ledger, and the rolled-up days
 * that start in it, in one shape for the reports: a rolled-up row stands
 * for "bookings" rows of hx_cost (attempts counts those that are neither
 * corrections nor reuses) and "tasks" tasks, dated at the start of its
 * local day.
 */
CREATE FUNCTION _hybridexec.hx_books("from" timestamptz, "to" timestamptz)
RETURNS TABLE (at timestamptz, rolled boolean, task_id bigint, task_type text, route text,
			   window_name text, rule_name text, department text, origin text, executor text,
			   currency text, outcome text, attempts bigint, tasks bigint, wall_seconds double precision,
			   cost numeric, baseline_cost numeric, batch_cost numeric)
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT c.at, false, c.task_id, c.task_type, c.route, c.window_name, c.rule_name, c.department,
		   c.origin, c.executor, c.currency, c.outcome,
		   (c.correction_of IS NULL AND c.outcome <> 'reused')::integer::bigint, 0::bigint,
		   c.wall_seconds, c.cost, c.baseline_cost, c.batch_cost
	  FROM hx_cost c
	 WHERE c.at >= "from" AND c.at < "to"
	UNION ALL
	SELECT s.at, true, NULL, d.task_type, d.route, d.window_name, d.rule_name, d.department,
		   d.origin, d.executor, d.currency, d.outcome,
		   CASE WHEN d.outcome IN ('correction', 'reused') THEN 0 ELSE d.bookings END,
		   CASE WHEN d.outcome IN ('correction', 'reused') THEN 0 ELSE d.tasks END,
		   d.wall_seconds, d.cost, d.baseline_cost, d.batch_cost
	  FROM hx_cost_day d
	 CROSS JOIN LATERAL (SELECT d.day::timestamp AT TIME ZONE hx_local_zone() AS at) s
	 WHERE d.day BETWEEN ("from" AT TIME ZONE hx_local_zone())::date - 1 AND ("to" AT TIME ZONE hx_local_zone())::date
	   AND s.at >= "from" AND s.at < "to"
$$;

COMMENT ON FUNCTION _hybridexec.hx_books(timestamptz, timestamptz) IS
'The bookings of [from, to) for the reports: those still in hx_cost, and the hx_cost_day rows of the local days that start in the period (dated at that start)';

/* ------------------------------------------------------------------------
 * Rolling aggregates, written by the same trigger as the ledger.  Rows are
 * spread over 16 shards by backend pid so that concurrent workers do not
 * queue on one row.
 * ------------------------------------------------------------------------ */

-- [storage]
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
	reused			bigint NOT NULL DEFAULT 0,
	PRIMARY KEY (minute, task_type, route, shard)
);
-- [/storage]

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
COMMENT ON COLUMN hx_stat_minute.reused IS 'Submissions answered with a done task''s result (hx_submit''s reuse_within)';

-- [storage]
CREATE TABLE hx_cost_daily (
	day				date NOT NULL,
	department		text NOT NULL,
	currency		text NOT NULL,
	shard			smallint NOT NULL,
	cost			numeric NOT NULL DEFAULT 0,
	PRIMARY KEY (department, day, currency, shard)
);
-- [/storage]

COMMENT ON TABLE hx_cost_daily IS
'Cost per department and day (in hybridexec.time_zone), kept by the ledger trigger so that budget checks read a handful of rows';
COMMENT ON COLUMN hx_cost_daily.day IS 'Local day of the bookings';
COMMENT ON COLUMN hx_cost_daily.department IS 'Department (tasks without one are not counted here)';
COMMENT ON COLUMN hx_cost_daily.currency IS 'Currency';
COMMENT ON COLUMN hx_cost_daily.shard IS 'Writer shard (backend pid modulo 16); sum over shards';
COMMENT ON COLUMN hx_cost_daily.cost IS 'Cost booked, corrections included';

/*
 * The ledger trigger (src/book.c): per hx_task UPDATE statement, one
 * INSERT of every attempt it finished, and one upsert per minute, type and
 * route and per department, day and currency.  A finished attempt is a
 * row whose new status is done, failed or dead and whose status or
 * attempt count changed: failed attempts, lost workers (running -> dead),
 * cancellations of running tasks and the like.  Done tasks leave hx_task
 * for hx_task_history: the statement that moves them (a stream worker's,
 * a window run's chunk, an external executor's completion) returns what
 * the ledger needs of them, and the same code books it (hx_book_moved),
 * with no trigger on hx_task_history.  Disabling this trigger stops every
 * booking, the moves' too.
 */
CREATE FUNCTION _hybridexec.hx_cost_book() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_cost_book'
LANGUAGE C SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp;

COMMENT ON FUNCTION _hybridexec.hx_cost_book() IS
'Statement trigger on hx_task: books every attempt the statement finished into hx_cost (catalog or reported cost, stream baseline, batch alternative) and adds it to hx_stat_minute and hx_cost_daily; SECURITY DEFINER, so whoever finishes a task (a worker, an executor''s role) needs no rights on the books; done tasks moving into hx_task_history are booked by the same code without it, unless it is disabled';

CREATE FUNCTION _hybridexec.hx_book_moving() RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_book_moving' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_book_moving() IS
'Whether this session is moving done tasks into hx_task_history: the inserts the write-back trigger of watched tables acts on (a restore loading the table writes nothing back)';

CREATE TRIGGER hx_cost_book AFTER UPDATE ON hx_task
	REFERENCING OLD TABLE AS hx_cost_old NEW TABLE AS hx_cost_new
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cost_book();

/* the trigger keeps the price rules it looked up; a change of prices tells every backend */
CREATE TRIGGER hx_price_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_price
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();
CREATE TRIGGER hx_price_period_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_price_period
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();

/* ------------------------------------------------------------------------
 * Fixed costs: capacity paid for whether it is used or not
 * ------------------------------------------------------------------------ */

-- [storage 0.4]
CREATE TABLE hx_fixed_cost (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	route			text NOT NULL,
	amount			numeric NOT NULL,
	period			interval NOT NULL,
	currency		text NOT NULL DEFAULT coalesce(current_setting('hybridexec.currency', true), 'USD'),
	valid_from		timestamptz NOT NULL DEFAULT now(),
	valid_until		timestamptz,
	description		text,
	CONSTRAINT hx_fixed_cost_route_check CHECK (route IN ('stream', 'batch')),
	CONSTRAINT hx_fixed_cost_amount_check CHECK (amount >= 0),
	CONSTRAINT hx_fixed_cost_period_check CHECK (period BETWEEN interval '1 hour' AND interval '1 year'),
	CONSTRAINT hx_fixed_cost_valid_check CHECK (valid_until > valid_from)
);
-- [/storage]

COMMENT ON TABLE hx_fixed_cost IS
'Costs that do not depend on the work done: always-on stream capacity (route stream: GPUs kept warm, a provisioned-throughput contract) or a batch cluster (route batch); hx_savings and hx_advise spread each over time (amount per period) and count it for the policies that need that route';
COMMENT ON COLUMN hx_fixed_cost.id IS 'Row number';
COMMENT ON COLUMN hx_fixed_cost.route IS 'The path the capacity serves: stream or batch';
COMMENT ON COLUMN hx_fixed_cost.amount IS 'What it costs per period, in currency';
COMMENT ON COLUMN hx_fixed_cost.period IS 'The period amount is for (1 hour to 1 year; a month counts as 30 days)';
COMMENT ON COLUMN hx_fixed_cost.currency IS 'Currency of amount (default hybridexec.currency); only reports in that currency count it';
COMMENT ON COLUMN hx_fixed_cost.valid_from IS 'From when it is paid';
COMMENT ON COLUMN hx_fixed_cost.valid_until IS 'Until when it is paid (NULL = still)';
COMMENT ON COLUMN hx_fixed_cost.description IS 'Free text for humans';

CREATE FUNCTION _hybridexec.hx_fixed_cost_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NEW.route IS NULL OR NEW.route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'hx_fixed_cost: unknown route "%"', NEW.route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route is ''stream'' (always-on capacity for urgent work) or ''batch'' (a cluster for the windows).';
	END IF;
	IF NEW.amount IS NULL OR NEW.amount < 0 THEN
		RAISE EXCEPTION 'hx_fixed_cost: amount must not be negative or NULL'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The cost per period, such as 2500 for a GPU node at 2,500 a month.';
	END IF;
	IF NEW.period IS NULL OR NEW.period < interval '1 hour' OR NEW.period > interval '1 year' THEN
		RAISE EXCEPTION 'hx_fixed_cost: period must be between 1 hour and 1 year, not %', coalesce(NEW.period::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The period the amount is for, such as ''1 month'' or ''1 day''.';
	END IF;
	IF NEW.valid_until <= NEW.valid_from THEN
		RAISE EXCEPTION 'hx_fixed_cost: valid_until (%) must be after valid_from (%)', NEW.valid_until, NEW.valid_from
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave valid_until NULL for a cost that is still paid.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_fixed_cost_check() IS
'Trigger: clear errors for a fixed cost with an unknown route, a negative amount, a period outside 1 hour to 1 year or an empty validity';

CREATE TRIGGER hx_fixed_cost_check BEFORE INSERT OR UPDATE ON hx_fixed_cost
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_fixed_cost_check();

/*
 * What the fixed costs come to in [from, to), per route and currency:
 * each row's amount per period, for the part of the span it is paid in.
 */
CREATE FUNCTION hx_fixed_costs("from" timestamptz DEFAULT now() - interval '30 days',
							   "to" timestamptz DEFAULT now())
RETURNS TABLE (route text, currency text, amount numeric)
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF "from" IS NULL OR "to" IS NULL OR "from" > "to" THEN
		RAISE EXCEPTION 'the period must have a start not after its end'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_fixed_costs(now() - interval ''30 days'', now()).';
	END IF;
	RETURN QUERY
	SELECT f.route, f.currency,
		   round(sum(f.amount * extract(epoch FROM least(coalesce(f.valid_until, 'infinity'), "to")
											  - greatest(f.valid_from, "from"))
					 / extract(epoch FROM f.period)), 6)
	  FROM hx_fixed_cost f
	 WHERE f.valid_from < "to" AND coalesce(f.valid_until, 'infinity') > "from"
	 GROUP BY f.route, f.currency
	 ORDER BY f.route, f.currency;
END
$$;

COMMENT ON FUNCTION hx_fixed_costs(timestamptz, timestamptz) IS
'The fixed costs (hx_fixed_cost) paid in [from, to), per route and currency: each row''s amount per period for the part of the span it covers';

/* ------------------------------------------------------------------------
 * Budgets
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_budget (
	department		text NOT NULL,
	period			text NOT NULL,
	amount			numeric NOT NULL,
	currency		text NOT NULL DEFAULT coalesce(current_setting('hybridexec.currency', true), 'USD'),
	description		text,
	PRIMARY KEY (department, period),
	CONSTRAINT hx_budget_period_check CHECK (period IN ('day', 'week', 'month')),
	CONSTRAINT hx_budget_department_check CHECK (length(department) <= 200),
	CONSTRAINT hx_budget_amount_check CHECK (amount >= 0)
);
-- [/storage]

COMMENT ON TABLE hx_budget IS
'Spending limits per department and period (day, ISO week, month in hybridexec.time_zone); a rule with budget_exhausted = true matches tasks of a department past its limit';
COMMENT ON COLUMN hx_budget.department IS 'Department (hx_task.department)';
COMMENT ON COLUMN hx_budget.period IS 'day, week or month';
COMMENT ON COLUMN hx_budget.amount IS 'What the department may spend per period';
COMMENT ON COLUMN hx_budget.currency IS 'Currency of amount; only bookings in that currency count';
COMMENT ON COLUMN hx_budget.description IS 'Free text for humans';

CREATE FUNCTION _hybridexec.hx_budget_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_budget_check() IS 'Trigger: rejects invalid hx_budget rows with a clear error';

CREATE TRIGGER hx_budget_check BEFORE INSERT OR UPDATE ON hx_budget
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_budget_check();

CREATE FUNCTION hx_budget_status(at timestamptz DEFAULT now())
RETURNS TABLE (department text, period text, period_start date, currency text,
			   amount numeric, spent numeric, remaining numeric, exhausted boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce(bool_or(s.exhausted), false)
	  FROM hx_budget_status(at) s
	 WHERE s.department = hx_budget_exhausted.department
$$;

COMMENT ON FUNCTION hx_budget_exhausted(text, timestamptz) IS
'True when one of the department''s budgets is used up at that moment: what a rule with budget_exhausted tests (SECURITY DEFINER: submitting roles need no rights on the books)';

