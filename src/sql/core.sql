/*
 * src/sql/core.sql
 *
 * First part of the install script (the Makefile concatenates the files
 * of SQL_PARTS into hybridexec--<version>.sql): task types, rules, windows,
 * prices, the task queue and its error log, and the functions users, DBAs
 * and the stream workers call.  Everything a DBA tunes is a plain table.
 */

\echo Use "CREATE EXTENSION hybridexec" to load this file. \quit

/* ------------------------------------------------------------------------
 * Task types
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_type (
	task_type		text PRIMARY KEY,
	handler			regprocedure,
	batch_handler	regprocedure,
	max_attempts	integer NOT NULL DEFAULT 3,
	timeout			interval NOT NULL DEFAULT '1 minute',
	run_as			regrole NOT NULL DEFAULT current_user::regrole,
	micro_batch_size integer,
	micro_batch_wait interval,
	description		text,
	latency_value	numeric,
	registered_at	timestamptz NOT NULL DEFAULT now(),
	CONSTRAINT hx_type_name_check CHECK (task_type <> '' AND length(task_type) <= 200),
	CONSTRAINT hx_type_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
	CONSTRAINT hx_type_timeout_check CHECK (timeout > interval '0'),
	CONSTRAINT hx_type_latency_value_check CHECK (latency_value >= 0),
	CONSTRAINT hx_type_micro_batch_check
		CHECK ((micro_batch_size IS NULL) = (micro_batch_wait IS NULL)
			   AND micro_batch_size BETWEEN 2 AND 1024
			   AND micro_batch_wait >= interval '0'
			   AND (micro_batch_size IS NULL OR batch_handler IS NOT NULL))
);

COMMENT ON TABLE hx_type IS
'Registered task types: the in-database handler (NULL = external executors), retry limit, timeout and the role handlers run as';
COMMENT ON COLUMN hx_type.task_type IS 'Name of the task type, as passed to hx_submit()';
COMMENT ON COLUMN hx_type.handler IS 'f(payload jsonb) RETURNS jsonb, called once per task by the workers; NULL = handled by external executors';
COMMENT ON COLUMN hx_type.batch_handler IS 'f(payloads jsonb[]) RETURNS jsonb[], one result per input in the same order; used by batch windows';
COMMENT ON COLUMN hx_type.max_attempts IS 'Attempts before a failing task becomes dead (the first run counts)';
COMMENT ON COLUMN hx_type.timeout IS 'A handler call running longer than this is cancelled and counts as a failed attempt';
COMMENT ON COLUMN hx_type.run_as IS 'Role whose privileges the handler runs with (the role that registered the type)';
COMMENT ON COLUMN hx_type.micro_batch_size IS 'Micro-batching: stream tasks of the type are buffered until this many are queued (or micro_batch_wait has passed) and handed to the batch handler together; NULL = off';
COMMENT ON COLUMN hx_type.micro_batch_wait IS 'Micro-batching: the longest a stream task of the type waits for others to join its batch';
COMMENT ON COLUMN hx_type.description IS 'Free text for humans';
COMMENT ON COLUMN hx_type.latency_value IS 'Value of an hour of latency of one task, in the price currency (a payload key "latency_value" overrides it); rules with worth_streaming compare it with the extra cost of streaming; NULL = unknown';
COMMENT ON COLUMN hx_type.registered_at IS 'When the type was last registered or changed by hx_register()';

/* ------------------------------------------------------------------------
 * Batch windows (executed by the batch-window machinery; rows already
 * route tasks in 0.1)
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_window (
	name			text PRIMARY KEY,
	schedule		text NOT NULL,
	max_duration	interval NOT NULL DEFAULT '1 hour',
	chunk_size		integer NOT NULL DEFAULT 1000,
	enabled			boolean NOT NULL DEFAULT true,
	deadline		time,
	margin			interval NOT NULL DEFAULT '15 minutes',
	time_zone		text,
	opportunistic	boolean NOT NULL DEFAULT false,
	parallel		integer NOT NULL DEFAULT 1,
	description		text,
	CONSTRAINT hx_window_name_check CHECK (name <> ''),
	CONSTRAINT hx_window_parallel_check CHECK (parallel BETWEEN 1 AND 32),
	CONSTRAINT hx_window_chunk_size_check CHECK (chunk_size > 0),
	CONSTRAINT hx_window_max_duration_check CHECK (max_duration > interval '0'),
	CONSTRAINT hx_window_margin_check CHECK (margin >= interval '0')
);

COMMENT ON TABLE hx_window IS 'Named batch windows: when batch-routed tasks run and in what chunks';
COMMENT ON COLUMN hx_window.name IS 'Window name, referenced by hx_rule.window_name';
COMMENT ON COLUMN hx_window.schedule IS 'When the window opens, in cron syntax (minute hour day-of-month month day-of-week)';
COMMENT ON COLUMN hx_window.max_duration IS 'A run stops at a chunk boundary once it has run this long';
COMMENT ON COLUMN hx_window.chunk_size IS 'Tasks per chunk; each chunk commits with its checkpoint';
COMMENT ON COLUMN hx_window.enabled IS 'A disabled window keeps its tasks queued';
COMMENT ON COLUMN hx_window.deadline IS 'Adaptive window: results are needed by this local time; the run starts early enough to finish margin before it (NULL = start on schedule)';
COMMENT ON COLUMN hx_window.margin IS 'Adaptive window: how long before the deadline the run should be finished';
COMMENT ON COLUMN hx_window.time_zone IS 'Time zone of deadline (NULL = hybridexec.time_zone); the schedule is in pg_cron''s time zone';
COMMENT ON COLUMN hx_window.parallel IS 'Batch workers a run of the window uses at once (each takes its own share of the tasks), at most hybridexec.batch_workers';
COMMENT ON COLUMN hx_window.opportunistic IS 'May start early while the stream path is idle, and yields at chunk boundaries as soon as stream work waits';
COMMENT ON COLUMN hx_window.description IS 'Free text for humans';

/* ------------------------------------------------------------------------
 * Classification rules
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_rule (
	name			text PRIMARY KEY,
	position		integer NOT NULL,
	enabled			boolean NOT NULL DEFAULT true,
	task_type		text,
	origin			text,
	department		text,
	min_sla			interval,
	max_sla			interval,
	payload_match	jsonb,
	local_from		time,
	local_until		time,
	days			integer[],
	time_zone		text,
	budget_exhausted boolean,
	worth_streaming	boolean,
	route			text NOT NULL,
	window_name		text REFERENCES hx_window (name) ON UPDATE CASCADE,
	description		text
);

CREATE INDEX hx_rule_position_idx ON hx_rule (position, name);

COMMENT ON TABLE hx_rule IS
'Classification rules: enabled rules are tried in (position, name) order, the first whose conditions all hold decides the route; NULL conditions match anything';
COMMENT ON COLUMN hx_rule.name IS 'Unique rule name, reported by hx_classify() and stored on each task';
COMMENT ON COLUMN hx_rule.position IS 'Lower positions are tried first';
COMMENT ON COLUMN hx_rule.enabled IS 'Disabled rules are skipped';
COMMENT ON COLUMN hx_rule.task_type IS 'Condition: the task type equals this';
COMMENT ON COLUMN hx_rule.origin IS 'Condition: the task origin equals this (user = someone is waiting)';
COMMENT ON COLUMN hx_rule.department IS 'Condition: the task department equals this';
COMMENT ON COLUMN hx_rule.min_sla IS 'Condition: the effective SLA is at least this (a task without SLA or deadline has an infinite SLA)';
COMMENT ON COLUMN hx_rule.max_sla IS 'Condition: the effective SLA is below this (tasks without SLA or deadline never match)';
COMMENT ON COLUMN hx_rule.payload_match IS 'Condition: the payload contains this JSON object (jsonb @>)';
COMMENT ON COLUMN hx_rule.local_from IS 'Condition with local_until: local time of day in [local_from, local_until); wraps past midnight when local_from > local_until';
COMMENT ON COLUMN hx_rule.local_until IS 'End (exclusive) of the local time-of-day condition';
COMMENT ON COLUMN hx_rule.days IS 'Condition: local ISO day of week (1 = Monday ... 7 = Sunday) is one of these';
COMMENT ON COLUMN hx_rule.time_zone IS 'Time zone of the time-of-day and day conditions; NULL = hybridexec.time_zone';
COMMENT ON COLUMN hx_rule.budget_exhausted IS 'Condition: true = one of the task department''s hx_budget rows is used up (hx_budget_exhausted), false = none is; NULL = do not look (the only conditions that cost a query)';
COMMENT ON COLUMN hx_rule.worth_streaming IS 'Condition: true = the latency streaming saves is worth more than its extra cost now (hx_worth_streaming), false = it is not; NULL = do not look';
COMMENT ON COLUMN hx_rule.route IS 'Decision: stream (run now) or batch (wait for window_name)';
COMMENT ON COLUMN hx_rule.window_name IS 'Decision for route batch: the hx_window the task waits for';
COMMENT ON COLUMN hx_rule.description IS 'Free text for humans';

/* ------------------------------------------------------------------------
 * Prices: the catalog behind hx_classify's est_cost and the hx_cost ledger
 * (cost.sql, which also validates the rows)
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_price (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	task_type		text,
	route			text NOT NULL,
	unit_cost		numeric NOT NULL DEFAULT 0,
	per_second		numeric NOT NULL DEFAULT 0,
	batch_discount	numeric NOT NULL DEFAULT 0.5,
	currency		text NOT NULL DEFAULT coalesce(current_setting('hybridexec.currency', true), 'USD'),
	valid_from		timestamptz NOT NULL DEFAULT '-infinity',
	description		text,
	CONSTRAINT hx_price_route_check CHECK (route IN ('stream', 'batch')),
	CONSTRAINT hx_price_cost_check CHECK (unit_cost >= 0 AND per_second >= 0),
	CONSTRAINT hx_price_discount_check CHECK (batch_discount >= 0 AND batch_discount <= 1),
	CONSTRAINT hx_price_unique UNIQUE NULLS NOT DISTINCT (task_type, route, valid_from)
);

COMMENT ON TABLE hx_price IS
'Price catalog, effective-dated: for a task type and route the row with the latest valid_from not after the moment applies; a batch attempt without a batch row is priced by the stream row less its batch_discount; rows for the task type beat the default rows (task_type NULL)';
COMMENT ON COLUMN hx_price.id IS 'Surrogate key; hx_cost.price_id names the row that priced an attempt';
COMMENT ON COLUMN hx_price.task_type IS 'Task type the price is for; NULL = default for every type';
COMMENT ON COLUMN hx_price.route IS 'stream or batch';
COMMENT ON COLUMN hx_price.unit_cost IS 'Cost per task attempt, in currency';
COMMENT ON COLUMN hx_price.per_second IS 'Cost per second of run time (wall clock), in currency';
COMMENT ON COLUMN hx_price.batch_discount IS 'Share taken off a stream row when it prices a batch attempt because no batch row applies (0.5 = half price, as LLM batch APIs give); ignored on batch rows';
COMMENT ON COLUMN hx_price.currency IS 'Currency of the prices (default hybridexec.currency)';
COMMENT ON COLUMN hx_price.valid_from IS 'The price applies from this moment on, until a newer row for the same type and route';
COMMENT ON COLUMN hx_price.description IS 'Free text for humans (where the price comes from)';

INSERT INTO hx_price (task_type, route, unit_cost, description) VALUES
	(NULL, 'stream', 1.0, 'default list price; batch attempts get batch_discount off it');

CREATE TABLE hx_price_period (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	name			text NOT NULL UNIQUE,
	task_type		text,
	route			text,
	days			integer[],
	local_from		time,
	local_until		time,
	time_zone		text,
	multiplier		numeric NOT NULL,
	CONSTRAINT hx_price_period_route_check CHECK (route IN ('stream', 'batch')),
	CONSTRAINT hx_price_period_multiplier_check CHECK (multiplier > 0)
);

COMMENT ON TABLE hx_price_period IS
'Peak and off-peak multipliers: every period whose conditions hold at the moment multiplies the catalog price (several periods multiply together); NULL conditions match anything';
COMMENT ON COLUMN hx_price_period.id IS 'Surrogate key';
COMMENT ON COLUMN hx_price_period.name IS 'Name, such as ''weekday-peak''';
COMMENT ON COLUMN hx_price_period.task_type IS 'Task type the period applies to; NULL = every type';
COMMENT ON COLUMN hx_price_period.route IS 'stream or batch; NULL = both';
COMMENT ON COLUMN hx_price_period.days IS 'ISO days of week (1 = Monday ... 7 = Sunday) the period applies on; NULL = every day';
COMMENT ON COLUMN hx_price_period.local_from IS 'Start of the time-of-day range, local time (inclusive); NULL together with local_until = all day';
COMMENT ON COLUMN hx_price_period.local_until IS 'End of the time-of-day range (exclusive); a range may wrap midnight (22:00 to 06:00)';
COMMENT ON COLUMN hx_price_period.time_zone IS 'Time zone of days and times; NULL = hybridexec.time_zone';
COMMENT ON COLUMN hx_price_period.multiplier IS 'Factor applied to the price (1.5 = peak surcharge, 0.8 = off-peak rebate)';

CREATE AGGREGATE hx_product(numeric) (SFUNC = numeric_mul, STYPE = numeric);

COMMENT ON AGGREGATE hx_product(numeric) IS 'Product of the values (NULL when there are none): how peak/off-peak multipliers combine';

/* ------------------------------------------------------------------------
 * The task queue
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_task (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	task_type		text NOT NULL,
	payload			jsonb NOT NULL DEFAULT '{}',
	status			text NOT NULL DEFAULT 'queued',
	route			text NOT NULL,
	window_name		text,
	rule_name		text,
	reason			text,
	origin			text NOT NULL DEFAULT 'background',
	priority		integer NOT NULL DEFAULT 0,
	sla				interval,
	deadline		timestamptz,
	department		text,
	dedupe_key		text,
	attempts		integer NOT NULL DEFAULT 0,
	result			jsonb,
	last_error		text,
	submitted_at	timestamptz NOT NULL DEFAULT now(),
	run_after		timestamptz NOT NULL DEFAULT now(),
	started_at		timestamptz,
	finished_at		timestamptz,
	worker_pid		integer,
	run_id			bigint,
	escalated_at	timestamptz,
	executor		text,
	lease_token		uuid,
	lease_expires_at timestamptz,
	reported_cost	numeric,
	CONSTRAINT hx_task_status_check
		CHECK (status IN ('queued', 'running', 'done', 'failed', 'dead', 'cancelled')),
	CONSTRAINT hx_task_route_check CHECK (route IN ('stream', 'batch')),
	CONSTRAINT hx_task_window_check CHECK ((route = 'batch') = (window_name IS NOT NULL))
);

/* what the stream workers claim, in claim order */
CREATE INDEX hx_task_stream_claim_idx ON hx_task (priority DESC, id)
	WHERE status IN ('queued', 'failed') AND route = 'stream';
/*
 * what a window will take, in run order: type, higher priority, earlier
 * deadline, age (as expressions, so that a run can continue after the last
 * task it took with one row comparison)
 */
CREATE INDEX hx_task_batch_idx ON hx_task (window_name, task_type, (-priority),
										   (coalesce(deadline, 'infinity'::timestamptz)), id)
	WHERE status IN ('queued', 'failed') AND route = 'batch';
/* what the crash sweep looks at */
CREATE INDEX hx_task_running_idx ON hx_task (worker_pid)
	WHERE status = 'running';
/* at most one unfinished task per (type, dedupe_key) */
CREATE UNIQUE INDEX hx_task_dedupe_idx ON hx_task (task_type, dedupe_key)
	WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed');

COMMENT ON TABLE hx_task IS 'The task queue: one row per submitted task, from queued to done, dead or cancelled';
COMMENT ON COLUMN hx_task.id IS 'Task id, returned by hx_submit()';
COMMENT ON COLUMN hx_task.task_type IS 'Registered task type (hx_type)';
COMMENT ON COLUMN hx_task.payload IS 'Input handed to the handler';
COMMENT ON COLUMN hx_task.status IS 'queued, running, done, failed (will be retried), dead (gave up) or cancelled';
COMMENT ON COLUMN hx_task.route IS 'stream (run now) or batch (wait for window_name)';
COMMENT ON COLUMN hx_task.window_name IS 'Batch window the task waits for (route batch only)';
COMMENT ON COLUMN hx_task.rule_name IS 'The hx_rule that decided the route';
COMMENT ON COLUMN hx_task.reason IS 'Why the rule matched, in words';
COMMENT ON COLUMN hx_task.origin IS 'Who asked: user (someone is waiting), background, ...';
COMMENT ON COLUMN hx_task.priority IS 'Higher runs first within a route';
COMMENT ON COLUMN hx_task.sla IS 'How soon the result is needed after submission; NULL = no SLA';
COMMENT ON COLUMN hx_task.deadline IS 'Absolute time the result is needed by; counts as an SLA of deadline - submission time';
COMMENT ON COLUMN hx_task.department IS 'Who pays';
COMMENT ON COLUMN hx_task.dedupe_key IS 'While a task with the same type and key is unfinished, hx_submit() returns its id instead of queuing another';
COMMENT ON COLUMN hx_task.attempts IS 'Attempts started so far (counted when a worker claims the task, before the handler runs)';
COMMENT ON COLUMN hx_task.result IS 'What the handler returned';
COMMENT ON COLUMN hx_task.last_error IS 'Message of the latest failed attempt (all attempts are in hx_error)';
COMMENT ON COLUMN hx_task.submitted_at IS 'When hx_submit() queued the task';
COMMENT ON COLUMN hx_task.run_after IS 'Not claimed before this moment (retry backoff)';
COMMENT ON COLUMN hx_task.started_at IS 'When the latest attempt was claimed';
COMMENT ON COLUMN hx_task.finished_at IS 'When the task became done, dead or cancelled';
COMMENT ON COLUMN hx_task.worker_pid IS 'Process id of the worker running or that last ran the task';
COMMENT ON COLUMN hx_task.run_id IS 'The window run (hx_window_run.id) that last took the task; a task that failed in a run waits for the next one';
COMMENT ON COLUMN hx_task.escalated_at IS 'When the task was moved from its window to the stream path because waiting would miss its deadline (reason says why)';
COMMENT ON COLUMN hx_task.executor IS 'External executor that holds (or last held) the task, as named in hx_claim()';
COMMENT ON COLUMN hx_task.lease_token IS 'Token of the current external lease (hx_claim); hx_complete/hx_fail/hx_heartbeat must present it';
COMMENT ON COLUMN hx_task.lease_expires_at IS 'When the current external lease expires and the task is reclaimed';
COMMENT ON COLUMN hx_task.reported_cost IS 'Cost of the latest attempt as reported by its executor (hx_complete/hx_fail); when set, the ledger books it instead of the catalog price';

CREATE TABLE hx_error (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	task_id			bigint NOT NULL,
	task_type		text NOT NULL,
	attempt			integer NOT NULL,
	at				timestamptz NOT NULL DEFAULT clock_timestamp(),
	sqlstate		text,
	message			text NOT NULL,
	detail			text,
	hint			text,
	context			text
);

CREATE INDEX hx_error_task_idx ON hx_error (task_id);

COMMENT ON TABLE hx_error IS 'One row per failed attempt: what the handler raised (or why the attempt was lost)';
COMMENT ON COLUMN hx_error.id IS 'Surrogate key';
COMMENT ON COLUMN hx_error.task_id IS 'The task (hx_task.id)';
COMMENT ON COLUMN hx_error.task_type IS 'Its type';
COMMENT ON COLUMN hx_error.attempt IS 'Which attempt failed (1 = first)';
COMMENT ON COLUMN hx_error.at IS 'When the failure was recorded';
COMMENT ON COLUMN hx_error.sqlstate IS 'SQLSTATE of the error (57014 for a timeout, XX000 for a lost worker)';
COMMENT ON COLUMN hx_error.message IS 'Primary error message';
COMMENT ON COLUMN hx_error.detail IS 'Error detail, if any';
COMMENT ON COLUMN hx_error.hint IS 'Error hint, if any';
COMMENT ON COLUMN hx_error.context IS 'Error context (where in the handler), if any';

/* ------------------------------------------------------------------------
 * Validation of DBA-edited rows
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_check_time_condition(label text, local_from time, local_until time,
										days integer[], time_zone text)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	d integer;
BEGIN
	IF (local_from IS NULL) <> (local_until IS NULL) THEN
		RAISE EXCEPTION '%: local_from and local_until go together', label
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set both (a time-of-day range) or neither.';
	END IF;
	IF local_from = local_until THEN
		RAISE EXCEPTION '%: empty time-of-day range', label
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'local_from must differ from local_until; leave both NULL to match any time.';
	END IF;
	IF days IS NOT NULL THEN
		IF cardinality(days) = 0 THEN
			RAISE EXCEPTION '%: days is empty', label
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use NULL to match every day.';
		END IF;
		FOREACH d IN ARRAY days LOOP
			IF d IS NULL OR d NOT BETWEEN 1 AND 7 THEN
				RAISE EXCEPTION '%: day % is not an ISO day of week', label, d
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Days are 1 (Monday) to 7 (Sunday).';
			END IF;
		END LOOP;
	END IF;
	IF time_zone IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = time_zone) THEN
		RAISE EXCEPTION '%: unknown time zone "%"', label, time_zone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name from pg_timezone_names, such as ''Europe/Paris''.';
	END IF;
END
$$;

COMMENT ON FUNCTION hx_check_time_condition(text, time, time, integer[], text) IS
'Validation shared by hx_rule and hx_price_period: a time-of-day range needs both ends and must not be empty, days are ISO days of week, the time zone must exist; raises a clear error naming label';

CREATE FUNCTION hx_rule_check() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NEW.name IS NULL OR NEW.name = '' THEN
		RAISE EXCEPTION 'hx_rule name must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the rule after what it does, such as ''fraud-streams''.';
	END IF;
	IF NEW.route IS NULL OR NEW.route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'hx_rule "%": unknown route "%"', NEW.name, NEW.route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route must be ''stream'' or ''batch''.';
	END IF;
	IF NEW.route = 'batch' AND NEW.window_name IS NULL THEN
		RAISE EXCEPTION 'hx_rule "%": route batch needs a window_name', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set window_name to one of the windows in hx_window.';
	END IF;
	IF NEW.route = 'batch'
	   AND NOT EXISTS (SELECT 1 FROM hx_window w WHERE w.name = NEW.window_name) THEN
		RAISE EXCEPTION 'hx_rule "%": unknown window "%"', NEW.name, NEW.window_name
			USING ERRCODE = 'foreign_key_violation',
				  HINT = 'Create the window in hx_window first, or use one of: '
				  || coalesce((SELECT string_agg(quote_literal(name), ', ' ORDER BY name) FROM hx_window), 'none') || '.';
	END IF;
	IF NEW.route = 'stream' AND NEW.window_name IS NOT NULL THEN
		RAISE EXCEPTION 'hx_rule "%": route stream takes no window_name', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set window_name to NULL, or route to ''batch''.';
	END IF;
	IF NEW.min_sla < interval '0' OR NEW.max_sla < interval '0' THEN
		RAISE EXCEPTION 'hx_rule "%": SLA bounds must not be negative', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'min_sla and max_sla are durations such as ''5 seconds''; leave them NULL for no bound.';
	END IF;
	IF NEW.min_sla >= NEW.max_sla THEN
		RAISE EXCEPTION 'hx_rule "%": min_sla % is not below max_sla %', NEW.name, NEW.min_sla, NEW.max_sla
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The rule matches SLAs in [min_sla, max_sla); make min_sla smaller than max_sla.';
	END IF;
	PERFORM hx_check_time_condition(format('hx_rule "%s"', NEW.name), NEW.local_from, NEW.local_until, NEW.days, NEW.time_zone);
	IF NEW.payload_match IS NOT NULL AND jsonb_typeof(NEW.payload_match) <> 'object' THEN
		RAISE EXCEPTION 'hx_rule "%": payload_match must be a JSON object', NEW.name
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example {"tier": "gold"} matches payloads containing that key and value.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION hx_rule_check() IS 'Trigger: rejects invalid hx_rule rows with a clear error';

CREATE TRIGGER hx_rule_check BEFORE INSERT OR UPDATE ON hx_rule
	FOR EACH ROW EXECUTE FUNCTION hx_rule_check();

/*
 * Backends cache rules and types; any change to those tables sends a
 * relcache invalidation at commit so every backend reloads them.
 */
CREATE FUNCTION hx_cache_invalidate() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_cache_invalidate' LANGUAGE C;

COMMENT ON FUNCTION hx_cache_invalidate() IS 'Trigger: tells every backend to reload its cached rules and task types';

CREATE TRIGGER hx_rule_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_rule
	FOR EACH STATEMENT EXECUTE FUNCTION hx_cache_invalidate();
CREATE TRIGGER hx_type_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_type
	FOR EACH STATEMENT EXECUTE FUNCTION hx_cache_invalidate();

/* ------------------------------------------------------------------------
 * Waking the workers
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_task_wake() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_task_wake' LANGUAGE C;

COMMENT ON FUNCTION hx_task_wake() IS
'Trigger: a queued stream task wakes an idle stream worker at commit and, when hybridexec.notify is on, sends one NOTIFY hx_stream per transaction';

CREATE TRIGGER hx_task_wake BEFORE INSERT OR UPDATE OF status, route ON hx_task
	FOR EACH ROW WHEN (NEW.route = 'stream' AND NEW.status = 'queued')
	EXECUTE FUNCTION hx_task_wake();

/* ------------------------------------------------------------------------
 * Registering task types
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_register(task_type text,
							handler regprocedure DEFAULT NULL,
							batch_handler regprocedure DEFAULT NULL,
							max_attempts integer DEFAULT 3,
							timeout interval DEFAULT '1 minute',
							description text DEFAULT NULL,
							micro_batch_size integer DEFAULT NULL,
							micro_batch_wait interval DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	p record;
BEGIN
	IF task_type IS NULL OR task_type = '' THEN
		RAISE EXCEPTION 'task type must not be NULL or empty'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a name such as ''summarize''.';
	END IF;
	IF max_attempts IS NULL OR max_attempts < 1 THEN
		RAISE EXCEPTION 'max_attempts must be at least 1, not %', coalesce(max_attempts::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use 1 for a task that is never retried.';
	END IF;
	IF timeout IS NULL OR timeout <= interval '0' THEN
		RAISE EXCEPTION 'timeout must be a positive interval, not %', coalesce(timeout::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example ''30 seconds''.';
	END IF;
	IF handler IS NOT NULL THEN
		SELECT pr.prorettype, pr.proretset, pr.prokind, pr.pronargs, pr.proargtypes
		  INTO p FROM pg_proc pr WHERE pr.oid = handler;
		IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
		   OR p.proargtypes[0] <> 'jsonb'::regtype OR p.prorettype <> 'jsonb'::regtype THEN
			RAISE EXCEPTION 'handler % has the wrong signature', handler
				USING ERRCODE = 'invalid_function_definition',
					  DETAIL = 'A handler takes the payload and returns the result: f(payload jsonb) RETURNS jsonb.',
					  HINT = 'Wrap the function in one with that signature.';
		END IF;
	END IF;
	IF batch_handler IS NOT NULL THEN
		SELECT pr.prorettype, pr.proretset, pr.prokind, pr.pronargs, pr.proargtypes
		  INTO p FROM pg_proc pr WHERE pr.oid = batch_handler;
		IF p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
		   OR p.proargtypes[0] <> 'jsonb[]'::regtype OR p.prorettype <> 'jsonb[]'::regtype THEN
			RAISE EXCEPTION 'batch handler % has the wrong signature', batch_handler
				USING ERRCODE = 'invalid_function_definition',
					  DETAIL = 'A batch handler takes all payloads and returns one result each, in order: f(payloads jsonb[]) RETURNS jsonb[].',
					  HINT = 'Wrap the function in one with that signature.';
		END IF;
	END IF;

	IF (micro_batch_size IS NULL) <> (micro_batch_wait IS NULL) THEN
		RAISE EXCEPTION 'micro_batch_size and micro_batch_wait go together'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example micro_batch_size => 32, micro_batch_wait => ''20 milliseconds''; leave both NULL to run stream tasks one by one.';
	END IF;
	IF micro_batch_size IS NOT NULL AND batch_handler IS NULL THEN
		RAISE EXCEPTION 'micro-batching needs a batch handler'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass batch_handler => a function f(jsonb[]) RETURNS jsonb[].';
	END IF;
	IF micro_batch_size NOT BETWEEN 2 AND 1024 OR micro_batch_wait < interval '0' THEN
		RAISE EXCEPTION 'micro_batch_size must be 2 to 1024 and micro_batch_wait not negative, not % and %',
				micro_batch_size, micro_batch_wait
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A micro-batch holds at most hybridexec.stream_batch_size tasks per call anyway.';
	END IF;

	INSERT INTO hx_type AS t (task_type, handler, batch_handler, max_attempts, timeout, run_as,
							  description, micro_batch_size, micro_batch_wait)
	VALUES (hx_register.task_type, hx_register.handler, hx_register.batch_handler,
			hx_register.max_attempts, hx_register.timeout, current_user::regrole, hx_register.description,
			hx_register.micro_batch_size, hx_register.micro_batch_wait)
	ON CONFLICT ON CONSTRAINT hx_type_pkey DO UPDATE
	   SET handler = EXCLUDED.handler,
		   batch_handler = EXCLUDED.batch_handler,
		   max_attempts = EXCLUDED.max_attempts,
		   timeout = EXCLUDED.timeout,
		   run_as = EXCLUDED.run_as,
		   micro_batch_size = EXCLUDED.micro_batch_size,
		   micro_batch_wait = EXCLUDED.micro_batch_wait,
		   description = coalesce(EXCLUDED.description, t.description),
		   registered_at = now();
END
$$;

COMMENT ON FUNCTION hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval) IS
'Registers (or changes) a task type and its handlers; without handlers the type is left to external executors';

CREATE FUNCTION hx_unregister(task_type text) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = hx_unregister.task_type) THEN
		RAISE EXCEPTION 'unknown task type "%"', task_type
			USING ERRCODE = 'undefined_object';
	END IF;
	IF EXISTS (SELECT 1 FROM hx_task t WHERE t.task_type = hx_unregister.task_type
			   AND t.status IN ('queued', 'running', 'failed')) THEN
		RAISE EXCEPTION 'task type "%" still has unfinished tasks', task_type
			USING ERRCODE = 'object_in_use',
				  HINT = 'Let them finish or cancel them with hx_cancel() first.';
	END IF;
	DELETE FROM hx_type y WHERE y.task_type = hx_unregister.task_type;
END
$$;

COMMENT ON FUNCTION hx_unregister(text) IS 'Removes a task type that has no unfinished tasks';

/* ------------------------------------------------------------------------
 * Submitting and classifying
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_submit(task_type text,
						  payload jsonb DEFAULT '{}',
						  sla interval DEFAULT NULL,
						  origin text DEFAULT 'background',
						  priority integer DEFAULT 0,
						  department text DEFAULT NULL,
						  dedupe_key text DEFAULT NULL,
						  deadline timestamptz DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_submit' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz) IS
'Classifies a task with hx_rule and queues it; returns the task id (an unfinished task with the same type and dedupe_key is returned instead)';

CREATE FUNCTION hx_submit_batch(task_type text,
								payloads jsonb[],
								sla interval DEFAULT NULL,
								origin text DEFAULT 'background',
								priority integer DEFAULT 0,
								department text DEFAULT NULL,
								deadline timestamptz DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'hx_submit_batch' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz) IS
'Queues one task per payload (same type and other arguments) with one INSERT, each classified like hx_submit(); returns the ids in payload order';

CREATE FUNCTION hx_decide(task_type text,
						  payload jsonb DEFAULT '{}',
						  sla interval DEFAULT NULL,
						  origin text DEFAULT 'background',
						  priority integer DEFAULT 0,
						  department text DEFAULT NULL,
						  dedupe_key text DEFAULT NULL,
						  deadline timestamptz DEFAULT NULL,
						  at timestamptz DEFAULT now(),
						  OUT route text, OUT window_name text,
						  OUT rule_name text, OUT reason text)
RETURNS record
AS 'MODULE_PATHNAME', 'hx_decide' LANGUAGE C STABLE;

COMMENT ON FUNCTION hx_decide(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'The rule engine behind hx_submit() and hx_classify(): route, window, rule and reason, without a cost estimate';

/*
 * Inlinable (no SET clause, schema-qualified names): the ledger trigger
 * calls it for every finished attempt.
 */
CREATE FUNCTION hx_price_rule(task_type text, route text, at timestamptz)
RETURNS TABLE (price_id bigint, unit_cost numeric, per_second numeric,
			   factor numeric, currency text)
LANGUAGE sql STABLE AS $$
	SELECT p.id, p.unit_cost, p.per_second,
		   CASE WHEN p.route <> $2 THEN 1 - p.batch_discount ELSE 1 END
		   * (SELECT coalesce(@extschema@.hx_product(m.multiplier), 1)
				FROM @extschema@.hx_price_period m
				CROSS JOIN LATERAL (SELECT $3 AT TIME ZONE
						   coalesce(m.time_zone, current_setting('hybridexec.time_zone', true), 'UTC') AS lt) l
			   WHERE (m.task_type IS NULL OR m.task_type = $1)
				 AND (m.route IS NULL OR m.route = $2)
				 AND (m.days IS NULL OR extract(isodow FROM l.lt)::integer = ANY (m.days))
				 AND (m.local_from IS NULL
					  OR (m.local_from < m.local_until AND l.lt::time >= m.local_from AND l.lt::time < m.local_until)
					  OR (m.local_from > m.local_until AND (l.lt::time >= m.local_from OR l.lt::time < m.local_until)))),
		   p.currency
	  FROM @extschema@.hx_price p
	 WHERE (p.task_type = $1 OR p.task_type IS NULL)
	   AND (p.route = $2 OR ($2 = 'batch' AND p.route = 'stream'))
	   AND p.valid_from <= $3
	 ORDER BY p.task_type IS NULL, p.route <> $2, p.valid_from DESC
	 LIMIT 1
$$;

COMMENT ON FUNCTION hx_price_rule(text, text, timestamptz) IS
'The hx_price row that prices an attempt of this type on this route at that moment (type row beats default row; the route''s own row beats a stream row standing in for batch; latest valid_from wins) and the factor on it: hx_price_period multipliers, times (1 - batch_discount) when a stream row prices a batch attempt';

CREATE FUNCTION hx_price_at(task_type text, route text, at timestamptz DEFAULT now())
RETURNS numeric
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	SELECT r.unit_cost * r.factor FROM hx_price_rule(task_type, route, at) r
$$;

COMMENT ON FUNCTION hx_price_at(text, text, timestamptz) IS
'Cost of one attempt of this type on this route at that moment before per-second charges: unit_cost of hx_price_rule() times its factor (discount, peak/off-peak)';

CREATE FUNCTION hx_classify(task_type text,
							payload jsonb DEFAULT '{}',
							sla interval DEFAULT NULL,
							origin text DEFAULT 'background',
							priority integer DEFAULT 0,
							department text DEFAULT NULL,
							dedupe_key text DEFAULT NULL,
							deadline timestamptz DEFAULT NULL,
							at timestamptz DEFAULT now())
RETURNS TABLE (route text, window_name text, rule_name text, reason text, est_cost numeric)
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	SELECT d.route, d.window_name, d.rule_name, d.reason,
		   hx_price_at(hx_classify.task_type, d.route, hx_classify.at)
	  FROM hx_decide(task_type, payload, sla, origin, priority, department,
					 dedupe_key, deadline, at) d
$$;

COMMENT ON FUNCTION hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'The decision hx_submit() would make for this task at that moment, with its estimated cost; queues nothing';

/* ------------------------------------------------------------------------
 * Following and cancelling tasks
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cancel(id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	st text;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'task id must not be NULL' USING ERRCODE = 'null_value_not_allowed';
	END IF;
	SELECT t.status INTO st FROM hx_task t WHERE t.id = hx_cancel.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'task % does not exist', id
			USING ERRCODE = 'undefined_object';
	END IF;
	IF st NOT IN ('queued', 'failed') THEN
		RAISE NOTICE 'task % is already %, nothing to cancel', id, st
			USING HINT = 'Only queued tasks and failed tasks waiting for a retry can be cancelled.';
		RETURN false;
	END IF;
	UPDATE hx_task t SET status = 'cancelled', finished_at = now() WHERE t.id = hx_cancel.id;
	RETURN true;
END
$$;

COMMENT ON FUNCTION hx_cancel(bigint) IS 'Cancels a queued task (or one waiting for a retry); returns false when it is already running or finished';

CREATE FUNCTION hx_require_read_committed(caller text, what text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
	IF current_setting('transaction_isolation') <> 'read committed' THEN
		RAISE EXCEPTION '% needs READ COMMITTED isolation', caller
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('In REPEATABLE READ or SERIALIZABLE the %s never seems to change; wait outside that transaction.', what);
	END IF;
END
$$;

COMMENT ON FUNCTION hx_require_read_committed(text, text) IS
'Raises a clear error unless the transaction is READ COMMITTED: the polling functions (hx_wait, hx_wait_run) would otherwise never see the change they wait for';

CREATE FUNCTION hx_wait(id bigint, timeout interval DEFAULT '30 seconds') RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	st text;
	xmin_of xid;
	give_up timestamptz := clock_timestamp() + timeout;
BEGIN
	PERFORM hx_require_read_committed('hx_wait', 'task');
	SELECT t.status, t.xmin INTO st, xmin_of FROM hx_task t WHERE t.id = hx_wait.id;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'task % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF xmin_of::text = pg_current_xact_id_if_assigned()::text THEN
		RAISE EXCEPTION 'task % was queued by this transaction', id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Workers only see committed tasks: commit, then wait.';
	END IF;
	LOOP
		IF st IN ('done', 'dead', 'cancelled') OR clock_timestamp() >= give_up THEN
			RETURN st;
		END IF;
		PERFORM pg_sleep(0.005);
		SELECT t.status INTO st FROM hx_task t WHERE t.id = hx_wait.id;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_wait(bigint, interval) IS
'Waits until the task is done, dead or cancelled, or the timeout passes; returns its status then';

/* ------------------------------------------------------------------------
 * Worker-side functions (called by the stream workers; also usable by
 * tests and tools, never needed by applications)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_micro_batch_ready(task_type text, size integer, wait interval)
RETURNS boolean
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	/* enough tasks queued to fill a micro-batch, or the oldest waited long enough */
	SELECT count(*) >= size
		   OR min(q.submitted_at) <= clock_timestamp() - wait
	  FROM (SELECT t.submitted_at FROM hx_task t
			 WHERE t.status IN ('queued', 'failed') AND t.route = 'stream'
			   AND t.task_type = hx_micro_batch_ready.task_type
			   AND t.run_after <= clock_timestamp()
			 ORDER BY t.priority DESC, t.id
			 LIMIT size) q
$$;

COMMENT ON FUNCTION hx_micro_batch_ready(text, integer, interval) IS
'Worker side: whether the stream tasks of a micro-batched type are ready to go (a full batch, or the oldest has waited micro_batch_wait)';

CREATE FUNCTION hx_micro_batch_due() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
	/* when the next buffered micro-batch must go even if not full */
	SELECT min(t.submitted_at + y.micro_batch_wait)
	  FROM hx_task t JOIN hx_type y ON y.task_type = t.task_type
	 WHERE y.micro_batch_size IS NOT NULL
	   AND t.status IN ('queued', 'failed') AND t.route = 'stream'
$$;

COMMENT ON FUNCTION hx_micro_batch_due() IS
'Worker side: the moment the oldest buffered micro-batch must run even if it is not full (NULL when none waits)';

CREATE FUNCTION hx_stream_claim(worker_pid integer, max integer)
RETURNS TABLE (id bigint, task_type text, payload jsonb, attempts integer,
			   max_attempts integer, handler regprocedure, run_as regrole,
			   timeout_ms double precision)
AS 'MODULE_PATHNAME', 'hx_stream_claim' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_stream_claim(integer, integer) IS
'Worker side: claims up to max due stream tasks with an in-database handler or batch handler (FOR UPDATE SKIP LOCKED; micro-batched types only once their batch is ready), marks them running and counts the attempt';

CREATE FUNCTION hx_put_back(ids bigint[], what text)
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	/*
	 * Tasks whose worker is gone mid-attempt (locked by the caller): the
	 * attempt stays counted; back to the queue, or dead when it was the
	 * last one; each gets an hx_error row, the dead ones an hx_alert.
	 */
	RETURN QUERY
	WITH upd AS (
		UPDATE hx_task t
		   SET status = CASE WHEN t.attempts >= y.max_attempts THEN 'dead' ELSE 'queued' END,
			   finished_at = CASE WHEN t.attempts >= y.max_attempts THEN now() END,
			   run_after = now(),
			   last_error = format('%s %s stopped while running attempt %s (crash or shutdown)',
								   what, t.worker_pid, t.attempts)
		  FROM hx_type y
		 WHERE t.id = ANY (ids) AND y.task_type = t.task_type
		RETURNING t.id, t.task_type, t.attempts, t.status, t.last_error
	), err AS (
		INSERT INTO hx_error (task_id, task_type, attempt, sqlstate, message, hint)
		SELECT upd.id, upd.task_type, upd.attempts, 'XX000', upd.last_error,
			   'The attempt was rolled back with its worker; its effects did not happen.'
		  FROM upd
	)
	SELECT upd.id, upd.status FROM upd;
	PERFORM pg_notify('hx_alert', json_build_object('event', 'dead', 'task_id', t.id,
					  'task_type', t.task_type, 'error', t.last_error)::text)
	   FROM hx_task t WHERE t.id = ANY (ids) AND t.status = 'dead';
END
$$;

COMMENT ON FUNCTION hx_put_back(bigint[], text) IS
'Worker side: puts tasks whose worker stopped mid-attempt back in the queue (attempt counted) or makes them dead, with an hx_error row each and NOTIFY hx_alert for the dead';

CREATE FUNCTION hx_stream_sweep(live_pids integer[]) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	lost bigint[];
BEGIN
	SELECT array_agg(t.id) INTO lost FROM (
		SELECT t.id FROM hx_task t
		 WHERE t.status = 'running' AND t.route = 'stream'
		   AND (t.worker_pid IS NULL OR t.worker_pid <> ALL (live_pids))
		   AND EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = t.task_type
						AND (y.handler IS NOT NULL OR y.batch_handler IS NOT NULL))
		 FOR UPDATE OF t SKIP LOCKED) t;
	RETURN (SELECT count(*) FROM hx_put_back(coalesce(lost, '{}'), 'worker'));
END
$$;

COMMENT ON FUNCTION hx_stream_sweep(integer[]) IS
'Worker side: puts stream tasks left running by a worker that is no longer alive back in the queue (their attempt stays counted), or makes them dead when no attempt is left';

/* ------------------------------------------------------------------------
 * Looking at the workers
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_workers(OUT slot integer, OUT pid integer, OUT kind text,
						   OUT state text, OUT started_at timestamptz,
						   OUT tasks_done bigint, OUT tasks_failed bigint,
						   OUT last_task_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hx_workers' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_workers() IS
'The stream workers of this server from shared memory: pid, idle or busy, tasks done and failed since start (needs shared_preload_libraries)';

REVOKE ALL ON FUNCTION hx_stream_claim(integer, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION hx_stream_sweep(integer[]) FROM PUBLIC;
