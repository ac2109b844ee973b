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
	retry_backoff	interval,
	max_backoff		interval,
	max_running		integer,
	rate_limit		integer,
	rate_period		interval,
	refine_with		text REFERENCES hx_type (task_type),
	min_quality		numeric,
	dead_letter_type text REFERENCES hx_type (task_type) ON DELETE SET NULL,
	CONSTRAINT hx_type_dead_letter_check CHECK (dead_letter_type <> task_type),
	CONSTRAINT hx_type_name_check CHECK (task_type <> '' AND length(task_type) <= 200),
	CONSTRAINT hx_type_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
	CONSTRAINT hx_type_timeout_check CHECK (timeout > interval '0'),
	CONSTRAINT hx_type_latency_value_check CHECK (latency_value >= 0),
	CONSTRAINT hx_type_micro_batch_check
		CHECK ((micro_batch_size IS NULL) = (micro_batch_wait IS NULL)
			   AND micro_batch_size BETWEEN 2 AND 1024
			   AND micro_batch_wait BETWEEN interval '0' AND interval '1 hour'
			   AND (micro_batch_size IS NULL OR batch_handler IS NOT NULL)),
	CONSTRAINT hx_type_backoff_check
		CHECK (retry_backoff BETWEEN interval '0' AND interval '1 hour'
			   AND max_backoff BETWEEN interval '0' AND interval '1 day'),
	CONSTRAINT hx_type_limits_check
		CHECK (max_running BETWEEN 1 AND 100000
			   AND (rate_limit IS NULL) = (rate_period IS NULL)
			   AND rate_limit BETWEEN 1 AND 1000000
			   AND rate_period BETWEEN interval '1 millisecond' AND interval '1 day')
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
COMMENT ON COLUMN hx_type.retry_backoff IS 'Delay before the first retry of a failed stream task of the type, doubling per attempt; NULL = hybridexec.retry_backoff';
COMMENT ON COLUMN hx_type.max_backoff IS 'Longest delay between retries of the type; NULL = one minute';
COMMENT ON COLUMN hx_type.max_running IS 'Most tasks of the type running at once for stream workers, external executors and window runs'' chunks together; NULL = no limit';
COMMENT ON COLUMN hx_type.rate_limit IS 'Most attempts of the type started per rate_period (a token bucket of rate_limit tokens, refilled evenly over rate_period) by stream workers, external executors and window runs'' chunks together; NULL = no limit';
COMMENT ON COLUMN hx_type.rate_period IS 'The period of rate_limit';
COMMENT ON COLUMN hx_type.refine_with IS 'Tiered results: when a task of the type is done, a task of this type is submitted with the same payload, parent_id pointing at it and tier one higher, routed by the rules (origin refine); NULL = the last tier';
COMMENT ON COLUMN hx_type.min_quality IS 'Quality: hx_health() alerts when a metric''s average evaluation (hx_quality) of the type over the last hour is below this; NULL = no minimum';
COMMENT ON COLUMN hx_type.dead_letter_type IS 'Dead letters for people: when a task of the type dies, a task of this type (a human review queue) is submitted with the dead task''s id, type, payload, attempts and errors as its payload; NULL = none';
COMMENT ON COLUMN hx_type.registered_at IS 'When hx_register() created the type or last changed it (a call that changes nothing leaves it)';

/* ------------------------------------------------------------------------
 * The task queue
 * ------------------------------------------------------------------------ */

/* a new column must also be copied where a chunk moves its tasks (task_state.c, done_chunk) */
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
	throttled		integer NOT NULL DEFAULT 0,
	sample_rule		text,
	parent_id		bigint,
	tier			integer NOT NULL DEFAULT 1,
	/*
	 * The queue's own rows' checks (NO INHERIT): hx_task_history has its
	 * own, and its rows passed these in the queue before they moved; each
	 * check there was evaluated for every task a window run moved.
	 */
	CONSTRAINT hx_task_status_check
		CHECK (status IN ('queued', 'running', 'done', 'failed', 'dead', 'cancelled')) NO INHERIT,
	CONSTRAINT hx_task_route_check CHECK (route IN ('stream', 'batch')) NO INHERIT,
	CONSTRAINT hx_task_window_check CHECK ((route = 'batch') = (window_name IS NOT NULL)) NO INHERIT
);

/*
 * what the stream workers claim, in claim order: higher priority, then age
 * (as an expression, so that a claim can start after a key with one row
 * comparison)
 */
CREATE INDEX hx_task_stream_claim_idx ON hx_task ((-priority), id)
	WHERE status IN ('queued', 'failed') AND route = 'stream';
/*
 * what a window will take, in run order: type, higher priority, earlier
 * deadline, age (as expressions, so that a run can continue after the last
 * task it took with one row comparison)
 */
CREATE INDEX hx_task_batch_idx ON hx_task (window_name, task_type, (-priority),
										   (coalesce(deadline, 'infinity'::timestamptz)), id)
	WHERE status IN ('queued', 'failed') AND route = 'batch';
/* the refinements of a task (hx_result walks a chain of tiers) */
CREATE INDEX hx_task_parent_idx ON hx_task (parent_id) WHERE parent_id IS NOT NULL;
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
COMMENT ON COLUMN hx_task.run_after IS 'Not claimed before this moment (hx_submit''s run_at, retry backoff)';
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
COMMENT ON COLUMN hx_task.parent_id IS 'Tiered results: the done task this one refines (its type''s refine_with is this task''s type); NULL for a first tier';
COMMENT ON COLUMN hx_task.tier IS 'Tiered results: 1 for a submitted task, one more than its parent''s for a refinement';
COMMENT ON COLUMN hx_task.sample_rule IS 'The sampled rule (hx_rule.sample) whose other conditions the task matched: it took the task when rule_name is the same, else the task fell through it (hx_rollout_report compares the two); NULL = none';
COMMENT ON COLUMN hx_task.throttled IS 'Failed attempts after which the executor said when to try again (hx_fail''s retry_after): they do not count against max_attempts';
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

/*
 * Finished tasks out of the queue.  A window run's chunk, the in-database
 * workers and hx_complete do not update their done tasks in place: they
 * delete them from the queue and insert them, done, here, in one
 * statement (task_state.c), so that the queue's heap and claim indexes
 * keep only the work still to do and a finished chunk writes each task
 * once.  A child table of hx_task (inheritance): every query on hx_task
 * sees these rows too, with hx_task's privileges and row security, and
 * retention deletes them like any finished task.  Dead and cancelled
 * tasks stay in hx_task's own heap for now.  Statements about
 * unfinished tasks (claims, bookings, picks, sweeps) say ONLY hx_task:
 * planned as an inheritance tree they were slower, the stream path by
 * half (task_state.c).
 */
-- [storage 0.4]
CREATE TABLE hx_task_history (
	CONSTRAINT hx_task_history_finished_check CHECK (status IN ('done', 'dead', 'cancelled'))
) INHERITS (hx_task);
ALTER TABLE hx_task_history ADD CONSTRAINT hx_task_history_pkey PRIMARY KEY (id);
CREATE INDEX hx_task_history_finished_idx ON hx_task_history (finished_at);
/* what hx_submit's reuse_within looks for: only tasks with a dedupe key pay for it */
CREATE INDEX hx_task_history_reuse_idx ON hx_task_history (task_type, dedupe_key, finished_at)
	WHERE dedupe_key IS NOT NULL;
CREATE INDEX hx_task_history_parent_idx ON hx_task_history (parent_id) WHERE parent_id IS NOT NULL;
-- [/storage]

COMMENT ON TABLE hx_task_history IS
'Finished tasks that left the queue (a window run''s chunk moves its done tasks here); a child of hx_task, so read them through hx_task';

/* its columns are hx_task's, and so are their comments */
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN SELECT a.attname, pg_catalog.col_description(a.attrelid, a.attnum) AS note
			   FROM pg_attribute a
			  WHERE a.attrelid = 'hx_task'::regclass AND a.attnum > 0 AND NOT a.attisdropped LOOP
		EXECUTE format('COMMENT ON COLUMN hx_task_history.%I IS %L', c.attname, c.note);
	END LOOP;
END
$$;

/* mostly appended to, deleted from by retention: vacuum it like the queue */
ALTER TABLE hx_task_history SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
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


/*
 * What retention looks at: dead tasks apart, since they are kept longer
 * (hybridexec.retention_dead), so that retiring the others never steps
 * over them; hx_dead reads them too.
 */
-- [storage]
CREATE INDEX hx_task_finished_idx ON hx_task (finished_at)
	WHERE status IN ('done', 'cancelled');
CREATE INDEX hx_task_dead_idx ON hx_task (finished_at)
	WHERE status = 'dead';
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
 * Per-type limits: what a claim of a limited type may take
 * ------------------------------------------------------------------------ */

/* the token bucket of each rate-limited type; its row lock orders the claims of the type */
-- [storage 0.4]
CREATE TABLE _hybridexec.hx_type_bucket (
	task_type		text PRIMARY KEY REFERENCES hx_type (task_type) ON DELETE CASCADE,
	tokens			double precision NOT NULL,
	refilled_at		timestamptz NOT NULL
);
-- [/storage]

COMMENT ON COLUMN _hybridexec.hx_type_bucket.task_type IS 'The limited type';
COMMENT ON COLUMN _hybridexec.hx_type_bucket.tokens IS 'Starts its rate limit allows now, as of refilled_at (0 for a type with max_running only)';
COMMENT ON COLUMN _hybridexec.hx_type_bucket.refilled_at IS 'When tokens was last brought up to date';
COMMENT ON TABLE _hybridexec.hx_type_bucket IS
'Per limited type: the tokens of its rate limit as of refilled_at; a claim of the type locks its row until it commits, so that claims of the type count running tasks and take tokens one after the other';

/*
 * A claim took "ids" of a limited type (running, not yet committed), or a
 * window run's part picked them as its next chunk: how many of them, in
 * claim order, may start - within max_running, counting the type's other
 * running tasks and the tasks of chunks in flight (started checkpoints of
 * runs under way, but for the one of the picking part, run_id and part,
 * which commits with the pick) - and within the tokens of its rate limit,
 * which they take; for the others, how long until a retry could succeed
 * (the next token; a tenth of a second at max_running).  Locks the type's
 * bucket until the claim commits.  In the claim's transaction.
 */
CREATE FUNCTION _hybridexec.hx_limit_take(task_type text, ids bigint[],
										  run_id bigint DEFAULT NULL, part integer DEFAULT NULL,
										  OUT allowed integer, OUT wait_ms double precision)
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	y hx_type;
	b hx_type_bucket;
	at timestamptz := clock_timestamp();
	per_token_ms double precision;
	running integer;
BEGIN
	allowed := cardinality(ids);
	wait_ms := 0;
	SELECT * INTO y FROM hx_type x WHERE x.task_type = hx_limit_take.task_type;
	IF NOT FOUND OR (y.max_running IS NULL AND y.rate_limit IS NULL) THEN
		RETURN;
	END IF;
	INSERT INTO hx_type_bucket AS k (task_type, tokens, refilled_at)
	VALUES (y.task_type, coalesce(y.rate_limit, 0), at)
	ON CONFLICT ON CONSTRAINT hx_type_bucket_pkey DO NOTHING;
	SELECT * INTO b FROM hx_type_bucket k WHERE k.task_type = y.task_type FOR UPDATE;
	IF y.max_running IS NOT NULL THEN
		SELECT count(*) INTO running FROM ONLY hx_task t
		 WHERE t.status = 'running' AND t.task_type = y.task_type AND t.id <> ALL (ids);
		/* a chunk's tasks wait (queued) while it runs: its checkpoint counts them */
		running := running + coalesce((
			SELECT sum(cardinality(c.task_ids)) FROM hx_checkpoint c
			  JOIN hx_window_run r ON r.id = c.run_id
			 WHERE c.state = 'started' AND c.task_type = y.task_type
			   AND r.status IN ('starting', 'running')
			   AND (c.run_id, c.part) IS DISTINCT FROM (hx_limit_take.run_id, hx_limit_take.part)), 0);
		IF running + allowed > y.max_running THEN
			allowed := greatest(y.max_running - running, 0);
			wait_ms := 100;
		END IF;
	END IF;
	IF y.rate_limit IS NOT NULL THEN
		per_token_ms := extract(epoch FROM y.rate_period) * 1000 / y.rate_limit;
		b.tokens := least(y.rate_limit, b.tokens + extract(epoch FROM at - b.refilled_at) * 1000 / per_token_ms);
		IF b.tokens < allowed THEN
			allowed := floor(b.tokens)::integer;
			wait_ms := greatest(wait_ms, (1 - (b.tokens - allowed)) * per_token_ms);
		END IF;
		UPDATE hx_type_bucket k SET tokens = b.tokens - allowed, refilled_at = at
		 WHERE k.task_type = y.task_type;
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_limit_take(text, bigint[], bigint, integer) IS
'For a claim of a limited type, or a window run''s next chunk: how many of the tasks may start (max_running, counting running tasks and chunks in flight; the rate limit''s tokens, which they take) and how long the others should wait; locks the type''s bucket until the claim commits';

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
										clear text[], retry_backoff interval, max_backoff interval,
										max_running integer, rate_limit integer, rate_period interval,
										refine_with text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	clearable CONSTANT text[] := ARRAY['handler', 'batch_handler', 'description', 'micro_batch', 'backoff',
									   'max_running', 'rate_limit', 'refine_with'];
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
	new_backoff interval;
	new_max_backoff interval;
	new_max_running integer;
	new_rate_limit integer;
	new_rate_period interval;
	new_refine_with text;
	tiers text[];
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
				  HINT = 'clear may name handler, batch_handler, description, micro_batch (micro_batch_size and micro_batch_wait together), backoff (retry_backoff and max_backoff together), max_running, rate_limit (rate_limit and rate_period together) and refine_with; change max_attempts or timeout by passing the new value.';
	END IF;
	SELECT string_agg(DISTINCT c, ', ') INTO bad
	  FROM unnest(clear) c
	 WHERE (c = 'handler' AND handler IS NOT NULL)
		OR (c = 'batch_handler' AND batch_handler IS NOT NULL)
		OR (c = 'description' AND description IS NOT NULL)
		OR (c = 'micro_batch' AND (micro_batch_size IS NOT NULL OR micro_batch_wait IS NOT NULL))
		OR (c = 'backoff' AND (retry_backoff IS NOT NULL OR max_backoff IS NOT NULL))
		OR (c = 'max_running' AND max_running IS NOT NULL)
		OR (c = 'rate_limit' AND (rate_limit IS NOT NULL OR rate_period IS NOT NULL))
		OR (c = 'refine_with' AND refine_with IS NOT NULL);
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
	new_backoff := CASE WHEN 'backoff' = ANY (clear) THEN NULL
						ELSE coalesce(retry_backoff, cur.retry_backoff) END;
	new_max_backoff := CASE WHEN 'backoff' = ANY (clear) THEN NULL
							ELSE coalesce(max_backoff, cur.max_backoff) END;
	new_max_running := CASE WHEN 'max_running' = ANY (clear) THEN NULL
							ELSE coalesce(max_running, cur.max_running) END;
	new_rate_limit := CASE WHEN 'rate_limit' = ANY (clear) THEN NULL
						   ELSE coalesce(rate_limit, cur.rate_limit) END;
	new_rate_period := CASE WHEN 'rate_limit' = ANY (clear) THEN NULL
							ELSE coalesce(rate_period, cur.rate_period) END;
	new_refine_with := CASE WHEN 'refine_with' = ANY (clear) THEN NULL
							ELSE coalesce(refine_with, cur.refine_with) END;
	IF refine_with IS NOT NULL THEN
		IF NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = hx_register.refine_with) THEN
			RAISE EXCEPTION 'refine_with names unknown task type "%"', hx_register.refine_with
				USING ERRCODE = 'undefined_object',
					  HINT = 'Register the refining type first, e.g. hx_register(''summarize_full'', ''summarize_full(jsonb)''), then name it here.';
		END IF;
		/* the chain of tiers it starts: it must not come back to this type */
		WITH RECURSIVE chain (t, depth) AS (
			SELECT hx_register.refine_with, 1
			UNION ALL
			SELECT y.refine_with, c.depth + 1 FROM chain c JOIN hx_type y ON y.task_type = c.t
			 WHERE y.refine_with IS NOT NULL AND c.t <> hx_register.task_type AND c.depth < 100)
		SELECT array_agg(c.t ORDER BY c.depth) INTO tiers FROM chain c;
		IF task_type = ANY (tiers) OR cardinality(tiers) >= 10 THEN
			RAISE EXCEPTION 'refine_with "%" would make task type "%" a tier of itself or a chain of more than 10 tiers',
					hx_register.refine_with, task_type
				USING ERRCODE = 'invalid_parameter_value',
					  DETAIL = format('The tiers after "%s" would be: %s.', task_type, array_to_string(tiers, ' -> ')),
					  HINT = 'A refinement chain goes from a quick answer to a better one and ends: name a type that is not refined back into this one.';
		END IF;
	END IF;
	IF new_max_running NOT BETWEEN 1 AND 100000 THEN
		RAISE EXCEPTION 'max_running must be between 1 and 100000, not %', new_max_running
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The most tasks of the type that may run at once; clear => ARRAY[''max_running''] lifts the limit.';
	END IF;
	IF (new_rate_limit IS NULL) <> (new_rate_period IS NULL)
	   OR new_rate_limit NOT BETWEEN 1 AND 1000000
	   OR new_rate_period NOT BETWEEN interval '1 millisecond' AND interval '1 day' THEN
		RAISE EXCEPTION 'rate_limit (1 to 1000000) and rate_period (1 ms to 1 day) go together, not % and %',
				new_rate_limit, new_rate_period
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example rate_limit => 60, rate_period => ''1 minute''; clear => ARRAY[''rate_limit''] lifts the limit.';
	END IF;
	IF new_backoff NOT BETWEEN interval '0' AND interval '1 hour'
	   OR new_max_backoff NOT BETWEEN interval '0' AND interval '1 day' THEN
		RAISE EXCEPTION 'retry_backoff must be between 0 and an hour and max_backoff between 0 and a day, not % and %',
				new_backoff, new_max_backoff
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example retry_backoff => ''1 second'', max_backoff => ''5 minutes''; NULL uses hybridexec.retry_backoff and one minute.';
	END IF;

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
							 description, micro_batch_size, micro_batch_wait, retry_backoff, max_backoff,
							 max_running, rate_limit, rate_period, refine_with)
		VALUES (task_type, new_handler, new_batch_handler, new_max_attempts, new_timeout, caller,
				new_description, new_size, new_wait, new_backoff, new_max_backoff,
				new_max_running, new_rate_limit, new_rate_period, new_refine_with);
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
		CASE WHEN new_backoff IS DISTINCT FROM cur.retry_backoff
			 THEN format('retry_backoff %s -> %s', coalesce(cur.retry_backoff::text, 'default'),
						 coalesce(new_backoff::text, 'default')) END,
		CASE WHEN new_max_backoff IS DISTINCT FROM cur.max_backoff
			 THEN format('max_backoff %s -> %s', coalesce(cur.max_backoff::text, 'default'),
						 coalesce(new_max_backoff::text, 'default')) END,
		CASE WHEN new_max_running IS DISTINCT FROM cur.max_running
			 THEN format('max_running %s -> %s', coalesce(cur.max_running::text, 'none'),
						 coalesce(new_max_running::text, 'none')) END,
		CASE WHEN new_rate_limit IS DISTINCT FROM cur.rate_limit OR new_rate_period IS DISTINCT FROM cur.rate_period
			 THEN format('rate_limit %s -> %s', coalesce(cur.rate_limit || ' per ' || cur.rate_period, 'none'),
						 coalesce(new_rate_limit || ' per ' || new_rate_period, 'none')) END,
		CASE WHEN new_refine_with IS DISTINCT FROM cur.refine_with
			 THEN format('refine_with %s -> %s', coalesce(cur.refine_with, 'none'),
						 coalesce(new_refine_with, 'none')) END,
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
		   micro_batch_wait = new_wait, retry_backoff = new_backoff, max_backoff = new_max_backoff,
		   max_running = new_max_running, rate_limit = new_rate_limit, rate_period = new_rate_period,
		   refine_with = new_refine_with, registered_at = now()
	 WHERE y.task_type = hx_register.task_type;
	RAISE NOTICE 'task type "%": %', task_type, array_to_string(changes, ', ');
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[], interval, interval, integer, integer, interval, text) IS
'Implementation of hx_register(): changes only the fields given (NULL keeps them; clear resets handler, batch_handler, description, micro_batch, backoff, max_running, rate_limit or refine_with) and says what changed; the type runs as the calling role (hx_caller()), which must be allowed to execute the handlers it ends up with; only a member of the role a type runs as, or an administrator, may change it';

CREATE FUNCTION hx_register(task_type text,
							handler regprocedure DEFAULT NULL,
							batch_handler regprocedure DEFAULT NULL,
							max_attempts integer DEFAULT NULL,
							timeout interval DEFAULT NULL,
							description text DEFAULT NULL,
							micro_batch_size integer DEFAULT NULL,
							micro_batch_wait interval DEFAULT NULL,
							clear text[] DEFAULT NULL,
							retry_backoff interval DEFAULT NULL,
							max_backoff interval DEFAULT NULL,
							max_running integer DEFAULT NULL,
							rate_limit integer DEFAULT NULL,
							rate_period interval DEFAULT NULL,
							refine_with text DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[], interval, interval, integer, integer, interval, text) IS
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
	IF EXISTS (SELECT 1 FROM hx_type y WHERE y.refine_with = hx_unregister.task_type) THEN
		RAISE EXCEPTION 'task type "%" refines the results of %', task_type,
				(SELECT string_agg(format('"%s"', y.task_type), ', ' ORDER BY y.task_type)
				   FROM hx_type y WHERE y.refine_with = hx_unregister.task_type)
			USING ERRCODE = 'object_in_use',
				  HINT = 'Clear it there first: hx_register(<that type>, clear => ARRAY[''refine_with'']).';
	END IF;
	DELETE FROM hx_type y WHERE y.task_type = hx_unregister.task_type;
END
$$;

COMMENT ON FUNCTION hx_unregister(text) IS 'Removes a task type that has no unfinished tasks';

/*
 * Tiered results: the best result so far of the chain of tiers task "id"
 * belongs to (the done task of the highest tier), read as the caller.  A
 * chain is a line: each done task of a refined type has one refinement.
 */
CREATE FUNCTION hx_result(id bigint)
RETURNS TABLE (task_id bigint, tier integer, final boolean, result jsonb)
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	root bigint;
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'hx_result needs a task id'
			USING ERRCODE = 'null_value_not_allowed';
	END IF;
	WITH RECURSIVE up AS (
		SELECT t.id, t.parent_id, 0 AS depth FROM hx_task t WHERE t.id = hx_result.id
		UNION ALL
		SELECT p.id, p.parent_id, u.depth + 1
		  FROM up u JOIN hx_task p ON p.id = u.parent_id WHERE u.depth < 100)
	SELECT u.id INTO root FROM up u ORDER BY u.depth DESC LIMIT 1;
	IF root IS NULL THEN
		RAISE EXCEPTION 'task % does not exist or is not yours', id
			USING ERRCODE = 'undefined_object',
				  HINT = 'A task is visible to the role that submitted it, its department and administrators; retention deletes old ones.';
	END IF;
	RETURN QUERY
	WITH RECURSIVE down AS (
		SELECT t.id, t.task_type, t.status, t.tier, t.result, 0 AS depth FROM hx_task t WHERE t.id = root
		UNION ALL
		SELECT c.id, c.task_type, c.status, c.tier, c.result, d.depth + 1
		  FROM down d JOIN hx_task c ON c.parent_id = d.id WHERE d.depth < 100)
	SELECT d.id, d.tier,
		   NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = d.task_type AND y.refine_with IS NOT NULL),
		   d.result
	  FROM down d
	 WHERE d.status = 'done'
	 ORDER BY d.tier DESC, d.id DESC
	 LIMIT 1;
END
$$;

COMMENT ON FUNCTION hx_result(bigint) IS
'Tiered results: the best result so far of the chain of tiers the task belongs to - the done task of the highest tier, its tier, whether it is final (its type refines no further) and its result; no row while no tier is done (a dead or cancelled tier leaves the best earlier one); 42704 for a task the caller may not see';

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
						  deadline timestamptz DEFAULT NULL,
						  run_at timestamptz DEFAULT NULL,
						  reuse_within interval DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_submit' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval) IS
'Classifies a task with hx_rule and queues it, not due before run_at (NULL = at once); returns the task id (an unfinished task with the same type and dedupe_key is returned instead; with reuse_within, so is a done one the caller may see that finished within it, booked as reused)';

CREATE FUNCTION hx_submit_batch(task_type text,
								payloads jsonb[],
								sla interval DEFAULT NULL,
								origin text DEFAULT 'background',
								priority integer DEFAULT 0,
								department text DEFAULT NULL,
								deadline timestamptz DEFAULT NULL,
								run_at timestamptz DEFAULT NULL)
RETURNS SETOF bigint
AS 'MODULE_PATHNAME', 'hx_submit_batch' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz, timestamptz) IS
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
'hx_await() of one task: waits until it is done, dead or cancelled, or the timeout passes; returns its status then (READ COMMITTED only; a task queued by the calling transaction is refused)';

/* ------------------------------------------------------------------------
 * Dead letters
 * ------------------------------------------------------------------------ */

CREATE VIEW hx_dead WITH (security_invoker = true) AS
SELECT t.id, t.task_type, t.department, t.route, t.window_name, t.attempts, t.last_error,
	   e.sqlstate AS last_sqlstate, e.at AS last_failed_at, t.finished_at AS died_at,
	   t.payload, t.dedupe_key, t.submitted_by, t.submitted_at
  FROM ONLY hx_task t
  LEFT JOIN LATERAL (SELECT x.sqlstate, x.at FROM hx_error x
					  WHERE x.task_id = t.id ORDER BY x.id DESC LIMIT 1) e ON true
 WHERE t.status = 'dead';

COMMENT ON VIEW hx_dead IS
'Dead tasks (they gave up after their last attempt) the reader may see, with their last error; hx_retry() puts them back in the queue; kept for hybridexec.retention_dead';
COMMENT ON COLUMN hx_dead.id IS 'The task';
COMMENT ON COLUMN hx_dead.task_type IS 'Its type';
COMMENT ON COLUMN hx_dead.department IS 'Its department';
COMMENT ON COLUMN hx_dead.route IS 'stream or batch';
COMMENT ON COLUMN hx_dead.window_name IS 'Its batch window, if any';
COMMENT ON COLUMN hx_dead.attempts IS 'Attempts it made';
COMMENT ON COLUMN hx_dead.last_error IS 'The error of its last attempt';
COMMENT ON COLUMN hx_dead.last_sqlstate IS 'The SQLSTATE of its last attempt''s error (hx_error)';
COMMENT ON COLUMN hx_dead.last_failed_at IS 'When its last attempt failed (hx_error)';
COMMENT ON COLUMN hx_dead.died_at IS 'When it gave up (hx_task.finished_at)';
COMMENT ON COLUMN hx_dead.payload IS 'Its input';
COMMENT ON COLUMN hx_dead.dedupe_key IS 'Its dedupe key, if any';
COMMENT ON COLUMN hx_dead.submitted_by IS 'The role that submitted it';
COMMENT ON COLUMN hx_dead.submitted_at IS 'When it was submitted';

CREATE FUNCTION hx_retry(ids bigint[]) RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_retry_ids' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_retry(bigint[]) IS
'Puts the dead tasks among ids that the caller may see back in the queue (attempts from zero, their errors kept in hx_error; one whose dedupe key an unfinished task has taken stays dead); returns how many';

CREATE FUNCTION hx_retry(task_type text, since timestamptz) RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_retry_type' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_retry(text, timestamptz) IS
'hx_retry() of every dead task of the type that died at or after since, of those the caller may see; returns how many';

CREATE FUNCTION hx_await(ids bigint[], timeout interval DEFAULT '30 seconds')
RETURNS TABLE (id bigint, status text, result jsonb)
AS 'MODULE_PATHNAME', 'hx_await' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_await(bigint[], interval) IS
'Waits until every listed task is done, dead or cancelled, or the timeout passes, woken by the commits that finish them; returns one row per distinct id in the order given, with its status then and its result when done (READ COMMITTED only; a task queued by the calling transaction is refused)';

CREATE FUNCTION _hybridexec.hx_submit_as(submitted_by regrole, task_type text, payload jsonb,
										 sla interval, origin text, priority integer DEFAULT 0,
										 department text DEFAULT NULL, dedupe_key text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'hx_submit_as' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_submit_as(regrole, text, jsonb, interval, text, integer, text, text) IS
'hx_submit() on behalf of a role: the tasks of a watched table are submitted by the role that attached it, a schedule''s by the role that scheduled it';

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
	  FROM (SELECT t.submitted_at FROM ONLY hx_task t
			 WHERE t.status IN ('queued', 'failed') AND t.route = 'stream'
			   AND t.task_type = hx_micro_batch_ready.task_type
			   AND t.run_after <= clock_timestamp()
			 ORDER BY (-t.priority), t.id
			 LIMIT size) q
$$;

COMMENT ON FUNCTION _hybridexec.hx_micro_batch_ready(text, integer, interval) IS
'Worker side: whether the stream tasks of a micro-batched type are ready to go (a full batch, or the oldest has waited micro_batch_wait)';

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
										lost boolean, retry boolean, retry_after interval,
										backoff interval, max_backoff interval,
										OUT status text, OUT delay_ms double precision)
AS 'MODULE_PATHNAME', 'hx_next_try' LANGUAGE C STABLE;

COMMENT ON FUNCTION _hybridexec.hx_next_try(integer, integer, boolean, boolean, boolean, interval, interval, interval) IS
'The retry policy: what becomes of a task whose attempt failed (dead, failed to be retried after delay_ms, or queued again when the attempt was lost with its worker); attempts counts those not throttled; retry_after (the executor said when) retries then whatever the attempts; backoff and max_backoff are the type''s (NULL: hybridexec.retry_backoff, one minute)';

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
'The stream workers the launcher gave this database, from shared memory: pid, idle or busy, tasks done and failed since start (needs shared_preload_libraries)';

CREATE FUNCTION _hybridexec.hx_launcher_status(OUT dboid oid, OUT state text,
											   OUT scheduler_pid integer, OUT stream_share integer,
											   OUT stream_workers integer, OUT batch_workers integer)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'hx_launcher_status' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_launcher_status() IS
'The launcher''s entries from shared memory, one per database it watches (read through hx_databases())';

CREATE FUNCTION hx_databases(OUT database name, OUT state text, OUT scheduler_pid integer,
							 OUT stream_share integer, OUT stream_workers integer,
							 OUT batch_workers integer)
RETURNS SETOF record
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT d.datname, s.state, s.scheduler_pid, s.stream_share, s.stream_workers, s.batch_workers
	  FROM _hybridexec.hx_launcher_status() s
	  JOIN pg_catalog.pg_database d ON d.oid = s.dboid
	 ORDER BY d.datname
$$;

COMMENT ON FUNCTION hx_databases() IS
'The databases the launcher watches on this server: served (the extension is there), absent, probing or paused; the scheduler''s pid, the database''s share of hybridexec.stream_workers, and the stream and batch workers it has now (needs shared_preload_libraries)';

/* the launcher looks at this database again when CREATE or ALTER EXTENSION commits */
CREATE FUNCTION _hybridexec.hx_launcher_notice() RETURNS void
AS 'MODULE_PATHNAME', 'hx_launcher_notice' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_launcher_notice() IS
'Install and update scripts: when the transaction commits, the launcher looks for the extension in this database again and starts its workers';

SELECT _hybridexec.hx_launcher_notice();

CREATE FUNCTION _hybridexec.hx_stream_worker_alive(pid integer) RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_stream_worker_alive' LANGUAGE C VOLATILE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_stream_worker_alive(integer) IS
'Whether a stream worker with this pid is alive now (read from shared memory while the crash sweep scans, after its snapshot)';

/*
 * What a statement that moves done tasks into hx_task_history takes from
 * its caller, by task id (src/task_state.c, HX_MOVE_BY_ID: the "moving
 * set"): set only while that statement runs, in that backend, so that the
 * statement finds its tasks by ctid with no join to be planned.
 */
CREATE FUNCTION _hybridexec.hx_moving_has(id bigint) RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_moving_has' LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_moving_has(bigint) IS
'Worker side: whether a task is in the moving set of the statement this session is running to move done tasks into hx_task_history (false in any other session)';

CREATE FUNCTION _hybridexec.hx_moving_result(id bigint) RETURNS jsonb
AS 'MODULE_PATHNAME', 'hx_moving_result' LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_moving_result(bigint) IS
'Worker side: the result of a task in the moving set of this session''s move (NULL in any other session)';

CREATE FUNCTION _hybridexec.hx_moving_token(id bigint) RETURNS uuid
AS 'MODULE_PATHNAME', 'hx_moving_token' LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_moving_token(bigint) IS
'Worker side: the lease token an external executor completed a task of the moving set with (NULL in any other session)';

CREATE FUNCTION _hybridexec.hx_moving_cost(id bigint) RETURNS numeric
AS 'MODULE_PATHNAME', 'hx_moving_cost' LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_moving_cost(bigint) IS
'Worker side: the cost an external executor reported for a task of the moving set (NULL in any other session)';
