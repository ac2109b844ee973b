/*
 * src/sql/internal.sql
 *
 * First part of the install script (the Makefile joins the files of
 * SQL_PARTS, in its order, into hybridexec--<version>.sql): the internal
 * schema and what the other parts share - the small facts the extension
 * remembers (hx_state), the validation of time conditions, the settings
 * read back in seconds.
 *
 * The API (what users call and read) lives in the schema the extension is
 * created in; everything else - triggers, the workers' steps, checks,
 * helpers - in schema _hybridexec, which only the extension's owner may
 * use (privileges.sql), so that \df shows users the API alone.  Every
 * function of both pins its search_path to the two schemas (and pg_temp
 * last), so no object a user creates can stand in for one of ours - but
 * for a few one-statement SQL helpers that are inlined into their callers
 * (a SET clause would prevent it) and so run with their callers' pinned
 * path: hx_local_zone, hx_cron_job_name, hx_price_rule.
 *
 * Storage - schemas, tables, indexes and the rows the extension ships -
 * stands between "-- [storage]" and "-- [/storage]" lines in every part.
 * An update script (src/sql/update/) leaves those blocks out, since its
 * own migration brings the storage up to date, and re-creates everything
 * else: so whatever is outside them must run on an existing database too.
 */

\echo Use "CREATE EXTENSION hybridexec" to load this file. \quit

-- [storage]
CREATE SCHEMA _hybridexec;
-- [/storage]

COMMENT ON SCHEMA _hybridexec IS
'hybridexec''s internals: triggers, the workers'' steps, checks and helpers; used by the extension''s owner only';

/* while the script runs: create in the extension's schema, find internals too */
SET LOCAL search_path = @extschema@, _hybridexec, pg_temp;

/* ------------------------------------------------------------------------
 * Validation of DBA-edited rows
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_check_time_condition(label text, local_from time, local_until time,
										days integer[], time_zone text)
RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_check_time_condition(text, time, time, integer[], text) IS
'Validation shared by hx_rule and hx_price_period: a time-of-day range needs both ends and must not be empty, days are ISO days of week, the time zone must exist; raises a clear error naming label';

CREATE FUNCTION _hybridexec.hx_check_key_length(what text, value text) RETURNS void
AS 'MODULE_PATHNAME', 'hx_check_key_length_sql' LANGUAGE C IMMUTABLE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_check_key_length(text, text) IS
'Raises a clear error when text that becomes a key (what names it) is longer than hx_submit allows (200 characters)';

CREATE FUNCTION _hybridexec.hx_require_read_committed(caller text, what text) RETURNS void
AS 'MODULE_PATHNAME', 'hx_require_read_committed' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_require_read_committed(text, text) IS
'Raises a clear error unless the transaction is READ COMMITTED: the waiting functions (hx_wait, hx_wait_run) would otherwise never see the change they wait for';

CREATE FUNCTION _hybridexec.hx_caller() RETURNS regrole
AS 'MODULE_PATHNAME', 'hx_caller' LANGUAGE C STABLE;

COMMENT ON FUNCTION _hybridexec.hx_caller() IS
'The role that called the API function now running (API functions that must know it are C functions that note it, then run their implementation in this schema); outside one, the current user';

CREATE FUNCTION _hybridexec.hx_alert_send(payload jsonb) RETURNS void
AS 'MODULE_PATHNAME', 'hx_alert_send_sql' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_alert_send(jsonb) IS
'Sends a JSON object on channel hx_alert at commit, its long strings clipped when it would not fit a NOTIFY payload: the one way alerts are sent';

/* ------------------------------------------------------------------------
 * Small facts remembered between sessions
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE _hybridexec.hx_state (
	key				text PRIMARY KEY,
	value			text,
	at				timestamptz NOT NULL DEFAULT now()
);
-- [/storage]

COMMENT ON TABLE _hybridexec.hx_state IS 'Small facts the extension remembers between sessions (such as: the DBA was told pg_cron is missing)';
COMMENT ON COLUMN _hybridexec.hx_state.key IS 'What is remembered';
COMMENT ON COLUMN _hybridexec.hx_state.value IS 'Its value';
COMMENT ON COLUMN _hybridexec.hx_state.at IS 'When it was last set';

CREATE FUNCTION _hybridexec.hx_local_zone() RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT coalesce(current_setting('hybridexec.time_zone', true), 'UTC')
$$;

COMMENT ON FUNCTION _hybridexec.hx_local_zone() IS 'hybridexec.time_zone (UTC when the library is not loaded): the zone of days, weeks and months in the books';

CREATE FUNCTION _hybridexec.hx_setting_seconds(name text, fallback double precision) RETURNS double precision
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_setting_seconds(text, double precision) IS
'A time setting such as hybridexec.retention in seconds (fallback when the library is not loaded)';
/*
 * src/sql/queue.sql
 *
 * Part of the install script: the task queue.  Task types (hx_type) and
 * their registration, the queue itself (hx_task) and its error log
 * (hx_error), submitting, waiting, cancelling, the commit-time wake-up and
 * the stream workers' side (claim, crash sweep).
 */

/* ------------------------------------------------------------------------
 * Task types
 * ------------------------------------------------------------------------ */

-- [storage]
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
			   AND micro_batch_wait BETWEEN interval '0' AND interval '1 hour'
			   AND (micro_batch_size IS NULL OR batch_handler IS NOT NULL))
);
-- [/storage]

COMMENT ON TABLE hx_type IS
'Registered task types: the in-database handler (NULL = external executors), retry limit, timeout and the role handlers run as';
COMMENT ON COLUMN hx_type.task_type IS 'Name of the task type, as passed to hx_submit()';
COMMENT ON COLUMN hx_type.handler IS 'f(payload jsonb) RETURNS jsonb, called once per task by the workers; NULL = handled by external executors';
COMMENT ON COLUMN hx_type.batch_handler IS 'f(payloads jsonb[]) RETURNS jsonb[], one result per input in the same order; used by batch windows';
COMMENT ON COLUMN hx_type.max_attempts IS 'Attempts before a failing task becomes dead (the first run counts)';
COMMENT ON COLUMN hx_type.timeout IS 'A handler call running longer than this is cancelled and counts as a failed attempt';
COMMENT ON COLUMN hx_type.run_as IS 'Role whose privileges the handler runs with: the role that registered (or last changed) the type with hx_register()';
COMMENT ON COLUMN hx_type.micro_batch_size IS 'Micro-batching: stream tasks of the type are buffered until this many are queued (or micro_batch_wait has passed) and handed to the batch handler together; NULL = off';
COMMENT ON COLUMN hx_type.micro_batch_wait IS 'Micro-batching: the longest a stream task of the type waits for others to join its batch';
COMMENT ON COLUMN hx_type.description IS 'Free text for humans';
COMMENT ON COLUMN hx_type.latency_value IS 'Value of an hour of latency of one task, in the price currency (a payload key "latency_value" overrides it); rules with worth_streaming compare it with the extra cost of streaming; NULL = unknown';
COMMENT ON COLUMN hx_type.registered_at IS 'When hx_register() created the type or last changed it (a call that changes nothing leaves it)';

/* ------------------------------------------------------------------------
 * The task queue
 * ------------------------------------------------------------------------ */

-- [storage]
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
	submitted_by	regrole NOT NULL DEFAULT current_user::regrole,
	isolated		boolean NOT NULL DEFAULT false,
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
/* tasks put back after their worker was lost (or of a failed chunk): each runs alone */
CREATE INDEX hx_task_isolated_idx ON hx_task (priority DESC, id)
	WHERE isolated AND status IN ('queued', 'failed');
/* what the crash sweep looks at */
CREATE INDEX hx_task_running_idx ON hx_task (worker_pid)
	WHERE status = 'running';
/* at most one unfinished task per (type, dedupe_key) */
CREATE UNIQUE INDEX hx_task_dedupe_idx ON hx_task (task_type, dedupe_key)
	WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed');
-- [/storage]

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
COMMENT ON COLUMN hx_task.dedupe_key IS 'While a task with the same type and key is unfinished, hx_submit() returns its id instead of queuing another (at most 200 characters)';
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
COMMENT ON COLUMN hx_task.submitted_by IS 'The role that submitted the task (for a watched table: the role that attached it); it and its members see the task';
COMMENT ON COLUMN hx_task.isolated IS 'Its last attempt was lost with its worker (crash, kill), or its window run''s chunk failed as a whole: it runs alone next time, so that a task that crashes its worker costs no other task an attempt';
COMMENT ON COLUMN hx_task.reported_cost IS 'Cost of the latest attempt as reported by its executor (hx_complete/hx_fail); when set, the ledger books it instead of the catalog price';

/*
 * A queue turns its rows over all day: every task is inserted, claimed,
 * finished and, after hybridexec.retention, deleted.  Vacuum it after 1%
 * of its rows changed (not 20%) and without cost-based sleeps, so that
 * dead row versions are reclaimed while they are few (BENCH=soak make
 * bench shows the sizes).  Outside the storage blocks: an update sets them
 * again.
 */
ALTER TABLE hx_task SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
						 autovacuum_vacuum_insert_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0,
						 autovacuum_analyze_scale_factor = 0.02);

-- [storage]
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
-- [/storage]

ALTER TABLE hx_error SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

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
 * Departments: who may submit for (and see the tasks of) which
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_department_member (
	role			regrole NOT NULL,
	department		text NOT NULL,
	PRIMARY KEY (role, department),
	CONSTRAINT hx_department_member_department_check
		CHECK (department <> '' AND length(department) <= 200)
);

CREATE INDEX hx_department_member_department_idx ON hx_department_member (department);
-- [/storage]

COMMENT ON TABLE hx_department_member IS
'Which roles belong to which department: a member (and the roles that are members of it) sees the department''s tasks, errors and costs; once any row exists, a role submits only for departments it belongs to';
COMMENT ON COLUMN hx_department_member.role IS 'The role (its members count too)';
COMMENT ON COLUMN hx_department_member.department IS 'The department (hx_task.department)';


/* what retention looks at */
-- [storage]
CREATE INDEX hx_task_finished_idx ON hx_task (finished_at)
	WHERE status IN ('done', 'dead', 'cancelled');
-- [/storage]

/* ------------------------------------------------------------------------
 * Waking the workers
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_task_wake() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_task_wake' LANGUAGE C;

COMMENT ON FUNCTION _hybridexec.hx_task_wake() IS
'Trigger: a queued stream task wakes an idle stream worker at commit and, when hybridexec.notify is on, sends one NOTIFY hx_stream per transaction';

CREATE TRIGGER hx_task_wake BEFORE INSERT OR UPDATE OF status, route ON hx_task
	FOR EACH ROW WHEN (NEW.route = 'stream' AND NEW.status = 'queued')
	EXECUTE FUNCTION _hybridexec.hx_task_wake();

/* ------------------------------------------------------------------------
 * Registering task types
 * ------------------------------------------------------------------------ */

/* a handler as hx_register's notices show it */
CREATE FUNCTION _hybridexec.hx_handler_text(handler regprocedure) RETURNS text
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT CASE WHEN handler IS NULL THEN 'none'
				WHEN EXISTS (SELECT 1 FROM pg_proc pr WHERE pr.oid = handler) THEN handler::text
				ELSE '(a dropped function)' END
$$;

COMMENT ON FUNCTION _hybridexec.hx_handler_text(regprocedure) IS
'A handler as hx_register() reports changes: its signature, none, or (a dropped function)';

/*
 * Raises a clear error unless fn has the signature of a handler,
 * f(payload jsonb) RETURNS jsonb, or (batch) of a batch handler,
 * f(payloads jsonb[]) RETURNS jsonb[]; the hint names what the caller
 * likely meant: the function of that name with the right signature, or
 * the other parameter when fn is the other kind of handler.
 */
CREATE FUNCTION _hybridexec.hx_check_handler(fn regprocedure, batch boolean) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	want regtype := CASE WHEN batch THEN 'jsonb[]'::regtype ELSE 'jsonb'::regtype END;
	other regtype := CASE WHEN batch THEN 'jsonb'::regtype ELSE 'jsonb[]'::regtype END;
	what text := CASE WHEN batch THEN 'batch handler' ELSE 'handler' END;
	param text := CASE WHEN batch THEN 'batch_handler' ELSE 'handler' END;
	better regprocedure;
	p record;
BEGIN
	SELECT pr.proname, pr.pronamespace, pr.prorettype, pr.proretset, pr.prokind, pr.pronargs, pr.proargtypes
	  INTO p FROM pg_proc pr WHERE pr.oid = fn;
	IF NOT (p.prokind <> 'f' OR p.proretset OR p.pronargs <> 1
			OR p.proargtypes[0] <> want OR p.prorettype <> want) THEN
		RETURN;
	END IF;
	/* the function the caller may have meant: same name, the right signature */
	SELECT pr.oid::regprocedure INTO better FROM pg_proc pr
	 WHERE pr.proname = p.proname AND pr.pronamespace = p.pronamespace AND pr.prokind = 'f'
	   AND NOT pr.proretset AND pr.pronargs = 1 AND pr.proargtypes[0] = want
	   AND pr.prorettype = want;
	RAISE EXCEPTION '% % has the wrong signature', what, fn
		USING ERRCODE = 'invalid_function_definition',
			  DETAIL = CASE WHEN batch
							THEN 'A batch handler takes all payloads and returns one result each, in order: f(payloads jsonb[]) RETURNS jsonb[].'
							ELSE 'A handler takes the payload and returns the result: f(payload jsonb) RETURNS jsonb.' END,
			  HINT = CASE
				WHEN better IS NOT NULL
				THEN format('Pass the %s with its argument types: %s => %L.', what, param, better::text)
				WHEN p.prokind = 'f' AND NOT p.proretset AND p.pronargs = 1
					 AND p.proargtypes[0] = other AND p.prorettype = other
				THEN format('That is a %s: pass it as %s => %L.',
							CASE WHEN batch THEN 'per-task handler' ELSE 'batch handler' END,
							CASE WHEN batch THEN 'handler' ELSE 'batch_handler' END, fn::text)
				WHEN batch
				THEN 'Pass the batch handler with its argument types, e.g. ''my_batch_handler(jsonb[])''; wrap a function with another signature in one f(payloads jsonb[]) RETURNS jsonb[].'
				ELSE 'Pass the handler with its argument types, e.g. ''my_handler(jsonb)''; wrap a function with another signature in one f(payload jsonb) RETURNS jsonb.' END;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_check_handler(regprocedure, boolean) IS
'Raises a clear error, with a hint naming the likely intended function, unless fn is a handler f(jsonb) RETURNS jsonb (or, with batch, a batch handler f(jsonb[]) RETURNS jsonb[])';

/*
 * hx_register changes only what it is given: an argument left NULL keeps
 * the type's value (or, for a new type, takes the default: 3 attempts, a
 * minute, no handler), and clear names the fields to reset.  Whoever
 * registers or changes a type becomes its run_as, so the handlers it ends
 * up with - given or kept - must be executable by that role.
 */
CREATE FUNCTION _hybridexec.hx_register(task_type text, handler regprocedure,
										batch_handler regprocedure, max_attempts integer,
										timeout interval, description text,
										micro_batch_size integer, micro_batch_wait interval,
										clear text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	clearable CONSTANT text[] := ARRAY['handler', 'batch_handler', 'description', 'micro_batch'];
	caller regrole := hx_caller();
	cur hx_type;
	found_cur boolean;
	new_handler regprocedure;
	new_batch_handler regprocedure;
	new_max_attempts integer;
	new_timeout interval;
	new_description text;
	new_size integer;
	new_wait interval;
	changes text[];
	bad text;
	kept text;
BEGIN
	IF task_type IS NULL OR task_type = '' THEN
		RAISE EXCEPTION 'task type must not be NULL or empty'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass a name such as ''summarize''.';
	END IF;
	PERFORM hx_check_key_length('task type', task_type);

	/* what clear may name, and not together with a new value for it */
	SELECT string_agg(coalesce(quote_literal(c), 'NULL'), ', ') INTO bad
	  FROM unnest(clear) c WHERE c IS NULL OR c <> ALL (clearable);
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'hx_register cannot clear %', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'clear may name handler, batch_handler, description and micro_batch (micro_batch_size and micro_batch_wait together); change max_attempts or timeout by passing the new value.';
	END IF;
	SELECT string_agg(DISTINCT c, ', ') INTO bad
	  FROM unnest(clear) c
	 WHERE (c = 'handler' AND handler IS NOT NULL)
		OR (c = 'batch_handler' AND batch_handler IS NOT NULL)
		OR (c = 'description' AND description IS NOT NULL)
		OR (c = 'micro_batch' AND (micro_batch_size IS NOT NULL OR micro_batch_wait IS NOT NULL));
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'hx_register cannot both set and clear %', bad
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass a new value to change a field, or name it in clear to reset it, not both.';
	END IF;

	/* one registration of a type at a time, so that a new type is inserted once */
	PERFORM pg_advisory_xact_lock(26745, hashtext(task_type));
	SELECT * INTO cur FROM hx_type y WHERE y.task_type = hx_register.task_type FOR UPDATE;
	found_cur := FOUND;
	/* only a member of the role a type runs as may change it, or an administrator */
	IF found_cur AND NOT pg_has_role(caller, cur.run_as, 'MEMBER')
	   AND NOT pg_has_role(caller, 'hybridexec_admin', 'MEMBER') THEN
		RAISE EXCEPTION 'task type "%" belongs to role %', task_type, cur.run_as
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Only a member of that role, or of hybridexec_admin, may change it.';
	END IF;
	IF max_attempts < 1 THEN
		RAISE EXCEPTION 'max_attempts must be at least 1, not %', max_attempts
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use 1 for a task that is never retried.';
	END IF;
	IF timeout <= interval '0' OR timeout > interval '1 day' THEN
		RAISE EXCEPTION 'timeout must be a positive interval of at most a day, not %', timeout
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example ''30 seconds''.';
	END IF;

	/* what the type will be: given, else kept (or the default), unless cleared */
	new_handler := CASE WHEN 'handler' = ANY (clear) THEN NULL
						ELSE coalesce(handler, cur.handler) END;
	new_batch_handler := CASE WHEN 'batch_handler' = ANY (clear) THEN NULL
							  ELSE coalesce(batch_handler, cur.batch_handler) END;
	new_max_attempts := coalesce(max_attempts, cur.max_attempts, 3);
	new_timeout := coalesce(timeout, cur.timeout, interval '1 minute');
	new_description := CASE WHEN 'description' = ANY (clear) THEN NULL
							ELSE coalesce(description, cur.description) END;
	new_size := CASE WHEN 'micro_batch' = ANY (clear) THEN NULL
					 ELSE coalesce(micro_batch_size, cur.micro_batch_size) END;
	new_wait := CASE WHEN 'micro_batch' = ANY (clear) THEN NULL
					 ELSE coalesce(micro_batch_wait, cur.micro_batch_wait) END;

	/* a kept handler must still exist (a dropped function leaves its oid behind) */
	IF new_handler IS NOT NULL AND handler IS NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_proc pr WHERE pr.oid = new_handler) THEN
		RAISE EXCEPTION 'the handler of task type "%" no longer exists', task_type
			USING ERRCODE = 'undefined_function',
				  DETAIL = 'hx_type.handler names a function that was dropped since; this call would keep it.',
				  HINT = 'Pass a new one, e.g. handler => ''my_handler(jsonb)'', or clear => ARRAY[''handler''].';
	END IF;
	IF new_batch_handler IS NOT NULL AND batch_handler IS NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_proc pr WHERE pr.oid = new_batch_handler) THEN
		RAISE EXCEPTION 'the batch handler of task type "%" no longer exists', task_type
			USING ERRCODE = 'undefined_function',
				  DETAIL = 'hx_type.batch_handler names a function that was dropped since; this call would keep it.',
				  HINT = 'Pass a new one, e.g. batch_handler => ''my_batch_handler(jsonb[])'', or clear => ARRAY[''batch_handler''].';
	END IF;

	/* the handlers run as the caller: it must be allowed to call them, kept ones too */
	IF new_handler IS NOT NULL AND NOT has_function_privilege(caller, new_handler, 'EXECUTE') THEN
		bad := new_handler::text;
		kept := CASE WHEN handler IS NULL THEN 'handler' END;
	ELSIF new_batch_handler IS NOT NULL AND NOT has_function_privilege(caller, new_batch_handler, 'EXECUTE') THEN
		bad := new_batch_handler::text;
		kept := CASE WHEN batch_handler IS NULL THEN 'batch_handler' END;
	ELSE
		bad := NULL;
	END IF;
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'role % may not execute handler %', caller, bad
			USING ERRCODE = 'insufficient_privilege',
				  DETAIL = 'Handlers run with the privileges of the role that registers or changes their type'
						   || CASE WHEN kept IS NOT NULL
								   THEN format('; this call keeps the type''s %s and would make %s its run_as.', kept, caller)
								   ELSE '.' END,
				  HINT = 'GRANT EXECUTE on the handler to that role, or register the type as its owner'
						 || CASE WHEN kept IS NOT NULL
								 THEN format(', or pass clear => ARRAY[%L].', kept) ELSE '.' END;
	END IF;

	IF new_handler IS NOT NULL THEN
		PERFORM hx_check_handler(new_handler, false);
	END IF;
	IF new_batch_handler IS NOT NULL THEN
		PERFORM hx_check_handler(new_batch_handler, true);
	END IF;

	IF (new_size IS NULL) <> (new_wait IS NULL) THEN
		RAISE EXCEPTION 'micro_batch_size and micro_batch_wait go together'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example micro_batch_size => 32, micro_batch_wait => ''20 milliseconds''; leave both NULL to run stream tasks one by one.';
	END IF;
	IF new_size IS NOT NULL AND new_batch_handler IS NULL THEN
		RAISE EXCEPTION 'micro-batching needs a batch handler'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = CASE WHEN 'batch_handler' = ANY (clear)
							  THEN 'Clear micro-batching with it: clear => ARRAY[''batch_handler'', ''micro_batch''].'
							  ELSE 'Pass batch_handler => a function f(jsonb[]) RETURNS jsonb[].' END;
	END IF;
	IF new_size NOT BETWEEN 2 AND 1024 OR new_wait NOT BETWEEN interval '0' AND interval '1 hour' THEN
		RAISE EXCEPTION 'micro_batch_size must be 2 to 1024 and micro_batch_wait between 0 and an hour, not % and %',
				new_size, new_wait
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'A micro-batch holds at most hybridexec.stream_batch_size tasks per call anyway.';
	END IF;

	IF NOT found_cur THEN
		INSERT INTO hx_type (task_type, handler, batch_handler, max_attempts, timeout, run_as,
							 description, micro_batch_size, micro_batch_wait)
		VALUES (task_type, new_handler, new_batch_handler, new_max_attempts, new_timeout, caller,
				new_description, new_size, new_wait);
		RETURN;
	END IF;

	/* an existing type: say what changed */
	changes := array_remove(ARRAY[
		CASE WHEN new_handler IS DISTINCT FROM cur.handler
			 THEN format('handler %s -> %s', hx_handler_text(cur.handler), hx_handler_text(new_handler)) END,
		CASE WHEN new_batch_handler IS DISTINCT FROM cur.batch_handler
			 THEN format('batch_handler %s -> %s', hx_handler_text(cur.batch_handler),
						 hx_handler_text(new_batch_handler)) END,
		CASE WHEN new_max_attempts IS DISTINCT FROM cur.max_attempts
			 THEN format('max_attempts %s -> %s', cur.max_attempts, new_max_attempts) END,
		CASE WHEN new_timeout IS DISTINCT FROM cur.timeout
			 THEN format('timeout %s -> %s', cur.timeout, new_timeout) END,
		CASE WHEN new_size IS DISTINCT FROM cur.micro_batch_size
			 THEN format('micro_batch_size %s -> %s', coalesce(cur.micro_batch_size::text, 'none'),
						 coalesce(new_size::text, 'none')) END,
		CASE WHEN new_wait IS DISTINCT FROM cur.micro_batch_wait
			 THEN format('micro_batch_wait %s -> %s', coalesce(cur.micro_batch_wait::text, 'none'),
						 coalesce(new_wait::text, 'none')) END,
		CASE WHEN new_description IS DISTINCT FROM cur.description
			 THEN format('description %s -> %s', coalesce(quote_literal(cur.description), 'none'),
						 coalesce(quote_literal(new_description), 'none')) END,
		CASE WHEN caller IS DISTINCT FROM cur.run_as
			 THEN format('run_as %s -> %s', cur.run_as, caller) END], NULL);
	IF cardinality(changes) = 0 THEN
		RAISE NOTICE 'task type "%": nothing changed', task_type;
		RETURN;
	END IF;
	UPDATE hx_type y
	   SET handler = new_handler, batch_handler = new_batch_handler,
		   max_attempts = new_max_attempts, timeout = new_timeout, run_as = caller,
		   description = new_description, micro_batch_size = new_size,
		   micro_batch_wait = new_wait, registered_at = now()
	 WHERE y.task_type = hx_register.task_type;
	RAISE NOTICE 'task type "%": %', task_type, array_to_string(changes, ', ');
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[]) IS
'Implementation of hx_register(): changes only the fields given (NULL keeps them; clear resets handler, batch_handler, description or micro_batch) and says what changed; the type runs as the calling role (hx_caller()), which must be allowed to execute the handlers it ends up with; only a member of the role a type runs as, or an administrator, may change it';

CREATE FUNCTION hx_register(task_type text,
							handler regprocedure DEFAULT NULL,
							batch_handler regprocedure DEFAULT NULL,
							max_attempts integer DEFAULT NULL,
							timeout interval DEFAULT NULL,
							description text DEFAULT NULL,
							micro_batch_size integer DEFAULT NULL,
							micro_batch_wait interval DEFAULT NULL,
							clear text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[]) IS
'Registers or changes a task type, e.g. hx_register(''summarize'', ''summarize(jsonb)'', timeout => ''30 seconds''). Handlers are named with their argument types: handler ''f(jsonb)'' (f(payload jsonb) RETURNS jsonb), batch_handler ''f(jsonb[])'' (f(payloads jsonb[]) RETURNS jsonb[]); without either the type is left to external executors. An argument left NULL keeps the type''s value (a new type: max_attempts 3, timeout 1 minute); clear => ARRAY[''handler'', ''batch_handler'', ''description'', ''micro_batch''] resets those fields. A notice says what changed. The handlers then run as the calling role, which becomes the type''s run_as';

CREATE FUNCTION hx_unregister(task_type text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

/* ------------------------------------------------------------------------
 * Following and cancelling tasks
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cancel(id bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_cancel' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_cancel(bigint) IS 'Cancels a queued task (or one waiting for a retry) the caller may see; returns false when it is already running or finished';

CREATE FUNCTION hx_wait(id bigint, timeout interval DEFAULT '30 seconds') RETURNS text
AS 'MODULE_PATHNAME', 'hx_wait' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_wait(bigint, interval) IS
'Waits until the task is done, dead or cancelled, or the timeout passes; returns its status then (READ COMMITTED only; a task queued by the calling transaction is refused)';

CREATE FUNCTION _hybridexec.hx_submit_as(submitted_by regrole, task_type text, payload jsonb,
										 sla interval, origin text)
RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_submit_as' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_submit_as(regrole, text, jsonb, interval, text) IS
'hx_submit() on behalf of a role: the tasks of a watched table are submitted by the role that attached it';

/* pg_has_role errs on a dropped role: these look only at roles that exist */
CREATE FUNCTION _hybridexec.hx_in_department(who oid, department text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT EXISTS (SELECT 1 FROM hx_department_member m JOIN pg_roles r ON r.oid = m.role
					WHERE m.department = hx_in_department.department
					  AND pg_has_role(who, r.oid, 'MEMBER'))
$$;

COMMENT ON FUNCTION _hybridexec.hx_in_department(oid, text) IS
'Whether role "who" is a member (directly or through a group) of a role of the department in hx_department_member';

CREATE FUNCTION _hybridexec.hx_visible_to(who oid, submitted_by oid, department text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT pg_has_role(who, 'hybridexec_admin', 'MEMBER')
		   OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = submitted_by
					   AND pg_has_role(who, r.oid, 'MEMBER'))
		   OR hx_in_department(who, department)
$$;

COMMENT ON FUNCTION _hybridexec.hx_visible_to(oid, oid, text) IS
'Whether role "who" may see a task submitted by submitted_by for department: an administrator, a member of the submitting role, or a member of the department';

CREATE FUNCTION _hybridexec.hx_may_submit_for(who oid, department text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT NOT EXISTS (SELECT 1 FROM hx_department_member)
		   OR pg_has_role(who, 'hybridexec_admin', 'MEMBER')
		   OR hx_in_department(who, department)
$$;

COMMENT ON FUNCTION _hybridexec.hx_may_submit_for(oid, text) IS
'Whether role "who" may submit tasks for department: yes while no membership is defined in hx_department_member, then only its members (and administrators)';

/* ------------------------------------------------------------------------
 * Worker-side functions (called by the stream workers; also usable by
 * tests and tools, never needed by applications)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_micro_batch_ready(task_type text, size integer, wait interval)
RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_micro_batch_ready(text, integer, interval) IS
'Worker side: whether the stream tasks of a micro-batched type are ready to go (a full batch, or the oldest has waited micro_batch_wait)';

CREATE FUNCTION _hybridexec.hx_micro_batch_due() RETURNS timestamptz
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	/* when the next buffered micro-batch must go even if not full */
	SELECT min(t.submitted_at + y.micro_batch_wait)
	  FROM hx_task t JOIN hx_type y ON y.task_type = t.task_type
	 WHERE y.micro_batch_size IS NOT NULL
	   AND t.status IN ('queued', 'failed') AND t.route = 'stream'
$$;

COMMENT ON FUNCTION _hybridexec.hx_micro_batch_due() IS
'Worker side: the moment the oldest buffered micro-batch must run even if it is not full (NULL when none waits)';

CREATE FUNCTION _hybridexec.hx_stream_claim(worker_pid integer, max integer)
RETURNS TABLE (id bigint, task_type text, payload jsonb, attempts integer,
			   max_attempts integer, handler regprocedure, run_as regrole,
			   timeout_ms double precision)
AS 'MODULE_PATHNAME', 'hx_stream_claim' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_stream_claim(integer, integer) IS
'Worker side (tests and tools): the stream workers'' claim of up to max due stream tasks with an in-database handler or batch handler (FOR UPDATE SKIP LOCKED; micro-batched types only once their batch is ready; never isolated tasks), marked running for worker_pid with their attempt counted';

CREATE FUNCTION _hybridexec.hx_put_back(ids bigint[], what text)
RETURNS TABLE (id bigint, status text)
AS 'MODULE_PATHNAME', 'hx_put_back' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_put_back(bigint[], text) IS
'Worker side: puts tasks whose worker (what: its kind) stopped mid-attempt back in the queue, isolated (attempt counted), or makes them dead, with an hx_error row each and the dead alert; a task that cannot be booked is set aside';

CREATE FUNCTION _hybridexec.hx_next_try(attempts integer, max_attempts integer, batch boolean,
										lost boolean, retry boolean,
										OUT status text, OUT delay_ms double precision)
AS 'MODULE_PATHNAME', 'hx_next_try' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_next_try(integer, integer, boolean, boolean, boolean) IS
'The retry policy: what becomes of a task whose attempt failed (dead, failed to be retried after delay_ms, or queued again when the attempt was lost with its worker)';

CREATE FUNCTION _hybridexec.hx_move_window(old_name text, new_name text) RETURNS integer
AS 'MODULE_PATHNAME', 'hx_move_window' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_move_window(text, text) IS
'The unfinished tasks of a renamed window follow it; returns how many';

CREATE FUNCTION _hybridexec.hx_isolate(ids bigint[]) RETURNS bigint[]
AS 'MODULE_PATHNAME', 'hx_isolate' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_isolate(bigint[]) IS
'Worker side: the tasks among ids that still wait (queued or failed) run alone next time (hx_task.isolated); returns them in id order';

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

/*
 * src/sql/cron.sql
 *
 * Part of the install script: cron schedules (parsed in src/cron.c) and
 * the pg_cron jobs that open windows, kept in sync with hx_window when
 * pg_cron is installed in this database.
 */

/* ------------------------------------------------------------------------
 * Cron schedules
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cron_next(schedule text, after timestamptz DEFAULT now(),
							 time_zone text DEFAULT 'UTC')
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'hx_cron_next' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION hx_cron_next(text, timestamptz, text) IS
'The first moment strictly after "after" that a cron schedule (5 fields or @hourly/@daily/@weekly/@monthly/@yearly) fires, read in time_zone; raises a clear error for bad cron text';

CREATE FUNCTION hx_cron_prev(schedule text, before timestamptz DEFAULT now(),
							 time_zone text DEFAULT 'UTC')
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'hx_cron_prev' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION hx_cron_prev(text, timestamptz, text) IS
'The last moment not after "before" that a cron schedule fired, read in time_zone (NULL if not within a year)';

/* the time zone pg_cron reads schedules in (GMT unless cron.timezone says otherwise) */
CREATE FUNCTION _hybridexec.hx_cron_time_zone() RETURNS text
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce(nullif(current_setting('cron.timezone', true), ''), 'GMT')
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_time_zone() IS
'The time zone window schedules are read in: pg_cron''s cron.timezone, GMT when unset';

CREATE FUNCTION _hybridexec.hx_cron_job_name(window_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'hybridexec window ' || window_name $$;

COMMENT ON FUNCTION _hybridexec.hx_cron_job_name(text) IS 'Name of the pg_cron job that opens a window';

CREATE FUNCTION _hybridexec.hx_cron_available() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	RETURN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_available() IS 'True when pg_cron is installed in this database';

/*
 * Keeps the job of one window in line with its row; SECURITY DEFINER so
 * that the jobs belong to the extension's owner whoever edits hx_window.
 */
CREATE FUNCTION _hybridexec.hx_cron_sync_window(old_name text, new_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	w hx_window;
	job bigint;
BEGIN
	IF NOT hx_cron_available() THEN
		/*
		 * Tell once, when the DBA can see it: CREATE EXTENSION runs its
		 * script with client_min_messages raised to warning.
		 */
		IF NOT EXISTS (SELECT 1 FROM hx_state WHERE key = 'pg_cron missing noticed')
		   AND current_setting('client_min_messages') IN ('debug5', 'debug4', 'debug3', 'debug2',
														   'debug1', 'log', 'notice') THEN
			INSERT INTO hx_state (key, value) VALUES ('pg_cron missing noticed', 'true')
			ON CONFLICT (key) DO NOTHING;
			RAISE NOTICE 'pg_cron is not installed in this database: batch windows will not open on their schedules'
				USING HINT = 'Run CREATE EXTENSION pg_cron (with pg_cron in shared_preload_libraries and cron.database_name set to this database), then SELECT hx_sync_cron(); or open windows yourself with SELECT hx_run_window(name). You are told this once.';
		END IF;
		RETURN;
	END IF;
	IF old_name IS NOT NULL AND old_name IS DISTINCT FROM new_name THEN
		FOR job IN EXECUTE 'SELECT jobid FROM cron.job WHERE jobname = $1'
				   USING hx_cron_job_name(old_name) LOOP
			PERFORM cron.unschedule(job);
		END LOOP;
	END IF;
	IF new_name IS NULL THEN
		RETURN;
	END IF;
	SELECT * INTO w FROM hx_window WHERE name = new_name;
	IF NOT FOUND OR NOT w.enabled THEN
		FOR job IN EXECUTE 'SELECT jobid FROM cron.job WHERE jobname = $1'
				   USING hx_cron_job_name(new_name) LOOP
			PERFORM cron.unschedule(job);
		END LOOP;
		RETURN;
	END IF;
	/* cron.schedule with a job name replaces the job of that name */
	PERFORM cron.schedule(hx_cron_job_name(w.name), w.schedule,
						  format('SELECT %I.hx_run_window(%L, %L)',
								 (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
								   WHERE e.extname = 'hybridexec'),
								 w.name, 'cron'));
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_sync_window(text, text) IS
'Creates, replaces or removes the pg_cron job of one window to match its hx_window row';

CREATE FUNCTION _hybridexec.hx_window_cron() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM hx_cron_sync_window(NULL, NEW.name);
	ELSIF TG_OP = 'UPDATE' THEN
		PERFORM hx_cron_sync_window(OLD.name, NEW.name);
	ELSE
		PERFORM hx_cron_sync_window(OLD.name, NULL);
	END IF;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_cron() IS 'Trigger: keeps the pg_cron job of each window in sync with hx_window';

CREATE FUNCTION hx_sync_cron() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	n integer := 0;
	job record;
	w record;
BEGIN
	IF NOT hx_cron_available() THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, and CREATE EXTENSION pg_cron.';
	END IF;
	/* jobs of windows that are gone or disabled */
	FOR job IN EXECUTE
		'SELECT jobid FROM cron.job j WHERE j.jobname LIKE ''hybridexec window %'' AND NOT EXISTS (
			SELECT 1 FROM ' || format('%I.hx_window', (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'hybridexec')) ||
		' w WHERE w.enabled AND j.jobname = ''hybridexec window '' || w.name)' LOOP
		PERFORM cron.unschedule(job.jobid);
	END LOOP;
	FOR w IN SELECT name FROM hx_window WHERE enabled ORDER BY name LOOP
		PERFORM hx_cron_sync_window(NULL, w.name);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

COMMENT ON FUNCTION hx_sync_cron() IS
'Recreates the pg_cron job of every enabled window and removes stale ones (run it after installing pg_cron); returns the number of jobs';
/*
 * src/sql/windows.sql
 *
 * Part of the install script: batch windows (hx_window), their validation,
 * the trigger that keeps their pg_cron jobs in sync, and the default
 * windows.  Runs of windows are in batch.sql.
 */

/* ------------------------------------------------------------------------
 * Batch windows
 * ------------------------------------------------------------------------ */

-- [storage]
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
	CONSTRAINT hx_window_name_check CHECK (name <> '' AND length(name) <= 200),
	CONSTRAINT hx_window_parallel_check CHECK (parallel BETWEEN 1 AND 32),
	CONSTRAINT hx_window_chunk_size_check CHECK (chunk_size > 0),
	CONSTRAINT hx_window_max_duration_check
		CHECK (max_duration > interval '0' AND max_duration <= interval '7 days'),
	CONSTRAINT hx_window_margin_check CHECK (margin BETWEEN interval '0' AND interval '1 day')
);
-- [/storage]

COMMENT ON TABLE hx_window IS 'Named batch windows: when batch-routed tasks run and in what chunks';
COMMENT ON COLUMN hx_window.name IS 'Window name (at most 200 characters), referenced by hx_rule.window_name; renaming a window carries its waiting tasks and its runs along';
COMMENT ON COLUMN hx_window.schedule IS 'When the window opens, in cron syntax (minute hour day-of-month month day-of-week)';
COMMENT ON COLUMN hx_window.max_duration IS 'A run stops at a chunk boundary once it has run this long (at most 7 days)';
COMMENT ON COLUMN hx_window.chunk_size IS 'Tasks per chunk; each chunk commits with its checkpoint';
COMMENT ON COLUMN hx_window.enabled IS 'A disabled window keeps its tasks queued';
COMMENT ON COLUMN hx_window.deadline IS 'Adaptive window: results are needed by this local time; the run starts early enough to finish margin before it (NULL = start on schedule)';
COMMENT ON COLUMN hx_window.margin IS 'Adaptive window: how long before the deadline the run should be finished (at most a day)';
COMMENT ON COLUMN hx_window.time_zone IS 'Time zone of deadline (NULL = hybridexec.time_zone); the schedule is in pg_cron''s time zone';
COMMENT ON COLUMN hx_window.parallel IS 'Batch workers a run of the window uses at once (each takes its own share of the tasks), at most hybridexec.batch_workers';
COMMENT ON COLUMN hx_window.opportunistic IS 'May start early while the stream path is idle, and yields at chunk boundaries as soon as stream work waits';
COMMENT ON COLUMN hx_window.description IS 'Free text for humans';

CREATE FUNCTION _hybridexec.hx_window_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NEW.schedule IS NULL THEN
		RAISE EXCEPTION 'hx_window "%": schedule must not be NULL', NEW.name
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Use five cron fields: minute hour day-of-month month day-of-week, e.g. ''0 2 * * *''.';
	END IF;
	/* raises a clear error naming the bad field */
	PERFORM hx_cron_next(NEW.schedule, now(), 'UTC');
	IF NEW.time_zone IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.time_zone) THEN
		RAISE EXCEPTION 'hx_window "%": unknown time zone "%"', NEW.name, NEW.time_zone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name from pg_timezone_names, such as ''Europe/Paris''.';
	END IF;
	IF NEW.margin IS NULL THEN
		NEW.margin := interval '15 minutes';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_check() IS 'Trigger: rejects hx_window rows whose schedule is not cron syntax or whose time zone is unknown';

CREATE TRIGGER hx_window_check BEFORE INSERT OR UPDATE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_check();

CREATE TRIGGER hx_window_cron AFTER INSERT OR UPDATE OR DELETE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_cron();

/*
 * Tasks and runs refer to a window by name: a rename carries them along, a
 * window that rules send tasks to or that tasks still wait for cannot go,
 * and neither can change while a run of it is under way (its batch workers
 * know it by name).  Rules follow a rename by their foreign key; deleting
 * a window they use is refused here first, with the rules named, rather
 * than by the foreign key's bare error.
 */
CREATE FUNCTION _hybridexec.hx_window_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	waiting bigint;
	rules text;
	nrules integer;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
		RETURN NEW;
	END IF;
	IF hx_window_open(OLD.name) THEN
		RAISE EXCEPTION 'window "%" is running', OLD.name
			USING ERRCODE = 'object_in_use',
				  HINT = format('Wait for its run to end (SELECT hx_wait_run(id) FROM hx_window_run WHERE window_name = %L AND status IN (''starting'', ''running'')), then try again.', OLD.name);
	END IF;
	IF TG_OP = 'DELETE' THEN
		SELECT count(*) INTO waiting FROM hx_task t
		 WHERE t.window_name = OLD.name AND t.route = 'batch'
		   AND t.status IN ('queued', 'failed', 'running');
		IF waiting > 0 THEN
			RAISE EXCEPTION 'window "%" still has % task(s) waiting for it', OLD.name, waiting
				USING ERRCODE = 'object_in_use',
					  HINT = format('Run it until they are done (SELECT hx_run_window(%L)), cancel them with hx_cancel(), or disable the window instead of deleting it.', OLD.name);
		END IF;
		SELECT string_agg(format('"%s"', r.name) || CASE WHEN r.enabled THEN '' ELSE ' (disabled)' END,
						  ', ' ORDER BY r.position, r.name),
			   count(*)
		  INTO rules, nrules
		  FROM hx_rule r WHERE r.window_name = OLD.name;
		IF nrules > 0 THEN
			RAISE EXCEPTION 'window "%" is used by %', OLD.name,
					CASE WHEN nrules = 1 THEN 'rule ' ELSE 'rules ' END || rules
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = 'Rules send batch tasks to a window by its name (hx_rule.window_name).',
					  HINT = format('Point the rules at another window (UPDATE hx_rule SET window_name = %s WHERE window_name = %L) or delete them first; or keep the window and disable it (UPDATE hx_window SET enabled = false WHERE name = %L).',
									coalesce((SELECT quote_literal(w.name) FROM hx_window w
											   WHERE w.name <> OLD.name ORDER BY NOT w.enabled, w.name LIMIT 1),
											 '''another window'''),
									OLD.name, OLD.name);
		END IF;
		RETURN OLD;
	END IF;
	PERFORM hx_move_window(OLD.name, NEW.name);
	UPDATE hx_window_run r SET window_name = NEW.name WHERE r.window_name = OLD.name;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_guard() IS
'Trigger: a renamed window takes its unfinished tasks and its runs along; a window that rules use (23503, naming them) or that tasks wait for cannot be deleted; neither while it runs';

CREATE TRIGGER hx_window_guard BEFORE UPDATE OF name OR DELETE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_guard();

/* ------------------------------------------------------------------------
 * The default policy of the design brief (after the triggers above, so
 * the default windows get their pg_cron jobs)
 * ------------------------------------------------------------------------ */

-- [storage]
INSERT INTO hx_window (name, schedule, max_duration, chunk_size, description) VALUES
	('fast', '*/5 * * * *', '5 minutes', 1000, 'Every five minutes: tasks needed within the hour'),
	('nightly', '0 2 * * *', '4 hours', 1000, 'Off-peak, discounted: everything that can wait');
-- [/storage]
/*
 * src/sql/prices.sql
 *
 * Part of the install script: the price catalog (hx_price, effective-dated,
 * and the hx_price_period multipliers), how an attempt is priced
 * (hx_price_rule, hx_price_at) and the validation of its rows.  The ledger
 * that books with it is in ledger.sql.
 */

/* ------------------------------------------------------------------------
 * Prices: the catalog behind hx_classify's est_cost and the hx_cost ledger
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_price (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	task_type		text REFERENCES hx_type (task_type) ON UPDATE CASCADE ON DELETE CASCADE,
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
-- [/storage]

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

-- [storage]
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
	CONSTRAINT hx_price_period_multiplier_check CHECK (multiplier > 0),
	CONSTRAINT hx_price_period_name_check CHECK (length(name) <= 200)
);
-- [/storage]

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


CREATE AGGREGATE _hybridexec.hx_product(numeric) (SFUNC = numeric_mul, STYPE = numeric);

COMMENT ON AGGREGATE _hybridexec.hx_product(numeric) IS 'Product of the values (NULL when there are none): how peak/off-peak multipliers combine';

/*
 * Inlinable (no SET clause, schema-qualified names): the ledger trigger
 * calls it for every finished attempt.
 */
CREATE FUNCTION _hybridexec.hx_price_rule(task_type text, route text, at timestamptz)
RETURNS TABLE (price_id bigint, unit_cost numeric, per_second numeric,
			   factor numeric, currency text)
LANGUAGE sql STABLE AS $$
	SELECT p.id, p.unit_cost, p.per_second,
		   CASE WHEN p.route <> $2 THEN 1 - p.batch_discount ELSE 1 END
		   * (SELECT coalesce(_hybridexec.hx_product(m.multiplier), 1)
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

COMMENT ON FUNCTION _hybridexec.hx_price_rule(text, text, timestamptz) IS
'The hx_price row that prices an attempt of this type on this route at that moment (type row beats default row; the route''s own row beats a stream row standing in for batch; latest valid_from wins) and the factor on it: hx_price_period multipliers, times (1 - batch_discount) when a stream row prices a batch attempt';

CREATE FUNCTION hx_price_at(task_type text, route text, at timestamptz DEFAULT now())
RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT r.unit_cost * r.factor FROM hx_price_rule(task_type, route, at) r
$$;

COMMENT ON FUNCTION hx_price_at(text, text, timestamptz) IS
'Cost of one attempt of this type on this route at that moment before per-second charges: unit_cost of hx_price_rule() times its factor (discount, peak/off-peak)';

/* ------------------------------------------------------------------------
 * Price catalog validation
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_price_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_price_check() IS 'Trigger: rejects invalid hx_price rows, and changes to prices that already priced booked attempts';

CREATE TRIGGER hx_price_check BEFORE INSERT OR UPDATE ON hx_price
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_price_check();

CREATE FUNCTION _hybridexec.hx_price_period_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_price_period_check() IS 'Trigger: rejects invalid hx_price_period rows with a clear error';

CREATE TRIGGER hx_price_period_check BEFORE INSERT OR UPDATE ON hx_price_period
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_price_period_check();
/*
 * src/sql/rules.sql
 *
 * Part of the install script: classification rules (hx_rule), their
 * validation, the invalidation of the per-backend cache of rules and types
 * (src/rules.c), the rule engine's SQL face (hx_decide, hx_classify), the
 * cost-benefit condition worth_streaming, and the default rules.
 */

/* ------------------------------------------------------------------------
 * Classification rules
 * ------------------------------------------------------------------------ */

-- [storage]
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
	description		text,
	CONSTRAINT hx_rule_name_check CHECK (length(name) <= 200),
	CONSTRAINT hx_rule_sla_check CHECK (min_sla <= interval '100 years' AND max_sla <= interval '100 years')
);

CREATE INDEX hx_rule_position_idx ON hx_rule (position, name);
-- [/storage]

COMMENT ON TABLE hx_rule IS
'Classification rules: enabled rules are tried in (position, name) order, the first whose conditions all hold decides the route; NULL conditions match anything';
COMMENT ON COLUMN hx_rule.name IS 'Unique rule name (at most 200 characters), reported by hx_classify() and stored on each task';
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

CREATE FUNCTION _hybridexec.hx_rule_check() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_rule_check() IS 'Trigger: rejects invalid hx_rule rows with a clear error';

CREATE TRIGGER hx_rule_check BEFORE INSERT OR UPDATE ON hx_rule
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_rule_check();

/*
 * Backends cache rules and types; any change to those tables sends a
 * relcache invalidation at commit so every backend reloads them.
 */
CREATE FUNCTION _hybridexec.hx_cache_invalidate() RETURNS trigger
AS 'MODULE_PATHNAME', 'hx_cache_invalidate' LANGUAGE C;

COMMENT ON FUNCTION _hybridexec.hx_cache_invalidate() IS 'Trigger: tells every backend to reload its cached rules and task types';

CREATE TRIGGER hx_rule_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_rule
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();
CREATE TRIGGER hx_type_invalidate AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hx_type
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cache_invalidate();

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
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT d.route, d.window_name, d.rule_name, d.reason,
		   hx_price_at(hx_classify.task_type, d.route, hx_classify.at)
	  FROM hx_decide(task_type, payload, sla, origin, priority, department,
					 dedupe_key, deadline, at) d
$$;

COMMENT ON FUNCTION hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'The decision hx_submit() would make for this task at that moment, with its estimated cost; queues nothing';

/* ------------------------------------------------------------------------
 * Cost-benefit routing
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_latency_value(task_type text, payload jsonb) RETURNS numeric
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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

COMMENT ON FUNCTION _hybridexec.hx_latency_value(text, jsonb) IS
'Value of an hour of latency for a task: the payload''s "latency_value" if given, else hx_type.latency_value (NULL = unknown)';

CREATE FUNCTION _hybridexec.hx_batch_wait(at timestamptz DEFAULT now()) RETURNS interval
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT min(hx_cron_next(w.schedule, at, hx_cron_time_zone())) - at
	  FROM hx_window w WHERE w.enabled
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_wait(timestamptz) IS
'How long a task submitted at "at" waits at least on the batch path: until the soonest scheduled start of an enabled window (NULL without windows)';

CREATE FUNCTION hx_worth_streaming(task_type text, payload jsonb DEFAULT '{}',
								   at timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce(hx_latency_value(task_type, payload)
					* extract(epoch FROM hx_batch_wait(at))::numeric / 3600
					> coalesce(hx_price_at(task_type, 'stream', at), 0)
					  - coalesce(hx_price_at(task_type, 'batch', at), 0),
					false)
$$;

COMMENT ON FUNCTION hx_worth_streaming(text, jsonb, timestamptz) IS
'True when the latency streaming saves (hx_batch_wait) is worth more (hx_latency_value per hour) than the extra unit cost of streaming at that moment; false when no latency value is known: what a rule with worth_streaming tests';

-- [storage]
INSERT INTO hx_rule (name, position, origin, max_sla, route, window_name, description) VALUES
	('user-initiated', 10, 'user', NULL, 'stream', NULL, 'Someone is waiting: run now'),
	('interactive-sla', 20, NULL, '5 seconds', 'stream', NULL, 'SLA under 5 seconds: run now'),
	('fast-batch', 30, NULL, '1 hour', 'batch', 'fast', 'SLA under 1 hour: next fast window'),
	('slow-batch', 1000, NULL, NULL, 'batch', 'nightly', 'Everything else: nightly off-peak window');
-- [/storage]
/*
 * src/sql/batch.sql
 *
 * Part of the install script: runs of batch windows.  hx_run_window()
 * records a run in hx_window_run and hands it to a batch worker (a dynamic
 * background worker, src/batch_worker.c), which runs the window's due tasks
 * in chunks, each committed with its row in hx_checkpoint.  Planning from
 * measured throughput, adaptive and opportunistic starts and escalation of
 * tasks their window would make late are here too; the scheduler
 * (src/scheduler.c) runs them.
 */

/* ------------------------------------------------------------------------
 * Runs and checkpoints
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_window_run (
	id				bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	window_name		text NOT NULL,
	status			text NOT NULL DEFAULT 'starting',
	started_by		text NOT NULL DEFAULT 'manual',
	requested_at	timestamptz NOT NULL DEFAULT now(),
	started_at		timestamptz,
	finished_at		timestamptz,
	processed		bigint NOT NULL DEFAULT 0,
	failed			bigint NOT NULL DEFAULT 0,
	chunks			integer NOT NULL DEFAULT 0,
	resumes			integer NOT NULL DEFAULT 0,
	overran			boolean NOT NULL DEFAULT false,
	expected_duration interval,
	worker_pid		integer,
	parts			integer NOT NULL DEFAULT 1,
	parts_stopped	text,
	last_error		text,
	CONSTRAINT hx_window_run_status_check
		CHECK (status IN ('starting', 'running', 'done', 'overran', 'yielded', 'failed')),
	CONSTRAINT hx_window_run_started_by_check
		CHECK (started_by IN ('manual', 'cron', 'adaptive', 'opportunistic'))
);

/* two runs of one window never overlap */
CREATE UNIQUE INDEX hx_window_run_active_idx ON hx_window_run (window_name)
	WHERE status IN ('starting', 'running');
CREATE INDEX hx_window_run_window_idx ON hx_window_run (window_name, id);
-- [/storage]

COMMENT ON TABLE hx_window_run IS 'One row per run of a batch window, from hx_run_window() (or the scheduler) to its end';
COMMENT ON COLUMN hx_window_run.id IS 'Run id, returned by hx_run_window()';
COMMENT ON COLUMN hx_window_run.window_name IS 'The window (hx_window.name)';
COMMENT ON COLUMN hx_window_run.status IS 'starting (waiting for a batch worker), running, done, overran (stopped at max_duration), yielded (opportunistic run gave way to stream work) or failed';
COMMENT ON COLUMN hx_window_run.started_by IS 'manual (hx_run_window by hand), cron (its pg_cron job), adaptive (started early for its deadline) or opportunistic (started early while the stream path was idle)';
COMMENT ON COLUMN hx_window_run.requested_at IS 'When the run was asked for';
COMMENT ON COLUMN hx_window_run.started_at IS 'When a batch worker first took the run';
COMMENT ON COLUMN hx_window_run.finished_at IS 'When the run ended';
COMMENT ON COLUMN hx_window_run.processed IS 'Tasks done in the run: by its batch workers, and by external executors that claimed them while it was open (counted when they complete them)';
COMMENT ON COLUMN hx_window_run.failed IS 'Failed attempts in the run, by its batch workers or by external executors (hx_fail, an expired lease); retried in a later run, or dead';
COMMENT ON COLUMN hx_window_run.chunks IS 'Chunks committed';
COMMENT ON COLUMN hx_window_run.resumes IS 'How often the run was resumed from its checkpoint after a crash or restart';
COMMENT ON COLUMN hx_window_run.overran IS 'The run reached max_duration and left tasks queued for the next run';
COMMENT ON COLUMN hx_window_run.expected_duration IS 'What the measured throughput predicted for the backlog when the run started (NULL without history)';
COMMENT ON COLUMN hx_window_run.worker_pid IS 'Process id of the batch worker running it (last one, after a resume)';
COMMENT ON COLUMN hx_window_run.parts IS 'Batch workers the run was handed to (the window''s parallel, as far as free workers allowed)';
COMMENT ON COLUMN hx_window_run.parts_stopped IS 'While a parallel run''s workers finish one by one: the most serious way one of them stopped so far (the last one ends the run with it)';
COMMENT ON COLUMN hx_window_run.last_error IS 'Why the run failed, if it did';

-- [storage]
CREATE TABLE hx_checkpoint (
	run_id			bigint NOT NULL REFERENCES hx_window_run (id) ON DELETE CASCADE,
	part			integer NOT NULL DEFAULT 0,
	chunk			integer NOT NULL,
	state			text NOT NULL DEFAULT 'started',
	task_type		text NOT NULL,
	task_ids		bigint[],
	last_task_id	bigint,
	processed		integer NOT NULL DEFAULT 0,
	failed			integer NOT NULL DEFAULT 0,
	started_at		timestamptz NOT NULL DEFAULT clock_timestamp(),
	committed_at	timestamptz,
	PRIMARY KEY (run_id, part, chunk),
	CONSTRAINT hx_checkpoint_state_check CHECK (state IN ('started', 'committed', 'recovered'))
);

CREATE INDEX hx_checkpoint_type_idx ON hx_checkpoint (task_type, committed_at)
	WHERE state = 'committed';
-- [/storage]

COMMENT ON TABLE hx_checkpoint IS
'One row per chunk of a window run: written (state started, with the chunk''s task ids) before the chunk runs, and marked committed in the chunk''s own transaction; a started row left by a crash tells the resumed run which tasks to retry one by one';
COMMENT ON COLUMN hx_checkpoint.run_id IS 'The run (hx_window_run.id)';
COMMENT ON COLUMN hx_checkpoint.part IS 'Which of the run''s batch workers took the chunk (0 to parts - 1); worker p takes the tasks whose id modulo parts is p';
COMMENT ON COLUMN hx_checkpoint.chunk IS 'Chunk number within the run''s part, from 1';
COMMENT ON COLUMN hx_checkpoint.state IS 'started (in flight, or interrupted when the run is resumed), committed, or recovered (its tasks were retried one by one after a crash)';
COMMENT ON COLUMN hx_checkpoint.task_type IS 'Every task of a chunk has this type';
COMMENT ON COLUMN hx_checkpoint.task_ids IS 'The chunk''s tasks while it is in flight (cleared when it commits)';
COMMENT ON COLUMN hx_checkpoint.last_task_id IS 'Last task of the chunk, in run order';
COMMENT ON COLUMN hx_checkpoint.processed IS 'Tasks of the chunk that are done';
COMMENT ON COLUMN hx_checkpoint.failed IS 'Tasks of the chunk whose attempt failed';
COMMENT ON COLUMN hx_checkpoint.started_at IS 'When the chunk was taken';
COMMENT ON COLUMN hx_checkpoint.committed_at IS 'When the chunk committed (with its tasks'' results and effects)';

/* ------------------------------------------------------------------------
 * Starting runs
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_launch_run(run_id bigint, parallel integer DEFAULT 1) RETURNS integer
AS 'MODULE_PATHNAME', 'hx_launch_run' LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_launch_run(bigint, integer) IS
'Worker side: hands a run to up to "parallel" batch workers that start when the calling transaction commits; returns how many (0 when the run already has workers or every batch worker is busy)';

CREATE FUNCTION _hybridexec.hx_preloaded() RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_preloaded' LANGUAGE C STABLE;

COMMENT ON FUNCTION _hybridexec.hx_preloaded() IS
'Whether hybridexec was loaded via shared_preload_libraries: without it no stream worker, batch worker or scheduler runs, and hx_run_window() and hx_submit() refuse to work';

CREATE FUNCTION hx_batch_workers(OUT slot integer, OUT pid integer,
								 OUT run_id bigint, OUT part integer, OUT parts integer,
								 OUT launched_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hx_batch_worker_slots' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_batch_workers() IS
'The batch worker slots of this server from shared memory: which run each serves (needs shared_preload_libraries)';

CREATE FUNCTION hx_run_window(name text, started_by text DEFAULT 'manual')
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	w hx_window;
	run bigint;
BEGIN
	IF name IS NULL THEN
		RAISE EXCEPTION 'window name must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass one of the names in hx_window.';
	END IF;
	SELECT * INTO w FROM hx_window x WHERE x.name = hx_run_window.name;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'unknown window "%"', name
			USING ERRCODE = 'undefined_object',
				  HINT = 'Use one of: ' || coalesce((SELECT string_agg(quote_literal(x.name), ', ' ORDER BY x.name)
													FROM hx_window x), 'none') || '.';
	END IF;
	IF NOT w.enabled THEN
		RAISE EXCEPTION 'window "%" is disabled', name
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = format('UPDATE hx_window SET enabled = true WHERE name = %L;', name);
	END IF;
	/* no batch worker can take the run without the preload: record none */
	IF NOT hx_preloaded() THEN
		RAISE EXCEPTION 'hx_run_window() needs hybridexec to be loaded via shared_preload_libraries'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add hybridexec to shared_preload_libraries in postgresql.conf and restart the server.';
	END IF;
	/* serialize runs of one window; the unique index is the last word */
	PERFORM pg_advisory_xact_lock(26744, hashtext(name));
	SELECT r.id INTO run FROM hx_window_run r
	 WHERE r.window_name = hx_run_window.name AND r.status IN ('starting', 'running');
	IF FOUND THEN
		RAISE NOTICE 'window "%" is already running as run %', name, run
			USING HINT = 'Two runs of one window never overlap; this call returns the running one.';
		RETURN run;
	END IF;
	INSERT INTO hx_window_run (window_name, started_by)
	VALUES (name, started_by) RETURNING id INTO run;
	IF hx_launch_run(run, w.parallel) = 0 THEN
		RAISE NOTICE 'every batch worker is busy: run % of window "%" starts when one is free', run, name
			USING HINT = 'Raise hybridexec.batch_workers (and max_worker_processes) to run more windows at once.';
	END IF;
	RETURN run;
END
$$;

COMMENT ON FUNCTION hx_run_window(text, text) IS
'Opens a window now: records a run and hands it to a batch worker, returning the run id at once (the running run''s id if the window is already running)';

CREATE FUNCTION hx_wait_run(run_id bigint, timeout interval DEFAULT '5 minutes') RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	st text;
	give_up timestamptz := clock_timestamp() + timeout;
BEGIN
	PERFORM hx_require_read_committed('hx_wait_run', 'run');
	LOOP
		SELECT r.status INTO st FROM hx_window_run r WHERE r.id = hx_wait_run.run_id;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'window run % does not exist', run_id
				USING ERRCODE = 'undefined_object',
					  HINT = 'Run ids are returned by hx_run_window() and listed in hx_window_run.';
		END IF;
		IF st NOT IN ('starting', 'running') OR clock_timestamp() >= give_up THEN
			RETURN st;
		END IF;
		PERFORM pg_sleep(0.02);
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_wait_run(bigint, interval) IS
'Waits until the window run has ended (done, overran, yielded or failed) or the timeout passes; returns its status then';

CREATE FUNCTION hx_window_open(name text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT EXISTS (SELECT 1 FROM hx_window_run r
					WHERE r.window_name = hx_window_open.name
					  AND r.status IN ('starting', 'running'))
$$;

COMMENT ON FUNCTION hx_window_open(text) IS
'True while a run of the window is starting or running: its tasks are being processed (and external executors may claim them)';

/* ------------------------------------------------------------------------
 * The batch worker's steps (src/batch_worker.c calls these)
 * ------------------------------------------------------------------------ */

/* task types the batch workers run themselves: they have a handler */
CREATE FUNCTION _hybridexec.hx_type_in_database(task_type text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = hx_type_in_database.task_type
					AND (y.handler IS NOT NULL OR y.batch_handler IS NOT NULL))
$$;

COMMENT ON FUNCTION _hybridexec.hx_type_in_database(text) IS
'True when the task type has an in-database handler or batch handler (else external executors run it)';

/*
 * The chunks a part of a run had taken but not committed (interrupted by a
 * crash, or failed as a whole): marked recovered, and their tasks that
 * still wait isolated (hx_task.isolated: run one by one) and returned.
 */
CREATE FUNCTION _hybridexec.hx_batch_recover(run_id bigint, part integer) RETURNS bigint[]
LANGUAGE sql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	WITH c AS (UPDATE hx_checkpoint c SET state = 'recovered', committed_at = clock_timestamp()
				WHERE c.run_id = hx_batch_recover.run_id AND c.part = hx_batch_recover.part
				  AND c.state = 'started'
			   RETURNING c.task_ids)
	SELECT hx_isolate(coalesce(array_agg(i), '{}')) FROM c, unnest(c.task_ids) i
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_recover(bigint, integer) IS
'Batch worker side: marks the started (uncommitted) checkpoints of a part of a run recovered, isolates their tasks that still wait and returns them, to be run one by one';

CREATE FUNCTION _hybridexec.hx_batch_begin(run_id bigint, worker_pid integer, part integer,
							   parts integer, live_pids integer[],
							   OUT window_name text, OUT chunk_size integer,
							   OUT max_duration_ms double precision,
							   OUT opportunistic boolean, OUT elapsed_ms double precision,
							   OUT suspects bigint[])
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	r hx_window_run;
	w hx_window;
	lost bigint[];
BEGIN
	SELECT * INTO r FROM hx_window_run x WHERE x.id = hx_batch_begin.run_id FOR UPDATE;
	IF NOT FOUND OR r.status NOT IN ('starting', 'running') THEN
		RETURN;
	END IF;
	SELECT * INTO w FROM hx_window x WHERE x.name = r.window_name;
	IF NOT FOUND THEN
		UPDATE hx_window_run x SET status = 'failed', finished_at = now(),
			   last_error = format('window %s no longer exists', r.window_name)
		 WHERE x.id = r.id;
		RETURN;
	END IF;

	/*
	 * Tasks of this window left running by a batch worker that is gone
	 * (runs of one window never overlap, so any is orphaned): their
	 * attempt counts; they are isolated (retried one by one), or dead.
	 */
	SELECT array_agg(t.id) INTO lost FROM (
		SELECT t.id FROM hx_task t
		 WHERE t.status = 'running' AND t.route = 'batch' AND t.window_name = r.window_name
		   AND (t.worker_pid IS NULL OR t.worker_pid <> ALL (live_pids))
		   AND hx_type_in_database(t.task_type)
		 FOR UPDATE OF t) t;
	PERFORM hx_put_back(coalesce(lost, '{}'), 'batch worker');
	/* chunks this run had taken when it was interrupted: their tasks are isolated too */
	PERFORM hx_batch_recover(r.id, hx_batch_begin.part);

	/*
	 * Every isolated task of the window runs alone before the chunks: those
	 * just isolated, and those a worker that was lost since did not get to.
	 */
	SELECT array_agg(t.id ORDER BY t.id) INTO suspects
	  FROM hx_task t
	 WHERE t.isolated AND t.status IN ('queued', 'failed')
	   AND t.route = 'batch' AND t.window_name = r.window_name;

	UPDATE hx_window_run x
	   SET status = 'running', started_at = coalesce(x.started_at, now()),
		   worker_pid = hx_batch_begin.worker_pid,
		   parts = CASE WHEN hx_batch_begin.part = 0 THEN hx_batch_begin.parts ELSE x.parts END,
		   resumes = x.resumes + CASE WHEN r.status = 'running' AND hx_batch_begin.part = 0
									  THEN 1 ELSE 0 END,
		   /* attempts of this run lost with its worker failed, too */
		   failed = x.failed + (SELECT count(*) FROM hx_task t
								 WHERE t.id = ANY (coalesce(lost, '{}')) AND t.run_id = r.id),
		   expected_duration = coalesce(x.expected_duration,
										(SELECT p.expected_duration FROM hx_window_plan(now()) p
										  WHERE p.window_name = r.window_name))
	 WHERE x.id = r.id
	RETURNING extract(epoch FROM now() - x.started_at) * 1000 INTO elapsed_ms;

	window_name := w.name;
	chunk_size := w.chunk_size;
	max_duration_ms := extract(epoch FROM w.max_duration) * 1000;
	opportunistic := w.opportunistic AND r.started_by = 'opportunistic';
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_begin(bigint, integer, integer, integer, integer[]) IS
'Batch worker side: takes a run (resuming it if it was interrupted), puts back tasks its window''s lost worker left running, and returns the window''s settings and the tasks to retry one by one';

/*
 * Planned like the workers' own statements (hx_execute_plan in
 * src/stmt.c): in index order whatever the statistics say.
 */
CREATE FUNCTION _hybridexec.hx_batch_next_chunk(run_id bigint, window_name text, chunk_size integer,
									part integer DEFAULT 0, parts integer DEFAULT 1)
RETURNS bigint[]
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off AS $$
DECLARE
	k record;
	have_key boolean;
	typ text;
	ids bigint[];
BEGIN
	/*
	 * Run order is the order of hx_task_batch_idx: type (a chunk is one
	 * type: handlers stay warm), higher priority, earlier deadline, age.
	 * Continue after the last task this run took, so the scan skips the
	 * index entries of tasks done meanwhile; only when nothing is left
	 * after it, look from the start again (tasks queued meanwhile ahead of
	 * it).
	 */
	SELECT c.task_type, -t.priority AS prio, coalesce(t.deadline, 'infinity'::timestamptz) AS dl,
		   t.id INTO k
	  FROM hx_checkpoint c JOIN hx_task t ON t.id = c.last_task_id
	 WHERE c.run_id = hx_batch_next_chunk.run_id AND c.part = hx_batch_next_chunk.part
	 ORDER BY c.chunk DESC LIMIT 1;
	have_key := FOUND;
	IF have_key THEN
		SELECT t.task_type INTO typ FROM hx_task t
		 WHERE t.window_name = hx_batch_next_chunk.window_name AND t.route = 'batch'
		   AND t.status IN ('queued', 'failed')
		   AND (t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id)
			   > (k.task_type, k.prio, k.dl, k.id)
		   AND t.run_after <= now() AND t.run_id IS DISTINCT FROM hx_batch_next_chunk.run_id
		   AND t.id % parts = hx_batch_next_chunk.part
		   AND hx_type_in_database(t.task_type)
		 ORDER BY t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id
		 LIMIT 1;
		have_key := FOUND AND typ = k.task_type;
	END IF;
	IF typ IS NULL THEN
		SELECT t.task_type INTO typ FROM hx_task t
		 WHERE t.window_name = hx_batch_next_chunk.window_name AND t.route = 'batch'
		   AND t.status IN ('queued', 'failed')
		   AND t.run_after <= now() AND t.run_id IS DISTINCT FROM hx_batch_next_chunk.run_id
		   AND t.id % parts = hx_batch_next_chunk.part
		   AND hx_type_in_database(t.task_type)
		 ORDER BY t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id
		 LIMIT 1;
		IF NOT FOUND THEN
			RETURN NULL;
		END IF;
		have_key := false;
	END IF;

	IF have_key THEN
		ids := ARRAY(SELECT t.id FROM hx_task t
				 WHERE t.window_name = hx_batch_next_chunk.window_name AND t.route = 'batch'
				   AND t.status IN ('queued', 'failed')
				   AND (t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id)
					   > (k.task_type, k.prio, k.dl, k.id)
				   AND t.task_type = typ
				   AND t.run_after <= now() AND t.run_id IS DISTINCT FROM hx_batch_next_chunk.run_id
		   AND t.id % parts = hx_batch_next_chunk.part
				 ORDER BY t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id
				 LIMIT chunk_size);
	ELSE
		ids := ARRAY(SELECT t.id FROM hx_task t
				 WHERE t.window_name = hx_batch_next_chunk.window_name AND t.route = 'batch'
				   AND t.status IN ('queued', 'failed')
				   AND t.task_type = typ
				   AND t.run_after <= now() AND t.run_id IS DISTINCT FROM hx_batch_next_chunk.run_id
		   AND t.id % parts = hx_batch_next_chunk.part
				 ORDER BY t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id
				 LIMIT chunk_size);
	END IF;
	INSERT INTO hx_checkpoint (run_id, part, chunk, task_type, task_ids, last_task_id)
	SELECT hx_batch_next_chunk.run_id, hx_batch_next_chunk.part, coalesce(max(c.chunk), 0) + 1,
		   typ, ids, ids[cardinality(ids)]
	  FROM hx_checkpoint c
	 WHERE c.run_id = hx_batch_next_chunk.run_id AND c.part = hx_batch_next_chunk.part;
	RETURN ids;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_next_chunk(bigint, text, integer, integer, integer) IS
'Batch worker side: picks the next chunk of a run''s part (due tasks of one type whose id modulo parts is part, by priority and deadline) and records it as a started checkpoint; NULL when nothing is left';

CREATE FUNCTION _hybridexec.hx_batch_chunk_done(run_id bigint, processed integer, failed integer,
									isolated boolean DEFAULT false, part integer DEFAULT 0)
RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NOT isolated THEN
		UPDATE hx_checkpoint c
		   SET state = 'committed', committed_at = clock_timestamp(), task_ids = NULL,
			   processed = hx_batch_chunk_done.processed, failed = hx_batch_chunk_done.failed
		 WHERE (c.run_id, c.part, c.chunk) =
			   (SELECT k.run_id, k.part, k.chunk FROM hx_checkpoint k
				 WHERE k.run_id = hx_batch_chunk_done.run_id AND k.part = hx_batch_chunk_done.part
				   AND k.state = 'started'
				 ORDER BY k.chunk LIMIT 1);
	END IF;
	UPDATE hx_window_run r
	   SET processed = r.processed + hx_batch_chunk_done.processed,
		   failed = r.failed + hx_batch_chunk_done.failed,
		   chunks = r.chunks + CASE WHEN isolated THEN 0 ELSE 1 END
	 WHERE r.id = hx_batch_chunk_done.run_id;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_chunk_done(bigint, integer, integer, boolean, integer) IS
'Batch worker side: marks the run''s chunk committed and adds to the run''s counters, in the chunk''s own transaction';

CREATE FUNCTION _hybridexec.hx_batch_external_pending(window_name text) RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	/* a task that already failed in the open run waits for the next one */
	SELECT EXISTS (SELECT 1 FROM hx_task t
					WHERE t.window_name = hx_batch_external_pending.window_name
					  AND t.route = 'batch' AND t.status IN ('queued', 'failed', 'running')
					  AND t.run_after <= now()
					  AND NOT hx_type_in_database(t.task_type)
					  AND (t.status <> 'failed'
						   OR t.run_id IS DISTINCT FROM
						   (SELECT max(r.id) FROM hx_window_run r
							 WHERE r.window_name = hx_batch_external_pending.window_name
							   AND r.status IN ('starting', 'running'))))
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_external_pending(text) IS
'True while the window has due tasks for external executors: the run keeps the window open for them (until max_duration)';

CREATE FUNCTION _hybridexec.hx_batch_finish(run_id bigint, status text, error text DEFAULT NULL,
								last boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	worst text;
	win text;
BEGIN
	/* a parallel run ends with the most serious way one of its workers stopped */
	SELECT CASE WHEN array_position(ARRAY['done', 'yielded', 'overran', 'failed'], hx_batch_finish.status)
					 >= coalesce(array_position(ARRAY['done', 'yielded', 'overran', 'failed'], r.parts_stopped), 0)
				THEN hx_batch_finish.status ELSE r.parts_stopped END,
		   r.window_name
	  INTO worst, win
	  FROM hx_window_run r WHERE r.id = hx_batch_finish.run_id;
	IF NOT last THEN
		UPDATE hx_window_run r
		   SET parts_stopped = worst, last_error = coalesce(hx_batch_finish.error, r.last_error)
		 WHERE r.id = hx_batch_finish.run_id;
		RETURN;
	END IF;
	UPDATE hx_window_run r
	   SET status = worst, finished_at = now(), overran = (worst = 'overran'), parts_stopped = NULL,
		   last_error = coalesce(hx_batch_finish.error, r.last_error)
	 WHERE r.id = hx_batch_finish.run_id;
	IF worst IN ('overran', 'failed') THEN
		PERFORM hx_alert_send(jsonb_build_object('event', 'window ' || worst, 'run_id', run_id,
												 'window', win, 'error', error));
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_batch_finish(bigint, text, text, boolean) IS
'Batch worker side: a worker of a run stopped (done, overran, yielded or failed); the last one ends the run with the most serious of its workers'' ways (overran and failed also NOTIFY hx_alert)';

/* ------------------------------------------------------------------------
 * Planning: measured throughput, backlog, next start, expected finish
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_type_throughput(task_type text) RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	/* tasks per second over the type's last 20 committed chunks */
	SELECT CASE WHEN sum(extract(epoch FROM c.committed_at - c.started_at)) > 0
				THEN sum(c.processed + c.failed) / sum(extract(epoch FROM c.committed_at - c.started_at))
		   END
	  FROM (SELECT * FROM hx_checkpoint k
			 WHERE k.task_type = hx_type_throughput.task_type AND k.state = 'committed'
			 ORDER BY k.committed_at DESC LIMIT 20) c
$$;

COMMENT ON FUNCTION hx_type_throughput(text) IS
'Batch throughput of a task type in tasks per second, measured over its last 20 committed chunks (NULL without history)';

CREATE FUNCTION hx_window_plan(at timestamptz DEFAULT now())
RETURNS TABLE (window_name text, next_start timestamptz, scheduled_start timestamptz,
			   start_reason text, backlog bigint, expected_duration interval,
			   expected_finish timestamptz, deadline_at timestamptz,
			   on_time boolean, running_run bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	w hx_window;
	tz text := hx_cron_time_zone();
	unknown text[];
	dur double precision;
	latest timestamptz;
BEGIN
	FOR w IN SELECT * FROM hx_window WHERE enabled ORDER BY name LOOP
		window_name := w.name;
		scheduled_start := hx_cron_next(w.schedule, at, tz);
		SELECT r.id INTO running_run FROM hx_window_run r
		 WHERE r.window_name = w.name AND r.status IN ('starting', 'running');

		/* backlog per type, and how long it takes at the measured rates */
		SELECT coalesce(sum(b.n), 0),
			   sum(b.n / hx_type_throughput(b.task_type)),
			   array_agg(b.task_type) FILTER (WHERE hx_type_throughput(b.task_type) IS NULL)
		  INTO backlog, dur, unknown
		  FROM (SELECT t.task_type, count(*) AS n FROM hx_task t
				 WHERE t.window_name = w.name AND t.route = 'batch'
				   AND t.status IN ('queued', 'failed')
				 GROUP BY t.task_type) b;
		expected_duration := CASE WHEN backlog = 0 THEN interval '0'
								  WHEN unknown IS NULL THEN make_interval(secs => dur) END;

		deadline_at := NULL;
		IF w.deadline IS NOT NULL THEN
			/* the first deadline after the scheduled start, in the window's zone */
			deadline_at := ((scheduled_start AT TIME ZONE coalesce(w.time_zone, current_setting('hybridexec.time_zone')))::date
							+ w.deadline) AT TIME ZONE coalesce(w.time_zone, current_setting('hybridexec.time_zone'));
			IF deadline_at <= scheduled_start THEN
				deadline_at := deadline_at + interval '1 day';
			END IF;
		END IF;

		next_start := scheduled_start;
		start_reason := 'schedule';
		IF running_run IS NOT NULL THEN
			next_start := at;
			start_reason := 'running';
		ELSIF w.deadline IS NOT NULL AND expected_duration IS NOT NULL THEN
			latest := deadline_at - w.margin - expected_duration;
			IF latest < scheduled_start THEN
				next_start := greatest(latest, at);
				start_reason := 'deadline';
			END IF;
		ELSIF w.deadline IS NOT NULL AND backlog > 0 THEN
			start_reason := 'schedule (no throughput measured yet for ' || array_to_string(unknown, ', ') || ')';
		END IF;
		expected_finish := next_start + expected_duration;
		on_time := CASE WHEN deadline_at IS NULL THEN NULL
						ELSE expected_finish <= deadline_at - w.margin END;
		RETURN NEXT;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_window_plan(timestamptz) IS
'For each enabled window as of "at": when it starts next and why (its schedule, or earlier for its deadline), its backlog, the duration the measured throughput predicts, the expected finish and whether that meets the deadline minus margin';

/* ------------------------------------------------------------------------
 * The scheduler's share of the maintenance
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_relaunch_runs() RETURNS integer
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	r record;
	n integer := 0;
BEGIN
	/* runs without a live batch worker: new ones, or interrupted by a crash */
	FOR r IN SELECT x.id, w.parallel FROM hx_window_run x JOIN hx_window w ON w.name = x.window_name
			  WHERE x.status IN ('starting', 'running') ORDER BY x.id LOOP
		n := n + hx_launch_run(r.id, r.parallel);
	END LOOP;
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_relaunch_runs() IS
'Scheduler step: hands runs left without a batch worker (a crash, a restart, no free worker) to batch workers; returns how many workers it started';

CREATE FUNCTION _hybridexec.hx_stream_idle() RETURNS boolean
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT NOT EXISTS (SELECT 1 FROM hx_task t
						WHERE t.status IN ('queued', 'failed', 'running') AND t.route = 'stream')
$$;

COMMENT ON FUNCTION _hybridexec.hx_stream_idle() IS 'True when no stream task is waiting or running';

CREATE FUNCTION _hybridexec.hx_window_start_early() RETURNS integer
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	p record;
	w hx_window;
	n integer := 0;
	tz text := hx_cron_time_zone();
BEGIN
	FOR p IN SELECT * FROM hx_window_plan(now()) LOOP
		CONTINUE WHEN p.running_run IS NOT NULL OR p.backlog = 0;
		SELECT * INTO w FROM hx_window WHERE name = p.window_name;
		/* adaptive: the plan says start now to meet the deadline */
		IF p.start_reason = 'deadline' AND p.next_start <= now()
		   AND NOT EXISTS (SELECT 1 FROM hx_window_run r WHERE r.window_name = w.name
							 AND r.requested_at >= coalesce(hx_cron_prev(w.schedule, now(), tz), '-infinity')) THEN
			PERFORM hx_run_window(w.name, 'adaptive');
			n := n + 1;
		/* opportunistic: nothing streams, so use the idle workers now */
		ELSIF w.opportunistic AND hx_stream_idle()
		   AND NOT EXISTS (SELECT 1 FROM hx_window_run r WHERE r.window_name = w.name
							 AND r.status = 'yielded' AND r.finished_at > now() - interval '5 seconds') THEN
			PERFORM hx_run_window(w.name, 'opportunistic');
			n := n + 1;
		END IF;
	END LOOP;
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_start_early() IS
'Starts windows before their schedule: adaptive ones whose deadline needs it, opportunistic ones while the stream path is idle; returns how many';

CREATE FUNCTION _hybridexec.hx_escalate() RETURNS integer
AS 'MODULE_PATHNAME', 'hx_escalate' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_escalate() IS
'Scheduler step: moves batch tasks whose window would finish after their deadline (or SLA) to the stream path now, saying so in reason and escalated_at (except tasks a budget_exhausted rule routed); returns how many';
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
	submitted_by	regrole,
	CONSTRAINT hx_cost_outcome_check CHECK (outcome IN ('done', 'failed', 'dead', 'correction'))
);

/* bookings arrive in time order: a BRIN index costs the ledger trigger next to nothing */
CREATE INDEX hx_cost_at_idx ON hx_cost USING brin (at) WITH (pages_per_range = 32);
CREATE INDEX hx_cost_correction_idx ON hx_cost (correction_of) WHERE correction_of IS NOT NULL;
-- [/storage]

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

CREATE TRIGGER hx_cost_append_only BEFORE UPDATE OR DELETE ON hx_cost
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_cost_append_only();
CREATE TRIGGER hx_cost_no_truncate BEFORE TRUNCATE ON hx_cost
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cost_append_only();

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
						 rule_name, department, origin, executor, submitted_by, currency, cost,
						 baseline_cost, batch_cost, reported, correction_of, note)
	VALUES (c.at, c.task_id, c.attempt, 'correction', c.task_type, c.route, c.window_name, c.run_id,
			c.rule_name, c.department, c.origin, c.executor, c.submitted_by, c.currency,
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
 * The ledger trigger: one INSERT ... SELECT per hx_task UPDATE statement.
 * A finished attempt is a row whose new status is done, failed or dead and
 * whose status or attempt count changed: stream workers (running -> ...),
 * batch chunk bookings (queued/failed -> done, many rows, one shared
 * started_at), lost workers (running -> dead) and external executors.
 */
CREATE FUNCTION _hybridexec.hx_cost_book() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
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
			   n.department, n.origin, n.executor, n.submitted_by, n.submitted_at, n.sla, n.deadline,
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
							 rule_name, department, origin, executor, submitted_by, submitted_at, sla,
							 deadline, wait_seconds, wall_seconds, latency_seconds, price_id, currency,
							 cost, baseline_cost, batch_cost, reported)
		SELECT p.fin_at, p.id, p.attempts, p.status, p.task_type, p.route, p.window_name, p.run_id,
			   p.rule_name, p.department, p.origin, p.executor, p.submitted_by, p.submitted_at, p.sla,
			   p.deadline,
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

COMMENT ON FUNCTION _hybridexec.hx_cost_book() IS
'Statement trigger on hx_task: books every attempt the statement finished into hx_cost (catalog or reported cost, stream baseline, batch alternative) and adds it to hx_stat_minute and hx_cost_daily; SECURITY DEFINER, so whoever finishes a task (a worker, an executor''s role) needs no rights on the books';

CREATE TRIGGER hx_cost_book AFTER UPDATE ON hx_task
	REFERENCING OLD TABLE AS hx_cost_old NEW TABLE AS hx_cost_new
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_cost_book();

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
				round(coalesce(sum(c.wall_seconds), 0)::numeric, 3)
		   FROM hx_cost c
		  WHERE c.at >= $1 AND c.at < $2
		  GROUP BY 1, 2
		  ORDER BY 1, 2', key)
	USING "from", "to";
END
$$;

COMMENT ON FUNCTION hx_cost_report(text, timestamptz, timestamptz) IS
'Costs booked in [from, to) grouped by department, task_type, route, window, executor, rule, day or hour (local days in hybridexec.time_zone): tasks, attempts, cost, stream baseline, saved against it (exact sums of the bookings), run seconds (to the millisecond); one row per group and currency';

CREATE FUNCTION hx_stats(span interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, route text, queued bigint, running bigint, failed bigint,
			   done bigint, dead bigint, oldest_queued interval,
			   per_min_1 numeric, per_min_5 numeric, per_min_15 numeric,
			   error_rate numeric,
			   wait_p50_ms numeric, wait_p95_ms numeric, wait_p99_ms numeric,
			   run_p50_ms numeric, run_p95_ms numeric, run_p99_ms numeric)
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
		   round(hx_hist_percentile(m.run_hist, 0.99)::numeric, 1)
	  FROM l FULL JOIN m ON m.task_type = l.task_type AND m.route = l.route
	 ORDER BY 1, 2
$$;

COMMENT ON FUNCTION hx_stats(interval) IS
'Per task type and route: unfinished tasks now (queued, running, failed = waiting for a retry) and the age of the oldest queued one; over the last span from hx_stat_minute: done and dead attempts, error rate, percentiles of queue wait and run time; done per minute over the last 1, 5 and 15 minutes';

CREATE VIEW hx_stats AS SELECT * FROM hx_stats('1 hour');

COMMENT ON VIEW hx_stats IS 'hx_stats() over the last hour';
COMMENT ON COLUMN hx_stats.task_type IS 'Task type';
COMMENT ON COLUMN hx_stats.route IS 'stream or batch';
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
COMMENT ON COLUMN hx_window_history.run_id IS 'The run (hx_window_run.id)';
COMMENT ON COLUMN hx_window_history.window_name IS 'The window';
COMMENT ON COLUMN hx_window_history.status IS 'starting, running, done, overran, yielded or failed';
COMMENT ON COLUMN hx_window_history.started_by IS 'manual, cron, adaptive or opportunistic';
COMMENT ON COLUMN hx_window_history.started_at IS 'When a batch worker first took the run (NULL while it waits for one)';
COMMENT ON COLUMN hx_window_history.finished_at IS 'When the run ended (NULL while it runs)';
COMMENT ON COLUMN hx_window_history.duration IS 'How long the run took, or has taken so far';
COMMENT ON COLUMN hx_window_history.expected_duration IS 'What the measured throughput predicted when the run started (NULL without history)';
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
		hint := 'SELECT id, last_error FROM hx_task WHERE status = ''dead''; fix the cause, then resubmit them.';
		RETURN NEXT;
	END LOOP;

	/* workers: none at all without the preload */
	IF NOT hx_preloaded() THEN
		problem := 'workers not running'; severity := 'critical'; subject := 'shared_preload_libraries';
		detail := 'hybridexec is not loaded via shared_preload_libraries: no stream worker, batch worker or scheduler runs on this server, hx_submit() and hx_run_window() fail, and no alert is sent';
		hint := format('Add hybridexec to shared_preload_libraries in postgresql.conf (keeping what is listed there, such as pg_cron), set hybridexec.database_name = %L, and restart the server.',
					   current_database());
		RETURN NEXT;
	ELSIF current_database() = current_setting('hybridexec.database_name', true) THEN
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
'One row per current problem with severity and hint: stream backlog older than hybridexec.alert_backlog_age, window overran or missed its schedule (the hint names the likely cause from pg_cron''s records), a window''s pg_cron job failing or missing, tasks waiting for a window that does not exist, failure rate above hybridexec.alert_failure_rate, dead tasks, workers not running (the library not preloaded, stream workers or scheduler down), scheduler steps failing, pg_cron missing, budget exhausted';

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
			   all_batch_p95_s numeric, latency_cut_pct numeric)
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
		   /* seconds to the millisecond, not as float arithmetic leaves them */
		   lat.n, round(lat.p50::numeric, 3), round(lat.p95::numeric, 3),
		   round(lat.b50::numeric, 3), round(lat.b95::numeric, 3),
		   CASE WHEN lat.b50 > 0 THEN round((100 * (lat.b50 - lat.p50) / lat.b50)::numeric, 1) END
	  FROM money m CROSS JOIN lat
	 ORDER BY m.currency;
END
$$;

COMMENT ON FUNCTION hx_savings(timestamptz, timestamptz, text) IS
'For bookings in [from, to): actual cost against all-stream (the baselines) and all-batch (batch_cost), saved and saved % (overall and for non-user tasks); and the latency interactive (origin user) tasks saw, p50/p95 in seconds (to the millisecond), against all-batch: waiting for the next start of batch_window (NULL = the catch-all rule''s window) after submission, plus their run time';

CREATE FUNCTION hx_advise("from" timestamptz DEFAULT now() - interval '7 days',
						  "to" timestamptz DEFAULT now(),
						  urgent interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, currency text, tasks bigint, streamed_share numeric, urgent_share numeric,
			   sla_met_share numeric, p95_latency_s numeric, cost numeric,
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
		SELECT f.task_type, f.currency, count(*) AS n,
			   count(*) FILTER (WHERE f.route = 'stream') AS streamed,
			   count(*) FILTER (WHERE f.needs_now) AS urgent_n,
			   count(*) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable,
			   count(*) FILTER (WHERE least(f.sla, f.deadline - f.submitted_at) IS NOT NULL) AS with_sla,
			   count(*) FILTER (WHERE f.latency_seconds <= extract(epoch FROM least(f.sla, f.deadline - f.submitted_at))) AS met,
			   percentile_cont(0.95) WITHIN GROUP (ORDER BY f.latency_seconds) AS p95,
			   sum(f.cost) AS cost,
			   sum(f.batch_cost) AS all_batch,
			   sum(f.cost - f.batch_cost) FILTER (WHERE f.route = 'stream' AND NOT f.needs_now) AS movable_cost
		  FROM f GROUP BY f.task_type, f.currency
	)
	SELECT a.task_type, a.currency, a.n,
		   round(a.streamed::numeric / a.n, 3),
		   round(a.urgent_n::numeric / a.n, 3),
		   CASE WHEN a.with_sla > 0 THEN round(a.met::numeric / a.with_sla, 3) END,
		   round(a.p95::numeric, 3), a.cost, a.all_batch,
		   round(coalesce(a.movable_cost, 0) / days, 4),
		   round(a.urgent_n::numeric / a.n, 3),
		   CASE
			 WHEN a.movable > 0 AND coalesce(a.movable_cost, 0) > 0 THEN
				format('type %s: %s%% of streamed tasks (%s of %s) had SLAs of %s or more, or none, and no user waiting; routing them to window %s would save %s %s per day',
					   a.task_type, round(100.0 * a.movable / a.streamed), a.movable, a.streamed, urgent,
					   coalesce(win.window_name, hx_catch_all_window()), round(a.movable_cost / days, 2),
					   a.currency)
			 WHEN a.with_sla > 0 AND a.met::numeric / a.with_sla < 0.95 THEN
				format('type %s: only %s%% of tasks with an SLA met it; route more of them to stream, or add workers',
					   a.task_type, round(100.0 * a.met / a.with_sla))
			 ELSE
				format('type %s: routing matches what was needed (%s%% streamed, %s%% urgent); nothing to change',
					   a.task_type, round(100.0 * a.streamed / a.n), round(100.0 * a.urgent_n / a.n))
		   END
	  FROM agg a LEFT JOIN win ON win.task_type = a.task_type
	 ORDER BY a.task_type, a.currency;
END
$$;

COMMENT ON FUNCTION hx_advise(timestamptz, timestamptz, interval) IS
'Per task type and currency, from the tasks finished in [from, to): share streamed, share that needed it (user origin or SLA/deadline under "urgent"), share of SLAs met, p95 latency (seconds, to the millisecond), cost against all-batch, what moving the streamed tasks nobody needed at once would save per day (in that currency), the break-even share of real-time work (= the urgent share: streaming more pays for latency nobody needed) and a plain recommendation naming the currency';
/*
 * src/sql/executors.sql
 *
 * Part of the install script: external executors (hx_claim leases,
 * hx_complete, hx_fail, hx_heartbeat, lease reclaim, batch files).
 *
 * An external executor (hx_worker, or any libpq program) claims tasks of
 * types without an in-database handler.  Every claim is an attempt (counted
 * at once, as for the in-database workers) with a lease: a random token and
 * an expiry.  hx_complete, hx_fail and hx_heartbeat must present the token
 * of the current attempt before the lease expires; a late or stale
 * executor gets an error and never overwrites a newer attempt.  Expired
 * leases are reclaimed by the scheduler with the same retry rules as
 * failed handler calls.
 */

/* what the lease reclaim looks at */
-- [storage]
CREATE INDEX hx_task_lease_idx ON hx_task (lease_expires_at)
	WHERE status = 'running' AND lease_expires_at IS NOT NULL;
-- [/storage]

/* ------------------------------------------------------------------------
 * Claiming
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_claim_check(task_types text[], route text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	bad text;
	claim_route text := route;
	claim_types text[] := task_types;
BEGIN
	IF claim_route IS NOT NULL AND claim_route NOT IN ('stream', 'batch') THEN
		RAISE EXCEPTION 'unknown route "%"', claim_route
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'route must be ''stream'', ''batch'' or NULL (both).';
	END IF;
	IF claim_types IS NOT NULL THEN
		SELECT string_agg(quote_literal(coalesce(n, 'NULL')), ', ') INTO bad
		  FROM unnest(claim_types) n
		 WHERE n IS NULL OR NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = n);
		IF bad IS NOT NULL THEN
			RAISE EXCEPTION 'unknown task type %', bad
				USING ERRCODE = 'undefined_object',
					  HINT = 'Register it first: SELECT hx_register(''name'') registers a type for external executors.';
		END IF;
		SELECT string_agg(quote_literal(n), ', ') INTO bad
		  FROM unnest(claim_types) n
		 WHERE hx_type_in_database(n);
		IF bad IS NOT NULL THEN
			RAISE EXCEPTION 'task type % has an in-database handler', bad
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  HINT = 'The hybridexec workers run it; only types registered without handler and batch_handler are claimable.';
		END IF;
	END IF;
END
$$;

COMMENT ON FUNCTION hx_claim_check(text[], text) IS
'External executors: raises a clear error unless every task type exists and has no in-database handler and the route is stream, batch or NULL (hx_claim checks this; hx_worker checks its flags with it before its first claim)';

/*
 * What hx_claim returns: a type of its own, so that the output column
 * "route" may share its name with hx_claim's route argument.
 */
CREATE TYPE hx_claimed AS (
	id				bigint,
	task_type		text,
	payload			jsonb,
	attempt			integer,
	max_attempts	integer,
	lease_token		uuid,
	lease_expires_at timestamptz,
	route			text,
	window_name		text,
	run_id			bigint,
	priority		integer,
	deadline		timestamptz,
	submitted_at	timestamptz
);

COMMENT ON TYPE hx_claimed IS
'A task handed to an external executor by hx_claim: its attempt number (already counted), the lease token to present and when the lease expires';
COMMENT ON COLUMN hx_claimed.id IS 'Task id (hx_task.id): pass it to hx_complete, hx_fail and hx_heartbeat';
COMMENT ON COLUMN hx_claimed.task_type IS 'Task type';
COMMENT ON COLUMN hx_claimed.payload IS 'The task''s input';
COMMENT ON COLUMN hx_claimed.attempt IS 'This attempt''s number (1 = first), already counted';
COMMENT ON COLUMN hx_claimed.max_attempts IS 'Attempts the type allows; after the last one a failure makes the task dead';
COMMENT ON COLUMN hx_claimed.lease_token IS 'The lease: present it to hx_complete, hx_fail and hx_heartbeat';
COMMENT ON COLUMN hx_claimed.lease_expires_at IS 'Report or send a heartbeat before this, or the attempt is reclaimed as failed';
COMMENT ON COLUMN hx_claimed.route IS 'stream or batch';
COMMENT ON COLUMN hx_claimed.window_name IS 'The window of a batch task (NULL for stream)';
COMMENT ON COLUMN hx_claimed.run_id IS 'The open run of that window the task was claimed in (hx_window_run.id); its completion or failure counts in the run';
COMMENT ON COLUMN hx_claimed.priority IS 'The task''s priority (higher first)';
COMMENT ON COLUMN hx_claimed.deadline IS 'When the result is needed by, if the task has a deadline';
COMMENT ON COLUMN hx_claimed.submitted_at IS 'When the task was submitted';

CREATE FUNCTION hx_claim(executor text,
						 task_types text[] DEFAULT NULL,
						 route text DEFAULT NULL,
						 max integer DEFAULT 1,
						 lease interval DEFAULT '5 minutes')
RETURNS SETOF hx_claimed
AS 'MODULE_PATHNAME', 'hx_claim' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_claim(text, text[], text, integer, interval) IS
'External executors: claims up to max due tasks of types without an in-database handler (FOR UPDATE SKIP LOCKED; batch tasks only while their window is open, once per run), counts the attempt and returns each with a lease token that hx_complete, hx_fail and hx_heartbeat must present before lease_expires_at (a lease is at most 7 days)';

/* ------------------------------------------------------------------------
 * Checking a lease
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_lease_check(id bigint, lease_token uuid) RETURNS hx_task
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	t hx_task;
BEGIN
	IF id IS NULL OR lease_token IS NULL THEN
		RAISE EXCEPTION 'task id and lease token must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass the id and lease_token that hx_claim() returned.';
	END IF;
	SELECT * INTO t FROM hx_task x WHERE x.id = hx_lease_check.id FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'task % does not exist', id USING ERRCODE = 'undefined_object';
	END IF;
	IF t.lease_token IS DISTINCT FROM hx_lease_check.lease_token THEN
		RAISE EXCEPTION 'task % is not leased with this token', id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('The task is %s, attempt %s%s.', t.status, t.attempts,
								  CASE WHEN t.executor IS NOT NULL
									   THEN ', last claimed by ' || quote_literal(t.executor) ELSE '' END),
				  HINT = 'The lease expired and the task was claimed again (or it was never yours); drop this result.';
	END IF;
	IF t.status <> 'running' THEN
		RAISE EXCEPTION 'task % is already %', id, t.status
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = CASE WHEN t.status IN ('failed', 'dead')
							  THEN 'The lease expired (or the attempt was reported) before this call; drop this result.'
							  ELSE 'Each attempt is finished once; drop this result.' END;
	END IF;
	IF t.lease_expires_at < clock_timestamp() THEN
		RAISE EXCEPTION 'lease of task % has expired', id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  DETAIL = format('It expired at %s.', t.lease_expires_at),
				  HINT = 'Call hx_heartbeat() more often than the lease length, or claim with a longer lease; the task will be retried.';
	END IF;
	RETURN t;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_lease_check(bigint, uuid) IS
'Executor side: locks the task and raises a clear error unless it is running under this lease token and the lease has not expired';

CREATE FUNCTION _hybridexec.hx_fail_leased(ids bigint[], error text, sqlstate text,
										   retry boolean, cost numeric, hint text)
RETURNS TABLE (id bigint, status text)
AS 'MODULE_PATHNAME', 'hx_fail_leased' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_fail_leased(bigint[], text, text, boolean, numeric, text) IS
'Executor side: books failed external attempts of tasks the caller has locked (an hx_error row each; retried with backoff, in the next window run, or dead; a task that cannot be booked is set aside)';

/* ------------------------------------------------------------------------
 * Reporting
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_complete(id bigint, lease_token uuid, result jsonb, cost numeric DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	PERFORM hx_lease_check(id, lease_token);
	IF cost < 0 THEN
		RAISE EXCEPTION 'cost must not be negative, not %', cost
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report what the attempt cost, or NULL to book the catalog price.';
	END IF;
	IF (SELECT c.status FROM hx_complete_many(ARRAY[hx_complete.id], ARRAY[hx_complete.lease_token],
											 ARRAY[hx_complete.result], ARRAY[hx_complete.cost]) c) <> 'done' THEN
		RAISE EXCEPTION 'task % could not be completed', id
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'The server log says why; the lease expires and the attempt is booked as failed.';
	END IF;
END
$$;

COMMENT ON FUNCTION hx_complete(bigint, uuid, jsonb, numeric) IS
'External executors: the attempt under this lease succeeded; stores the result and the cost it reported (NULL = the catalog price is booked) and counts the task in the processed of its window run, if any. Errors when the lease is stale or expired';

CREATE FUNCTION hx_complete_many(ids bigint[], lease_tokens uuid[], results jsonb[] DEFAULT NULL,
								 costs numeric[] DEFAULT NULL)
RETURNS TABLE (id bigint, status text)
AS 'MODULE_PATHNAME', 'hx_complete_many' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_complete_many(bigint[], uuid[], jsonb[], numeric[]) IS
'External executors: hx_complete for many attempts in one statement (results NULL = {}; completed tasks of a window run count in its processed, in the same transaction); returns done, or refused for a stale or expired lease or a negative cost (the others are still completed)';

CREATE FUNCTION hx_fail(id bigint, lease_token uuid, error text, retry boolean DEFAULT true,
						cost numeric DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	PERFORM hx_lease_check(id, lease_token);
	IF error IS NULL OR error = '' THEN
		RAISE EXCEPTION 'error must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Say what went wrong; it is stored in hx_error and hx_task.last_error.';
	END IF;
	IF cost < 0 THEN
		RAISE EXCEPTION 'cost must not be negative, not %', cost
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report what the attempt cost, or NULL to book the catalog price.';
	END IF;
	RETURN (SELECT f.status FROM hx_fail_leased(ARRAY[id], error, '38000',
												coalesce(retry, true), cost,
												'Reported by the executor.') f);
END
$$;

COMMENT ON FUNCTION hx_fail(bigint, uuid, text, boolean, numeric) IS
'External executors: the attempt under this lease failed (hx_error row, SQLSTATE 38000; counted in the failed of its window run, if any); the task is retried like a failed handler call, or dead when retry is false or no attempt is left. Returns the new status';

CREATE FUNCTION _hybridexec.hx_lease_args_check(ids bigint[], lease_tokens uuid[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF ids IS NULL OR lease_tokens IS NULL
	   OR cardinality(ids) <> cardinality(lease_tokens) THEN
		RAISE EXCEPTION 'ids and lease_tokens must be arrays of the same length'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass one lease token (from hx_claim) per task id, in the same order.';
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_lease_args_check(bigint[], uuid[]) IS
'Executor side: raises a clear error unless there is one lease token per task id';

CREATE FUNCTION _hybridexec.hx_check_lease(lease interval) RETURNS void
AS 'MODULE_PATHNAME', 'hx_check_lease_sql' LANGUAGE C IMMUTABLE;

COMMENT ON FUNCTION _hybridexec.hx_check_lease(interval) IS
'Raises a clear error unless the lease (how long an executor may hold a task) is positive and at most 7 days: what hx_claim and hx_heartbeat accept';

CREATE FUNCTION hx_heartbeat(ids bigint[], lease_tokens uuid[], lease interval DEFAULT '5 minutes')
RETURNS TABLE (id bigint, lease_expires_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
#variable_conflict use_column
DECLARE
	i integer;
BEGIN
	PERFORM hx_lease_args_check(ids, lease_tokens);
	PERFORM hx_check_lease(hx_heartbeat.lease);
	/* in id order, so that concurrent heartbeats never deadlock */
	FOR i IN SELECT o FROM generate_subscripts(ids, 1) o ORDER BY ids[o] LOOP
		PERFORM hx_lease_check(ids[i], lease_tokens[i]);
	END LOOP;
	RETURN QUERY
	UPDATE hx_task t SET lease_expires_at = clock_timestamp() + hx_heartbeat.lease
	 WHERE t.id = ANY (ids)
	RETURNING t.id, t.lease_expires_at;
END
$$;

COMMENT ON FUNCTION hx_heartbeat(bigint[], uuid[], interval) IS
'External executors: extends the leases of the tasks (one token per id) to now + lease; errors, extending none, when any lease is stale or expired';

/* ------------------------------------------------------------------------
 * Reclaiming expired leases
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_reclaim_leases() RETURNS integer
AS 'MODULE_PATHNAME', 'hx_reclaim_leases' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_reclaim_leases() IS
'Books every running external attempt whose lease has expired as failed (''lease expired'', SQLSTATE 57014; same retry rules; counted in the failed of its window run, if any); returns how many. The scheduler calls it every tick; callable by hand';


/* ------------------------------------------------------------------------
 * Batch files (hx_worker --batch)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_result_cost(result jsonb, cost_field text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF cost_field IS NULL OR jsonb_typeof(result) <> 'object' OR NOT result ? cost_field THEN
		RETURN NULL;
	END IF;
	RETURN (result->>cost_field)::numeric;
EXCEPTION WHEN invalid_text_representation THEN
	RAISE WARNING 'cost field "%" of a result is not a number: %', cost_field, result->>cost_field
		USING HINT = 'The catalog price is booked instead.';
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION hx_result_cost(jsonb, text) IS
'Executor side (hx_worker --cost-field): the number in that field of a result object, NULL (with a warning) when absent or not a number';

CREATE FUNCTION hx_batch_report(ids bigint[], lease_tokens uuid[], output text,
								cost_field text DEFAULT NULL)
RETURNS TABLE (id bigint, status text, error text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
#variable_conflict use_column
DECLARE
	parsed jsonb[];
	line text;
	n integer := 0;
	bad text;
	msg text;
	i integer;
	ok_ids bigint[];
	ok_tokens uuid[];
	ok_results jsonb[];
	ok_costs numeric[];
	bad_ids bigint[];
	bad_tokens uuid[];
	bad_errors text[];
BEGIN
	PERFORM hx_lease_args_check(ids, lease_tokens);

	/* the lines as JSON: all at once, or line by line when one is not JSON */
	BEGIN
		SELECT coalesce(array_agg(x.l::jsonb ORDER BY x.n), '{}') INTO parsed
		  FROM regexp_split_to_table(coalesce(output, ''), E'\n') WITH ORDINALITY AS x (l, n)
		 WHERE btrim(x.l, E' \t\r') <> '';
	EXCEPTION WHEN invalid_text_representation THEN
		parsed := '{}';
		FOR line IN SELECT l FROM regexp_split_to_table(output, E'\n') l LOOP
			n := n + 1;
			CONTINUE WHEN btrim(line, E' \t\r') = '';
			BEGIN
				parsed := parsed || line::jsonb;
			EXCEPTION WHEN invalid_text_representation THEN
				RAISE WARNING 'output line % is not JSON: %', n, SQLERRM;
			END;
		END LOOP;
	END;
	IF EXISTS (SELECT 1 FROM unnest(parsed) p WHERE jsonb_typeof(p) <> 'object' OR NOT p ? 'custom_id') THEN
		RAISE WARNING '% output lines have no custom_id',
			(SELECT count(*) FROM unnest(parsed) p WHERE jsonb_typeof(p) <> 'object' OR NOT p ? 'custom_id');
	END IF;
	SELECT string_agg(quote_literal(p->>'custom_id'), ', ') INTO bad
	  FROM unnest(parsed) p
	 WHERE jsonb_typeof(p) = 'object' AND p ? 'custom_id'
	   AND NOT (p->>'custom_id') = ANY (ids::text[]);
	IF bad IS NOT NULL THEN
		RAISE WARNING 'output has lines for unknown custom_id %', bad;
	END IF;

	/*
	 * Each task with its line, or why it failed; no temporary table: this
	 * function runs as the extension's owner, and a temporary object of
	 * the caller's must never be what it writes to.
	 */
	SELECT array_agg(b.id ORDER BY b.id) FILTER (WHERE b.error IS NULL),
		   array_agg(b.token ORDER BY b.id) FILTER (WHERE b.error IS NULL),
		   array_agg(b.line->'result' ORDER BY b.id) FILTER (WHERE b.error IS NULL),
		   array_agg(coalesce(hx_result_cost(b.line->'result', cost_field),
							  hx_result_cost(b.line, cost_field)) ORDER BY b.id) FILTER (WHERE b.error IS NULL),
		   array_agg(b.id ORDER BY b.id) FILTER (WHERE b.error IS NOT NULL),
		   array_agg(b.token ORDER BY b.id) FILTER (WHERE b.error IS NOT NULL),
		   array_agg(b.error ORDER BY b.id) FILTER (WHERE b.error IS NOT NULL)
	  INTO ok_ids, ok_tokens, ok_results, ok_costs, bad_ids, bad_tokens, bad_errors
	  FROM (SELECT u.id, u.token, l.line,
				   CASE WHEN l.line IS NULL THEN 'no line for this task in the output of the batch command'
						WHEN l.line ? 'error' AND l.line->'error' <> 'null'
						THEN CASE WHEN jsonb_typeof(l.line->'error') = 'string' THEN l.line->>'error'
								  ELSE (l.line->'error')::text END
						WHEN NOT l.line ? 'result'
						THEN 'the output line for this task has neither "result" nor "error"' END AS error
			  FROM unnest(ids, lease_tokens) AS u (id, token)
			  LEFT JOIN (SELECT DISTINCT ON (p->>'custom_id') p->>'custom_id' AS cid, p AS line
						   FROM unnest(parsed) WITH ORDINALITY AS x (p, n)
						  WHERE jsonb_typeof(p) = 'object' AND p ? 'custom_id'
						  ORDER BY p->>'custom_id', n) l ON l.cid = u.id::text) b;

	/* the results in one statement */
	RETURN QUERY
	SELECT c.id, c.status,
		   CASE WHEN c.status = 'refused' THEN 'the lease is stale or expired, or the cost negative' END
	  FROM hx_complete_many(ok_ids, ok_tokens, ok_results, ok_costs) c;

	/* the failures one by one, each with its own message */
	FOR i IN 1 .. coalesce(cardinality(bad_ids), 0) LOOP
		BEGIN
			id := bad_ids[i]; status := hx_fail(bad_ids[i], bad_tokens[i], bad_errors[i]); error := bad_errors[i];
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
			id := bad_ids[i]; status := 'refused'; error := msg;
		END;
		RETURN NEXT;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_batch_report(bigint[], uuid[], text, text) IS
'Executor side (hx_worker --batch): reads a JSONL output of {"custom_id", "result"} or {"custom_id", "error"} lines and completes or fails each claimed task; a task without a line fails, unknown ids and bad lines are warnings; a stale lease is reported as status refused for that task only; completions and failures of a window run''s tasks count in its processed and failed';
/*
 * src/sql/attach.sql
 *
 * Part of the install script: watched tables (hx_attach, hx_backfill,
 * hx_detach).
 *
 * What runs on a user's table runs as that table's owner, in a
 * security-restricted operation with search_path = pg_catalog, pg_temp
 * (_hybridexec.hx_exec_as_owner, src/attach.c): the filter, the reading
 * of rows by hx_backfill and the write-back of results.  So a trigger the
 * owner adds to the table, or a function its filter calls, never runs
 * with more rights than the owner's, whoever inserts the row or
 * completes the task.  The filter is one expression, checked when the
 * table is attached without running it.
 */

/* ------------------------------------------------------------------------
 * Watched tables (hx_attach)
 *
 * A row trigger on the user's table submits a task per inserted (and,
 * optionally, updated) row; hx_task_source remembers which row a task came
 * from, so that a result can be written back into the row, in the same
 * transaction as the completion, by a trigger on hx_task that exists only
 * while some attachment writes results back.
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_attachment (
	source			regclass PRIMARY KEY,
	task_type		text NOT NULL,
	columns			text[],
	on_update		boolean NOT NULL DEFAULT false,
	filter			text,
	result_column	text,
	key_columns		text[] NOT NULL,
	sla				interval,
	origin			text NOT NULL DEFAULT 'background',
	backfill_after	jsonb,
	backfill_done	boolean NOT NULL DEFAULT false,
	attached_at		timestamptz NOT NULL DEFAULT now(),
	attached_by		regrole NOT NULL
);
-- [/storage]

COMMENT ON TABLE hx_attachment IS 'Watched tables: each row of source becomes a task of task_type (hx_attach); removed by hx_detach or when the table is dropped';
COMMENT ON COLUMN hx_attachment.source IS 'The watched table';
COMMENT ON COLUMN hx_attachment.task_type IS 'Type of the tasks its rows become';
COMMENT ON COLUMN hx_attachment.columns IS 'Columns that make up the payload; NULL = the whole row (without result_column)';
COMMENT ON COLUMN hx_attachment.on_update IS 'Whether an update that changes the payload submits another task';
COMMENT ON COLUMN hx_attachment.filter IS 'Only rows for which this boolean expression over the row''s columns is true become tasks (evaluated as the table''s owner, search_path pg_catalog); NULL = all';
COMMENT ON COLUMN hx_attachment.result_column IS 'Column the result of a done task is written into, as the table''s owner (json and jsonb columns take it as is, others as jsonb_populate_record converts it); NULL = no write-back';
COMMENT ON COLUMN hx_attachment.key_columns IS 'The primary key of source, which hx_task_source records per task';
COMMENT ON COLUMN hx_attachment.sla IS 'SLA passed to hx_submit for each row';
COMMENT ON COLUMN hx_attachment.origin IS 'Origin passed to hx_submit for each row (hx_backfill uses ''backfill'')';
COMMENT ON COLUMN hx_attachment.backfill_after IS 'Primary key of the last row hx_backfill turned into a task (it resumes after it)';
COMMENT ON COLUMN hx_attachment.backfill_done IS 'Whether hx_backfill went through the whole table';
COMMENT ON COLUMN hx_attachment.attached_by IS 'The role that attached the table: its rows'' tasks are submitted by it';
COMMENT ON COLUMN hx_attachment.attached_at IS 'When hx_attach was called';

-- [storage]
CREATE TABLE hx_task_source (
	task_id			bigint PRIMARY KEY,
	source			regclass NOT NULL,
	source_key		jsonb NOT NULL
);

CREATE INDEX hx_task_source_key_idx ON hx_task_source (source, source_key);
-- [/storage]

/* turned over with the queue (see hx_task in queue.sql) */
ALTER TABLE hx_task_source SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);

COMMENT ON TABLE hx_task_source IS 'Which row of a watched table each of its tasks came from';
COMMENT ON COLUMN hx_task_source.task_id IS 'The task (hx_task.id)';
COMMENT ON COLUMN hx_task_source.source IS 'The watched table';
COMMENT ON COLUMN hx_task_source.source_key IS 'Primary key of the row, as a JSON object of its columns';

CREATE FUNCTION _hybridexec.hx_qualified_name(rel regclass) RETURNS text
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT format('%I.%I', n.nspname, c.relname)
	  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	 WHERE c.oid = rel
$$;

COMMENT ON FUNCTION _hybridexec.hx_qualified_name(regclass) IS
'The schema-qualified, quoted name of a table, whatever the search_path';

CREATE FUNCTION _hybridexec.hx_exec_as_owner(rel regclass, query text, a jsonb, b jsonb)
RETURNS SETOF jsonb
AS 'MODULE_PATHNAME', 'hx_exec_as_owner' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_exec_as_owner(regclass, text, jsonb, jsonb) IS
'Runs query ($1 = a, $2 = b) as the owner of rel, in a security-restricted operation with search_path = pg_catalog, pg_temp; returns the first column of each row it returns (jsonb)';

CREATE FUNCTION _hybridexec.hx_check_filter(rel regclass, filter text) RETURNS void
AS 'MODULE_PATHNAME', 'hx_check_filter' LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_check_filter(regclass, text) IS
'Raises a clear error unless filter is one boolean expression over the columns of rel (parsed and analysed as its owner would run it, never executed)';

CREATE FUNCTION _hybridexec.hx_attach_payload(a hx_attachment, row_data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT CASE WHEN a.columns IS NULL
				THEN CASE WHEN a.result_column IS NULL THEN row_data ELSE row_data - a.result_column END
				ELSE (SELECT coalesce(jsonb_object_agg(c, row_data->c), '{}') FROM unnest(a.columns) c) END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_payload(hx_attachment, jsonb) IS
'The payload of a watched row: its chosen columns (or all but the result column)';

CREATE FUNCTION _hybridexec.hx_attach_submit(a hx_attachment, row_data jsonb, origin text) RETURNS bigint
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	task bigint;
BEGIN
	task := hx_submit_as(a.attached_by, a.task_type, hx_attach_payload(a, row_data), a.sla, origin);
	INSERT INTO hx_task_source (task_id, source, source_key)
	SELECT task, a.source, jsonb_object_agg(k, row_data->k) FROM unnest(a.key_columns) k
	ON CONFLICT (task_id) DO NOTHING;
	RETURN task;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_submit(hx_attachment, jsonb, text) IS
'Submits the task of one watched row, on behalf of the role that attached the table, and records which row it came from';

CREATE FUNCTION _hybridexec.hx_attach_passes(a hx_attachment, row_data jsonb) RETURNS boolean
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF a.filter IS NULL THEN
		RETURN true;
	END IF;
	RETURN (SELECT x::text::boolean
			  FROM hx_exec_as_owner(a.source,
					format('SELECT to_jsonb(EXISTS (SELECT 1 FROM jsonb_populate_record(NULL::%s, $1) r WHERE (%s)))',
						   hx_qualified_name(a.source), E'\n' || a.filter || E'\n'),
					row_data, NULL) x);
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_passes(hx_attachment, jsonb) IS
'Whether a row (as JSON) passes the filter of its attachment, evaluated as the table''s owner';

/*
 * SECURITY DEFINER: whoever inserts into a watched table needs no right on
 * hybridexec's objects; the filter still runs as the table's owner.
 */
CREATE FUNCTION _hybridexec.hx_attach_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	a hx_attachment;
BEGIN
	SELECT * INTO a FROM hx_attachment x WHERE x.source = TG_RELID::regclass;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE'
	   AND hx_attach_payload(a, to_jsonb(NEW)) IS NOT DISTINCT FROM hx_attach_payload(a, to_jsonb(OLD)) THEN
		RETURN NULL;			/* e.g. the write-back of a result */
	END IF;
	IF a.filter IS NOT NULL AND NOT hx_attach_passes(a, to_jsonb(NEW)) THEN
		RETURN NULL;
	END IF;
	PERFORM hx_attach_submit(a, to_jsonb(NEW), a.origin);
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_row() IS
'Trigger on watched tables: submits a task for the new (or changed) row when it passes the filter';

CREATE FUNCTION _hybridexec.hx_attach_write_back() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	a hx_attachment;
	k jsonb;
	qn text;
	keys text;
BEGIN
	SELECT s.source_key INTO k FROM hx_task_source s WHERE s.task_id = NEW.id;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	SELECT * INTO a FROM hx_attachment x
	 WHERE x.source = (SELECT s.source FROM hx_task_source s WHERE s.task_id = NEW.id);
	IF NOT FOUND OR a.result_column IS NULL THEN
		RETURN NULL;
	END IF;
	qn := hx_qualified_name(a.source);
	keys := (SELECT string_agg(format('%I', c), ', ') FROM unnest(a.key_columns) c);
	/*
	 * As the table's owner (its triggers too); a row that cannot take the
	 * result (column renamed, type mismatch, a trigger that fails) must not
	 * block the completion: the result stays in hx_task, and the completing
	 * session gets a warning.
	 */
	BEGIN
		PERFORM hx_exec_as_owner(a.source,
			format('UPDATE %1$s AS t SET %2$I = (jsonb_populate_record(NULL::%1$s, $1)).%2$I '
				   'WHERE (%3$s) = (SELECT %3$s FROM jsonb_populate_record(NULL::%1$s, $2) k) '
				   'RETURNING to_jsonb(true)',
				   qn, a.result_column, keys),
			jsonb_build_object(a.result_column, NEW.result), k);
	EXCEPTION WHEN OTHERS THEN
		RAISE WARNING 'could not write a result back into %: %', a.source, SQLERRM
			USING DETAIL = format('Task %s is done all the same.', NEW.id),
				  HINT = 'The result is in hx_task.result; check hx_attachment.result_column, and the table owner''s triggers: write-back runs as the table''s owner.';
	END;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_write_back() IS
'Trigger on hx_task (present while an attachment has a result_column): writes the result of a done task into the row of the watched table it came from, as the table''s owner, in the same transaction (a row that cannot take it gets a warning, the completion stands)';

/* the write-back trigger on hx_task exists only while it has work */
CREATE FUNCTION _hybridexec.hx_attach_sync_write_back() RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	wanted boolean := EXISTS (SELECT 1 FROM hx_attachment WHERE result_column IS NOT NULL);
	present boolean := EXISTS (SELECT 1 FROM pg_trigger
								WHERE tgrelid = 'hx_task'::regclass AND tgname = 'hx_attach_write_back');
BEGIN
	IF wanted AND NOT present THEN
		CREATE TRIGGER hx_attach_write_back AFTER UPDATE OF status ON hx_task
			FOR EACH ROW WHEN (NEW.status = 'done' AND OLD.status IS DISTINCT FROM 'done')
			EXECUTE FUNCTION _hybridexec.hx_attach_write_back();
	ELSIF present AND NOT wanted THEN
		DROP TRIGGER hx_attach_write_back ON hx_task;
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_sync_write_back() IS
'Creates the write-back trigger on hx_task when an attachment has a result_column, drops it when none has';

/*
 * Creates (or re-creates) the trigger on a watched table that turns its
 * rows into tasks, from its hx_attachment row.  Also what an update of the
 * extension calls for every watched table, since the trigger's function is
 * re-created with the rest of the code.
 */
CREATE FUNCTION _hybridexec.hx_attach_trigger(src regclass) RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	a hx_attachment;
	watched text[];
BEGIN
	SELECT * INTO STRICT a FROM hx_attachment x WHERE x.source = src;
	/* updates fire only for the payload's columns, never for the result's */
	SELECT array_agg(quote_ident(t.attname::text) ORDER BY t.attnum) INTO watched
	  FROM pg_attribute t
	 WHERE t.attrelid = src AND t.attnum > 0 AND NOT t.attisdropped
	   AND (a.columns IS NULL OR t.attname = ANY (a.columns))
	   AND t.attname IS DISTINCT FROM a.result_column;
	IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = src AND tgname = 'hx_attach') THEN
		EXECUTE format('DROP TRIGGER hx_attach ON %s', hx_qualified_name(src));
	END IF;
	EXECUTE format('CREATE TRIGGER hx_attach AFTER INSERT%s ON %s FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_attach_row()',
				   CASE WHEN a.on_update THEN ' OR UPDATE OF ' || array_to_string(watched, ', ') ELSE '' END,
				   hx_qualified_name(src));
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_trigger(regclass) IS
'(Re-)creates the trigger of a watched table from its hx_attachment row: inserts (and, with on_update, updates of the payload''s columns) submit tasks';

/*
 * Trigger (AFTER INSERT OR DELETE on hx_attachment, per statement): keeps
 * the write-back trigger in line however the rows came (a restore loads
 * them with COPY).
 */
CREATE FUNCTION _hybridexec.hx_attachment_changed() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	PERFORM hx_attach_sync_write_back();
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attachment_changed() IS
'Trigger: creates or drops the write-back trigger on hx_task when watched tables come and go, also when a restore loads them';

CREATE TRIGGER hx_attachment_changed AFTER INSERT OR DELETE ON hx_attachment
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_attachment_changed();

/* the caller must own the table (be a member of its owning role) */
CREATE FUNCTION _hybridexec.hx_attach_owner_check(src regclass) RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NOT pg_has_role(hx_caller(), (SELECT c.relowner FROM pg_class c WHERE c.oid = src), 'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table %', src
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Attach, detach or backfill a table as its owner (or a member of the owning role).';
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_owner_check(regclass) IS
'Raises a clear error unless the caller of the API function (hx_caller()) owns the table';

CREATE FUNCTION _hybridexec.hx_attach(source regclass, task_type text, columns text[],
									  on_update boolean, filter text, result_column text,
									  sla interval, origin text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	src regclass := hx_attach.source;
	keys text[];
	bad text;
BEGIN
	IF src IS NULL OR task_type IS NULL THEN
		RAISE EXCEPTION 'source and task_type must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'For example: SELECT hx_attach(''tickets'', ''summarize'').';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = src AND c.relkind IN ('r', 'p')) THEN
		RAISE EXCEPTION '"%" is not a table', src
			USING ERRCODE = 'wrong_object_type',
				  HINT = 'Only ordinary and partitioned tables can be watched.';
	END IF;
	PERFORM hx_attach_owner_check(src);
	/* what the rows will be submitted with passes hx_submit's own checks */
	PERFORM hx_decide(task_type, '{}', sla, coalesce(origin, 'background'));
	IF EXISTS (SELECT 1 FROM hx_attachment x WHERE x.source = src) THEN
		RAISE EXCEPTION 'table % is already attached', src
			USING ERRCODE = 'duplicate_object',
				  HINT = 'Call hx_detach() first to attach it differently.';
	END IF;
	SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
	  FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k (attnum, ord), pg_attribute a
	 WHERE i.indrelid = src AND i.indisprimary
	   AND a.attrelid = src AND a.attnum = k.attnum;
	IF keys IS NULL THEN
		RAISE EXCEPTION 'table % has no primary key', src
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'hybridexec remembers each task''s row by its primary key: ALTER TABLE ... ADD PRIMARY KEY (...).';
	END IF;
	SELECT string_agg(quote_ident(c), ', ') INTO bad
	  FROM unnest(coalesce(columns, '{}') || coalesce(ARRAY[result_column], '{}')) c
	 WHERE c IS NULL OR NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = src
									 AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
	IF bad IS NOT NULL THEN
		RAISE EXCEPTION 'table % has no column %', src, bad
			USING ERRCODE = 'undefined_column',
				  HINT = 'columns and result_column name columns of the watched table.';
	END IF;
	IF result_column = ANY (keys) OR result_column = ANY (columns) THEN
		RAISE EXCEPTION 'result column "%" is part of the payload or the primary key', result_column
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Write results into a column of their own.';
	END IF;
	IF filter IS NOT NULL THEN
		BEGIN
			PERFORM hx_check_filter(src, filter);
		EXCEPTION WHEN OTHERS THEN
			RAISE EXCEPTION 'invalid filter for table %: %', src, SQLERRM
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'The filter is one boolean expression over the table''s columns, such as priority = ''urgent''; it runs as the table''s owner with search_path pg_catalog, so qualify your own functions.';
		END;
	END IF;

	INSERT INTO hx_attachment (source, task_type, columns, on_update, filter, result_column,
							   key_columns, sla, origin, attached_by)
	VALUES (src, task_type, columns, coalesce(on_update, false), filter, result_column,
			keys, sla, coalesce(origin, 'background'), hx_caller());

	PERFORM hx_attach_trigger(src);
	PERFORM hx_attach_sync_write_back();
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach(regclass, text, text[], boolean, text, text, interval, text) IS
'Implementation of hx_attach(): the caller (hx_caller()) must own the table; its rows'' tasks are submitted by the caller';

CREATE FUNCTION hx_attach(source regclass,
						  task_type text,
						  columns text[] DEFAULT NULL,
						  on_update boolean DEFAULT false,
						  filter text DEFAULT NULL,
						  result_column text DEFAULT NULL,
						  sla interval DEFAULT NULL,
						  origin text DEFAULT 'background')
RETURNS void
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_attach(regclass, text, text[], boolean, text, text, interval, text) IS
'Watches a table (the caller must own it): each inserted row (and, with on_update, each row whose payload changes) that passes filter becomes a task of task_type whose payload is the row (or columns); with result_column, the result of a done task is written into its row as the table''s owner';

CREATE FUNCTION _hybridexec.hx_detach(source regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM hx_attachment x WHERE x.source = hx_detach.source) THEN
		RAISE EXCEPTION 'table % is not attached', source
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT source FROM hx_attachment lists the watched tables.';
	END IF;
	PERFORM hx_attach_owner_check(source);
	EXECUTE format('DROP TRIGGER IF EXISTS hx_attach ON %s', hx_qualified_name(source));
	DELETE FROM hx_task_source s WHERE s.source = hx_detach.source;
	DELETE FROM hx_attachment x WHERE x.source = hx_detach.source;
	PERFORM hx_attach_sync_write_back();
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_detach(regclass) IS
'Implementation of hx_detach(): the caller (hx_caller()) must own the table';

CREATE FUNCTION hx_detach(source regclass) RETURNS void
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_detach(regclass) IS
'Stops watching a table (the caller must own it): removes its trigger and registration (tasks already queued still run, their results are no longer written back)';

CREATE FUNCTION _hybridexec.hx_backfill(source regclass, chunk integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	a hx_attachment;
	keys text;
	qn text;
	r record;
	n integer := 0;
	last_key jsonb;
BEGIN
	IF chunk IS NULL OR chunk < 1 THEN
		RAISE EXCEPTION 'chunk must be at least 1'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Rows are turned into tasks this many at a time, such as 10000.';
	END IF;
	SELECT * INTO a FROM hx_attachment x WHERE x.source = hx_backfill.source FOR UPDATE;
	IF NOT FOUND THEN
		RAISE EXCEPTION 'table % is not attached', source
			USING ERRCODE = 'undefined_object',
				  HINT = 'Call hx_attach() first.';
	END IF;
	PERFORM hx_attach_owner_check(source);
	keys := (SELECT string_agg(format('%I', c), ', ') FROM unnest(a.key_columns) c);
	qn := hx_qualified_name(a.source);
	/* the rows, and whether each passes the filter, read as the table's owner */
	FOR r IN SELECT x->'row' AS row_data, (x->>'pass')::boolean AS pass
			   FROM hx_exec_as_owner(a.source, format(
					'SELECT jsonb_build_object(''row'', to_jsonb(t), ''pass'', coalesce((%s), false)) '
					'FROM %s t %s ORDER BY %s LIMIT %s',
					CASE WHEN a.filter IS NULL THEN 'true' ELSE E'\n' || a.filter || E'\n' END,
					qn,
					CASE WHEN a.backfill_after IS NULL THEN ''
						 ELSE format('WHERE (%s) > (SELECT %s FROM jsonb_populate_record(NULL::%s, $1))',
									 keys, keys, qn) END,
					keys, chunk),
					a.backfill_after, NULL) x
	LOOP
		n := n + 1;
		last_key := (SELECT jsonb_object_agg(k, r.row_data->k) FROM unnest(a.key_columns) k);
		/* rows that already have a task (inserted since hx_attach) are skipped */
		IF r.pass AND NOT EXISTS (SELECT 1 FROM hx_task_source s
								   WHERE s.source = a.source AND s.source_key = last_key) THEN
			PERFORM hx_attach_submit(a, r.row_data, 'backfill');
		END IF;
	END LOOP;
	UPDATE hx_attachment x
	   SET backfill_after = coalesce(last_key, x.backfill_after),
		   backfill_done = last_key IS NULL
	 WHERE x.source = a.source;
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_backfill(regclass, integer) IS
'Implementation of hx_backfill(): the caller (hx_caller()) must own the table; its rows are read as the table''s owner';

CREATE FUNCTION hx_backfill(source regclass, chunk integer DEFAULT 10000) RETURNS integer
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_backfill(regclass, integer) IS
'Goes through up to chunk existing rows of an attached table (after the last one done, in primary-key order) and turns those that pass the filter and have no task yet into tasks with origin ''backfill'' (the rules classify them); returns how many rows it went through: call again until it returns 0 (hx_attachment.backfill_done). The caller must own the table';

/*
 * A dropped watched table takes its registration with it.  SECURITY
 * DEFINER: any role may drop its own tables, without rights on ours.
 */
CREATE FUNCTION _hybridexec.hx_attach_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	DELETE FROM hx_task_source s
	 USING pg_event_trigger_dropped_objects() d
	 WHERE d.object_type = 'table' AND s.source = d.objid;
	DELETE FROM hx_attachment x
	 USING pg_event_trigger_dropped_objects() d
	 WHERE d.object_type = 'table' AND x.source = d.objid;
	IF FOUND THEN
		PERFORM hx_attach_sync_write_back();
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_dropped() IS
'Event trigger: forgets the attachments of dropped tables';

CREATE EVENT TRIGGER hx_attach_dropped ON sql_drop
	WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION _hybridexec.hx_attach_dropped();

COMMENT ON EVENT TRIGGER hx_attach_dropped IS
'Forgets the attachments (and task sources) of dropped watched tables';
/*
 * src/sql/restore.sql
 *
 * Part of the install script: what pg_dump and pg_restore need.  Every
 * table of the extension is configuration in pg_dump's sense, so its rows
 * (and its sequences' positions) are dumped; a restore first runs CREATE
 * EXTENSION, which inserts the rows the extension ships (the default
 * rules, windows and price), then loads the dumped rows.
 *
 * Shipped rows: the install script remembers each as installed (hx_state
 * key 'shipped <table> <key>').  A row inserted with the key of a shipped
 * row that is still as installed replaces it instead of colliding: so the
 * dumped version of a default - changed by the DBA or not - takes the
 * place of the fresh one.  Deleting a shipped row leaves a tombstone
 * (hx_state key 'removed <table> <key>', dumped), and loading a tombstone
 * deletes the fresh row again, so a default the DBA removed stays
 * removed.
 */

/* ------------------------------------------------------------------------
 * Shipped rows
 * ------------------------------------------------------------------------ */

/* the key column of a table with shipped rows: hx_state names rows by it */
CREATE FUNCTION _hybridexec.hx_shipped_key_column(tbl text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT CASE tbl WHEN 'hx_price' THEN 'id' ELSE 'name' END
$$;

COMMENT ON FUNCTION _hybridexec.hx_shipped_key_column(text) IS
'The key column of a table with shipped rows (hx_rule and hx_window: name; hx_price: id), by which hx_state names its rows';

/*
 * Trigger (BEFORE INSERT on hx_rule, hx_window, hx_price): when the new
 * row's key is that of a shipped row still as installed, that row takes
 * the new values and the insert is skipped.  Runs as the extension's
 * owner (hx_state is internal).
 */
CREATE FUNCTION _hybridexec.hx_shipped_replace() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	key_column text := hx_shipped_key_column(TG_TABLE_NAME);
	row_key text := to_jsonb(NEW) ->> key_column;
	original jsonb;
	cols text;
	n integer;
BEGIN
	SELECT s.value::jsonb INTO original FROM hx_state s
	 WHERE s.key = format('shipped %s %s', TG_TABLE_NAME, row_key);
	IF original IS NULL THEN
		RETURN NEW;
	END IF;
	/* a tombstone of the key is void once the key is back */
	DELETE FROM hx_state s WHERE s.key = format('removed %s %s', TG_TABLE_NAME, row_key);
	SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
	  FROM pg_attribute a
	 WHERE a.attrelid = TG_RELID AND a.attnum > 0 AND NOT a.attisdropped;
	/* typed comparison: intervals and times read back whatever the session's styles */
	EXECUTE format('UPDATE %1$s t SET (%2$s) = (SELECT %2$s FROM jsonb_populate_record(NULL::%1$s, $1))
					 WHERE t.%3$I::text = $3
					   AND t IS NOT DISTINCT FROM jsonb_populate_record(NULL::%1$s, $2)',
				   TG_RELID::regclass, cols, key_column)
		USING to_jsonb(NEW), original, row_key;
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n = 0 THEN
		RETURN NEW;			/* changed since: let the insert collide as it would */
	END IF;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_shipped_replace() IS
'Trigger: a row inserted with the key of a shipped row (a default rule, window or price) that is still as installed replaces it; what lets pg_restore load a dumped default over the fresh one';

/* Trigger (AFTER DELETE): deleting a shipped row leaves a tombstone that pg_dump keeps */
CREATE FUNCTION _hybridexec.hx_shipped_removed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	row_key text := to_jsonb(OLD) ->> hx_shipped_key_column(TG_TABLE_NAME);
BEGIN
	IF EXISTS (SELECT 1 FROM hx_state s WHERE s.key = format('shipped %s %s', TG_TABLE_NAME, row_key)) THEN
		INSERT INTO hx_state (key, value) VALUES (format('removed %s %s', TG_TABLE_NAME, row_key), NULL)
		ON CONFLICT (key) DO NOTHING;
	END IF;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_shipped_removed() IS
'Trigger: deleting a default rule, window or price leaves a tombstone in hx_state, so that a restored dump does not bring it back';

CREATE TRIGGER hx_shipped_replace BEFORE INSERT ON hx_rule
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_replace();
CREATE TRIGGER hx_shipped_replace BEFORE INSERT ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_replace();
CREATE TRIGGER hx_shipped_replace BEFORE INSERT ON hx_price
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_replace();
CREATE TRIGGER hx_shipped_removed AFTER DELETE ON hx_rule
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_removed();
CREATE TRIGGER hx_shipped_removed AFTER DELETE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_removed();
CREATE TRIGGER hx_shipped_removed AFTER DELETE ON hx_price
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_shipped_removed();

/*
 * Trigger (AFTER INSERT on hx_state, per statement): loading tombstones
 * deletes the shipped rows they name if still as installed - rules
 * before the windows they use, and a window a rule still uses is kept.
 */
CREATE FUNCTION _hybridexec.hx_shipped_tombstones() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	r record;
BEGIN
	FOR r IN SELECT split_part(n.key, ' ', 2) AS tbl, substr(n.key, length(split_part(n.key, ' ', 2)) + 10) AS key,
					s.value::jsonb AS original
			   FROM hx_state_new n
			   JOIN hx_state s ON s.key = 'shipped ' || substr(n.key, 9)
			  WHERE n.key LIKE 'removed %'
			  ORDER BY split_part(n.key, ' ', 2) = 'hx_window', n.key LOOP
		IF r.tbl = 'hx_window'
		   AND EXISTS (SELECT 1 FROM hx_rule u WHERE u.window_name = r.key) THEN
			CONTINUE;
		END IF;
		EXECUTE format('DELETE FROM %1$I t WHERE t.%2$I::text = $1
						   AND t IS NOT DISTINCT FROM jsonb_populate_record(NULL::%1$I, $2)',
					   r.tbl, hx_shipped_key_column(r.tbl))
			USING r.key, r.original;
	END LOOP;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_shipped_tombstones() IS
'Trigger: restored tombstones delete the defaults they name (if still as installed), so a restore keeps a default the DBA had removed removed';

CREATE TRIGGER hx_shipped_tombstones AFTER INSERT ON _hybridexec.hx_state
	REFERENCING NEW TABLE AS hx_state_new
	FOR EACH STATEMENT EXECUTE FUNCTION _hybridexec.hx_shipped_tombstones();

/* the shipped rows, as installed */
-- [storage]
INSERT INTO _hybridexec.hx_state (key, value)
SELECT format('shipped hx_rule %s', r.name), to_jsonb(r)::text FROM hx_rule r
UNION ALL
SELECT format('shipped hx_window %s', w.name), to_jsonb(w)::text FROM hx_window w
UNION ALL
SELECT format('shipped hx_price %s', p.id), to_jsonb(p)::text FROM hx_price p;
-- [/storage]

/* ------------------------------------------------------------------------
 * What pg_dump keeps: every row of every table, and where the ids are
 * ------------------------------------------------------------------------ */

/* one call per statement: each call rewrites the extension's catalog row */
DO $$
DECLARE
	t regclass;
BEGIN
	FOREACH t IN ARRAY ARRAY['hx_type', 'hx_task', 'hx_error', 'hx_department_member',
							 'hx_window', 'hx_window_run', 'hx_checkpoint', 'hx_rule',
							 'hx_price', 'hx_price_period', 'hx_cost', 'hx_stat_minute', 'hx_cost_daily',
							 'hx_budget', 'hx_alert_state', 'hx_attachment', 'hx_task_source']::regclass[] LOOP
		PERFORM pg_catalog.pg_extension_config_dump(t, '');
		/* and where its ids are */
		IF EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = t AND a.attname = 'id' AND a.attidentity <> '') THEN
			PERFORM pg_catalog.pg_extension_config_dump(pg_get_serial_sequence(t::text, 'id')::regclass, '');
		END IF;
	END LOOP;
END
$$;
/* of the small facts, the tombstones (the rest is about this installation) */
SELECT pg_catalog.pg_extension_config_dump('_hybridexec.hx_state', 'WHERE key LIKE ''removed %''');
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
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	keep double precision := hx_setting_seconds('hybridexec.retention', 7 * 86400);
	batch integer := coalesce(current_setting('hybridexec.retention_batch', true)::integer, 10000);
	n integer;
BEGIN
	IF keep <= 0 THEN
		RETURN 0;
	END IF;
	/*
	 * The ids to delete are collected first, as an array (an InitPlan run
	 * once), and the rows then fetched by primary key: the scheduler runs
	 * this step with a cached generic plan after five calls, and a
	 * semi-join on "id IN (subquery)" with an unknown LIMIT is planned as a
	 * hash join over a sequential scan of the whole queue - every tick,
	 * however few rows are due, so that retention fell behind the load it
	 * was meant to clean.  With the tasks go the watched-table rows they
	 * came from (attach.sql).
	 */
	WITH gone AS (
		DELETE FROM hx_task t
		 WHERE t.id = ANY (ARRAY (SELECT x.id FROM hx_task x
								   WHERE x.status IN ('done', 'dead', 'cancelled')
									 AND x.finished_at < now() - make_interval(secs => keep)
								   ORDER BY x.finished_at
								   LIMIT batch
									 FOR UPDATE SKIP LOCKED))
		RETURNING t.id
	), sources AS (
		DELETE FROM hx_task_source s WHERE s.task_id = ANY (ARRAY (SELECT gone.id FROM gone))
	)
	SELECT count(*) INTO n FROM gone;
	DELETE FROM hx_error e
	 WHERE e.id = ANY (ARRAY (SELECT x.id FROM hx_error x
							   WHERE x.at < now() - make_interval(secs => keep)
								 AND NOT EXISTS (SELECT 1 FROM hx_task t WHERE t.id = x.task_id)
							   LIMIT batch));
	RETURN n;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_retention_step() IS
'Deletes up to hybridexec.retention_batch finished tasks (done, dead, cancelled) older than hybridexec.retention, with their hx_task_source rows and old hx_error rows; the ledger and statistics stay; returns how many tasks';

CREATE FUNCTION hx_scheduler_status()
RETURNS TABLE (step text, every text, last_ok timestamptz, last_failed timestamptz,
			   last_error text)
AS 'MODULE_PATHNAME', 'hx_scheduler_status' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_scheduler_status() IS
'The scheduler worker''s steps (each runs in a transaction of its own; one that fails never stops the others): how often each runs, when it last succeeded, and when and why it last failed, if it has failed since (needs shared_preload_libraries)';
/*
 * src/sql/privileges.sql
 *
 * Last part of the install script: who may do what.
 *
 * hybridexec ships three roles a DBA grants to others.  Applications,
 * executors and DBAs need nothing else: no role is granted more than
 * reading some tables, the API functions check and act (they run as the
 * extension's owner: SECURITY DEFINER, or C that switches, with
 * search_path pinned).  Nothing is executable by PUBLIC, and the internal
 * functions (schema _hybridexec) are the owner's alone.
 *
 *	hybridexec_submitter	submit, classify, wait, cancel; read its own
 *							tasks, errors and costs (row security), or its
 *							department's (hx_department_member)
 *	hybridexec_executor		claim, complete, fail, heartbeat, batch reports
 *	hybridexec_admin		both of the above, types, rules, windows, prices,
 *							budgets, departments, watched tables, every
 *							report and every table to read
 */

/* ------------------------------------------------------------------------
 * The roles (cluster-wide: the first CREATE EXTENSION makes them, DROP
 * EXTENSION leaves them)
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['hybridexec_submitter', 'hybridexec_executor', 'hybridexec_admin'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
	FOREACH r IN ARRAY ARRAY['hybridexec_submitter', 'hybridexec_executor'] LOOP
		IF NOT pg_has_role('hybridexec_admin', r, 'MEMBER') THEN
			EXECUTE format('GRANT %I TO hybridexec_admin', r);
		END IF;
	END LOOP;
END
$$;

COMMENT ON ROLE hybridexec_submitter IS
'hybridexec: submit, classify, wait for and cancel tasks; read its own tasks, errors and costs (or its department''s)';
COMMENT ON ROLE hybridexec_executor IS
'hybridexec: external executors - claim, complete, fail and heartbeat tasks of types without an in-database handler';
COMMENT ON ROLE hybridexec_admin IS
'hybridexec: everything a submitter and an executor may, plus task types, rules, windows, prices, budgets, departments, watched tables and every report';

/* ------------------------------------------------------------------------
 * Nothing for PUBLIC; the internal schema for the owner only
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid::regprocedure
			   FROM pg_proc p
			   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec' LOOP
		EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
	END LOOP;
END
$$;

REVOKE ALL ON SCHEMA _hybridexec FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO hybridexec_submitter, hybridexec_executor, hybridexec_admin;

/* ------------------------------------------------------------------------
 * Submitters
 * ------------------------------------------------------------------------ */

GRANT EXECUTE ON FUNCTION
	hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz),
	hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz),
	hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	hx_decide(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	hx_wait(bigint, interval),
	hx_cancel(bigint)
TO hybridexec_submitter;

GRANT SELECT ON hx_task, hx_error, hx_cost, hx_department_member TO hybridexec_submitter;

/* ------------------------------------------------------------------------
 * Executors
 * ------------------------------------------------------------------------ */

GRANT EXECUTE ON FUNCTION
	hx_claim(text, text[], text, integer, interval),
	hx_claim_check(text[], text),
	hx_complete(bigint, uuid, jsonb, numeric),
	hx_complete_many(bigint[], uuid[], jsonb[], numeric[]),
	hx_fail(bigint, uuid, text, boolean, numeric),
	hx_heartbeat(bigint[], uuid[], interval),
	hx_batch_report(bigint[], uuid[], text, text),
	hx_result_cost(jsonb, text)
TO hybridexec_executor;

/* ------------------------------------------------------------------------
 * Administrators: every API function, every table and view to read, the
 * policy to edit.  hx_type changes only through hx_register() (a type
 * runs as the role that registered it), but for its descriptive columns.
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	f regprocedure;
	t regclass;
BEGIN
	FOR f IN SELECT p.oid::regprocedure
			   FROM pg_proc p
			   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec'
			  WHERE p.pronamespace = e.extnamespace LOOP
		EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO hybridexec_admin', f);
	END LOOP;
	FOR t IN SELECT c.oid::regclass
			   FROM pg_class c
			   JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec'
			  WHERE c.relnamespace = e.extnamespace AND c.relkind IN ('r', 'v', 'p') LOOP
		EXECUTE format('GRANT SELECT ON %s TO hybridexec_admin', t);
	END LOOP;
END
$$;

GRANT INSERT, UPDATE, DELETE ON hx_rule, hx_window, hx_price, hx_price_period, hx_budget,
	hx_department_member TO hybridexec_admin;
GRANT UPDATE (latency_value, description) ON hx_type TO hybridexec_admin;

/* ------------------------------------------------------------------------
 * Row security: a role that is not an administrator reads the tasks,
 * errors and costs submitted by itself (or a role it is a member of), or
 * for a department it belongs to.  The extension's owner, who runs every
 * API function, is not subject to it.  pg_has_role() errs on a dropped
 * role, so the policies look only at roles that exist.
 * ------------------------------------------------------------------------ */

/* the extension's policies are named hx_*: an update drops and re-creates those, and keeps a DBA's own */
ALTER TABLE hx_task ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_task_visible ON hx_task FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
									 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER'))
		   OR department IN (SELECT m.department FROM @extschema@.hx_department_member m));
COMMENT ON POLICY hx_task_visible ON hx_task IS
'Administrators see every task; others the tasks submitted by a role they are a member of, or for a department they belong to';

ALTER TABLE hx_error ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_error_visible ON hx_error FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR EXISTS (SELECT 1 FROM @extschema@.hx_task t WHERE t.id = task_id));
COMMENT ON POLICY hx_error_visible ON hx_error IS
'The errors of the tasks the reader may see (hx_task_visible)';

ALTER TABLE hx_cost ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_cost_visible ON hx_cost FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
									 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER'))
		   OR department IN (SELECT m.department FROM @extschema@.hx_department_member m));
COMMENT ON POLICY hx_cost_visible ON hx_cost IS
'Administrators see every booking; others those of tasks submitted by a role they are a member of, or for a department they belong to';

ALTER TABLE hx_department_member ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_department_member_own ON hx_department_member FOR SELECT
	USING (role::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
						  WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER')));
COMMENT ON POLICY hx_department_member_own ON hx_department_member IS
'A role sees the memberships of roles it is a member of (its own departments)';
CREATE POLICY hx_department_member_admin ON hx_department_member FOR ALL TO hybridexec_admin
	USING (true) WITH CHECK (true);
COMMENT ON POLICY hx_department_member_admin ON hx_department_member IS
'Administrators see and edit every membership';
