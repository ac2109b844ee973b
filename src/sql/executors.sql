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
CREATE INDEX hx_task_lease_idx ON hx_task (lease_expires_at)
	WHERE status = 'running' AND lease_expires_at IS NOT NULL;

/* ------------------------------------------------------------------------
 * Claiming
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_claim_check(task_types text[], route text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql STABLE SET search_path FROM CURRENT AS $$
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

CREATE FUNCTION hx_claim(executor text,
						 task_types text[] DEFAULT NULL,
						 route text DEFAULT NULL,
						 max integer DEFAULT 1,
						 lease interval DEFAULT '5 minutes')
RETURNS SETOF hx_claimed
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	claim_route text := hx_claim.route;
	claim_types text[] := hx_claim.task_types;
	claim_max integer := hx_claim.max;
	claim_lease interval := hx_claim.lease;
	claim_executor text := hx_claim.executor;
BEGIN
	IF claim_executor IS NULL OR claim_executor = '' THEN
		RAISE EXCEPTION 'executor must not be empty'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Name the executor, such as ''summarizer@host-1''; it is recorded in hx_task.executor.';
	END IF;
	IF claim_max IS NULL OR claim_max NOT BETWEEN 1 AND 10000 THEN
		RAISE EXCEPTION 'max must be between 1 and 10000, not %', coalesce(claim_max::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Claim fewer tasks per call and call again.';
	END IF;
	IF claim_lease IS NULL OR claim_lease <= interval '0' THEN
		RAISE EXCEPTION 'lease must be a positive interval, not %', coalesce(claim_lease::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The lease is how long the executor may hold a task without a heartbeat, such as ''5 minutes''.';
	END IF;
	PERFORM hx_claim_check(claim_types, claim_route);

	/*
	 * Built per call, with the route as a literal, so that the plan walks
	 * the partial index of that route in claim order and stops at max.
	 */
	RETURN QUERY EXECUTE format($q$
	WITH c AS (
		SELECT t.id, o.run
		  FROM hx_task t
		  JOIN hx_type y ON y.task_type = t.task_type
						AND y.handler IS NULL AND y.batch_handler IS NULL
		  LEFT JOIN LATERAL (SELECT max(r.id) AS run FROM hx_window_run r
							  WHERE t.route = 'batch' AND r.window_name = t.window_name
								AND r.status IN ('starting', 'running')) o ON true
		 WHERE t.status IN ('queued', 'failed') AND t.run_after <= now() AND %s
		   AND ($1 IS NULL OR t.task_type = ANY ($1))
		   /* batch tasks while their window is open, once per run */
		   AND (t.route = 'stream'
				OR (o.run IS NOT NULL AND t.run_id IS DISTINCT FROM o.run))
		 ORDER BY t.priority DESC, t.id
		 LIMIT $2
		 FOR UPDATE OF t SKIP LOCKED
	)
	UPDATE hx_task t
	   SET status = 'running', attempts = t.attempts + 1, started_at = clock_timestamp(),
		   finished_at = NULL, worker_pid = NULL, executor = $3,
		   lease_token = gen_random_uuid(), lease_expires_at = clock_timestamp() + $4,
		   run_id = CASE WHEN t.route = 'batch' THEN c.run ELSE t.run_id END,
		   reported_cost = NULL
	  FROM c, hx_type y
	 WHERE t.id = c.id AND y.task_type = t.task_type
	RETURNING t.id, t.task_type, t.payload, t.attempts, y.max_attempts, t.lease_token,
			  t.lease_expires_at, t.route, t.window_name, t.run_id, t.priority,
			  t.deadline, t.submitted_at$q$,
		CASE claim_route WHEN 'stream' THEN $r$t.route = 'stream'$r$
						 WHEN 'batch' THEN $r$t.route = 'batch'$r$
						 ELSE 'true' END)
	USING claim_types, claim_max, claim_executor, claim_lease;
END
$$;

COMMENT ON FUNCTION hx_claim(text, text[], text, integer, interval) IS
'External executors: claims up to max due tasks of types without an in-database handler (FOR UPDATE SKIP LOCKED; batch tasks only while their window is open, once per run), counts the attempt and returns each with a lease token that hx_complete, hx_fail and hx_heartbeat must present before lease_expires_at';

/* ------------------------------------------------------------------------
 * Checking a lease
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_lease_check(id bigint, lease_token uuid) RETURNS hx_task
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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

COMMENT ON FUNCTION hx_lease_check(bigint, uuid) IS
'Executor side: locks the task and raises a clear error unless it is running under this lease token and the lease has not expired';

/*
 * Books failed external attempts (the tasks are locked by the caller):
 * one hx_error row each; stream tasks retried after the doubling backoff of
 * hybridexec.retry_backoff, batch tasks in the next run of their window,
 * dead when no attempt is left (or retry is false), with NOTIFY hx_alert.
 */
CREATE FUNCTION hx_external_fail(ids bigint[], error text, sqlstate text,
								 retry boolean, cost numeric, hint text)
RETURNS TABLE (id bigint, status text)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
	/* the setting shows with its unit ('10ms', '1s'), which an interval takes */
	backoff interval := coalesce(nullif(current_setting('hybridexec.retry_backoff', true), ''),
								 '100ms')::interval;
BEGIN
	RETURN QUERY
	WITH upd AS (
		UPDATE hx_task t
		   SET status = CASE WHEN t.attempts >= y.max_attempts OR NOT hx_external_fail.retry
							 THEN 'dead' ELSE 'failed' END,
			   finished_at = CASE WHEN t.attempts >= y.max_attempts OR NOT hx_external_fail.retry
								  THEN clock_timestamp() END,
			   run_after = CASE WHEN t.route = 'batch' THEN clock_timestamp()
								ELSE clock_timestamp()
									 + least(backoff * power(2, least(t.attempts - 1, 20)),
											 interval '60 seconds') END,
			   last_error = hx_external_fail.error,
			   lease_expires_at = NULL,
			   reported_cost = hx_external_fail.cost
		  FROM hx_type y
		 WHERE t.id = ANY (ids) AND y.task_type = t.task_type AND t.status = 'running'
		RETURNING t.id, t.task_type, t.attempts, t.status
	), err AS (
		INSERT INTO hx_error (task_id, task_type, attempt, sqlstate, message, hint)
		SELECT upd.id, upd.task_type, upd.attempts, hx_external_fail.sqlstate,
			   hx_external_fail.error, hx_external_fail.hint
		  FROM upd
	)
	SELECT upd.id, upd.status FROM upd;
	PERFORM pg_notify('hx_alert', json_build_object('event', 'dead', 'task_id', t.id,
					  'task_type', t.task_type, 'error', t.last_error)::text)
	   FROM hx_task t WHERE t.id = ANY (ids) AND t.status = 'dead';
END
$$;

COMMENT ON FUNCTION hx_external_fail(bigint[], text, text, boolean, numeric, text) IS
'Executor side: books failed external attempts of tasks the caller has locked (hx_error row each; retried with backoff, in the next window run, or dead)';

/* ------------------------------------------------------------------------
 * Reporting
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_complete(id bigint, lease_token uuid, result jsonb, cost numeric DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	PERFORM hx_lease_check(id, lease_token);
	IF cost < 0 THEN
		RAISE EXCEPTION 'cost must not be negative, not %', cost
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Report what the attempt cost, or NULL to book the catalog price.';
	END IF;
	UPDATE hx_task t
	   SET status = 'done', result = hx_complete.result, finished_at = clock_timestamp(),
		   lease_expires_at = NULL, reported_cost = hx_complete.cost
	 WHERE t.id = hx_complete.id;
END
$$;

COMMENT ON FUNCTION hx_complete(bigint, uuid, jsonb, numeric) IS
'External executors: the attempt under this lease succeeded; stores the result and the cost it reported (NULL = the catalog price is booked). Errors when the lease is stale or expired';

CREATE FUNCTION hx_complete_many(ids bigint[], lease_tokens uuid[], results jsonb[] DEFAULT NULL,
								 costs numeric[] DEFAULT NULL)
RETURNS TABLE (id bigint, status text)
LANGUAGE sql SET search_path FROM CURRENT AS $$
	/* one statement for many attempts; a stale or expired lease is refused, alone */
	WITH d AS (
		SELECT u.id, u.token, coalesce(u.result, '{}'::jsonb) AS result, u.cost
		  FROM unnest(ids, lease_tokens, results, costs) AS u (id, token, result, cost)
	), upd AS (
		UPDATE hx_task t
		   SET status = 'done', result = d.result, finished_at = clock_timestamp(),
			   lease_expires_at = NULL, reported_cost = d.cost
		  FROM d
		 WHERE t.id = d.id AND t.lease_token = d.token AND t.status = 'running'
		   AND t.lease_expires_at >= clock_timestamp() AND (d.cost IS NULL OR d.cost >= 0)
		RETURNING t.id
	)
	SELECT d.id, CASE WHEN upd.id IS NULL THEN 'refused' ELSE 'done' END
	  FROM d LEFT JOIN upd ON upd.id = d.id
$$;

COMMENT ON FUNCTION hx_complete_many(bigint[], uuid[], jsonb[], numeric[]) IS
'External executors: hx_complete for many attempts in one statement (results NULL = {}); returns done, or refused for a stale or expired lease or a negative cost (the others are still completed)';

CREATE FUNCTION hx_fail(id bigint, lease_token uuid, error text, retry boolean DEFAULT true,
						cost numeric DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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
	RETURN (SELECT f.status FROM hx_external_fail(ARRAY[id], error, '38000',
												  coalesce(retry, true), cost,
												  'Reported by the executor.') f);
END
$$;

COMMENT ON FUNCTION hx_fail(bigint, uuid, text, boolean, numeric) IS
'External executors: the attempt under this lease failed (hx_error row, SQLSTATE 38000); the task is retried like a failed handler call, or dead when retry is false or no attempt is left. Returns the new status';

CREATE FUNCTION hx_lease_args_check(ids bigint[], lease_tokens uuid[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
BEGIN
	IF ids IS NULL OR lease_tokens IS NULL
	   OR cardinality(ids) <> cardinality(lease_tokens) THEN
		RAISE EXCEPTION 'ids and lease_tokens must be arrays of the same length'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass one lease token (from hx_claim) per task id, in the same order.';
	END IF;
END
$$;

COMMENT ON FUNCTION hx_lease_args_check(bigint[], uuid[]) IS
'Executor side: raises a clear error unless there is one lease token per task id';

CREATE FUNCTION hx_heartbeat(ids bigint[], lease_tokens uuid[], lease interval DEFAULT '5 minutes')
RETURNS TABLE (id bigint, lease_expires_at timestamptz)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
	i integer;
BEGIN
	PERFORM hx_lease_args_check(ids, lease_tokens);
	IF hx_heartbeat.lease IS NULL OR hx_heartbeat.lease <= interval '0' THEN
		RAISE EXCEPTION 'lease must be a positive interval'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'The lease runs this long from now, such as ''5 minutes''.';
	END IF;
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
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	expired bigint[];
BEGIN
	SELECT array_agg(t.id) INTO expired FROM (
		SELECT t.id FROM hx_task t
		 WHERE t.status = 'running' AND t.lease_expires_at < clock_timestamp()
		 ORDER BY t.id
		 FOR UPDATE SKIP LOCKED) t;
	IF expired IS NULL THEN
		RETURN 0;
	END IF;
	RETURN (SELECT count(*) FROM hx_external_fail(expired, 'lease expired', '57014', true, NULL,
			'The executor neither reported nor sent a heartbeat in time (it crashed, hung or lost its connection); the attempt counts as failed.'));
END
$$;

COMMENT ON FUNCTION hx_reclaim_leases() IS
'Books every running external attempt whose lease has expired as failed (''lease expired'', SQLSTATE 57014; same retry rules); returns how many. The scheduler calls it every tick; callable by hand';

CREATE FUNCTION hx_executor_maintenance() RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	PERFORM hx_reclaim_leases();
END
$$;

COMMENT ON FUNCTION hx_executor_maintenance() IS
'Scheduler step for external executors: reclaims expired leases';

REVOKE ALL ON FUNCTION hx_external_fail(bigint[], text, text, boolean, numeric, text) FROM PUBLIC;

/* ------------------------------------------------------------------------
 * Batch files (hx_worker --batch)
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_result_cost(result jsonb, cost_field text) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE SET search_path FROM CURRENT AS $$
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
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
#variable_conflict use_column
DECLARE
	parsed jsonb[];
	line text;
	n integer := 0;
	j jsonb;
	bad text;
	f record;
	msg text;
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

	CREATE TEMP TABLE IF NOT EXISTS hx_batch_lines (id bigint, token uuid, line jsonb, error text)
		ON COMMIT DROP;
	TRUNCATE hx_batch_lines;
	INSERT INTO hx_batch_lines
	SELECT u.id, u.token, l.line,
		   CASE WHEN l.line IS NULL THEN 'no line for this task in the output of the batch command'
				WHEN l.line ? 'error' AND l.line->'error' <> 'null'
				THEN CASE WHEN jsonb_typeof(l.line->'error') = 'string' THEN l.line->>'error'
						  ELSE (l.line->'error')::text END
				WHEN NOT l.line ? 'result'
				THEN 'the output line for this task has neither "result" nor "error"' END
	  FROM unnest(ids, lease_tokens) AS u (id, token)
	  LEFT JOIN (SELECT DISTINCT ON (p->>'custom_id') p->>'custom_id' AS cid, p AS line
				   FROM unnest(parsed) WITH ORDINALITY AS x (p, n)
				  WHERE jsonb_typeof(p) = 'object' AND p ? 'custom_id'
				  ORDER BY p->>'custom_id', n) l ON l.cid = u.id::text;

	/* the results in one statement */
	RETURN QUERY
	SELECT c.id, c.status,
		   CASE WHEN c.status = 'refused' THEN 'the lease is stale or expired, or the cost negative' END
	  FROM hx_complete_many(
			(SELECT array_agg(b.id ORDER BY b.id) FROM hx_batch_lines b WHERE b.error IS NULL),
			(SELECT array_agg(b.token ORDER BY b.id) FROM hx_batch_lines b WHERE b.error IS NULL),
			(SELECT array_agg(b.line->'result' ORDER BY b.id) FROM hx_batch_lines b WHERE b.error IS NULL),
			(SELECT array_agg(coalesce(hx_result_cost(b.line->'result', cost_field),
									   hx_result_cost(b.line, cost_field)) ORDER BY b.id)
			   FROM hx_batch_lines b WHERE b.error IS NULL)) c;

	/* the failures one by one, each with its own message */
	FOR f IN SELECT b.id, b.token, b.error FROM hx_batch_lines b WHERE b.error IS NOT NULL ORDER BY b.id LOOP
		BEGIN
			id := f.id; status := hx_fail(f.id, f.token, f.error); error := f.error;
		EXCEPTION WHEN OTHERS THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
			id := f.id; status := 'refused'; error := msg;
		END;
		RETURN NEXT;
	END LOOP;
	TRUNCATE hx_batch_lines;
END
$$;

COMMENT ON FUNCTION hx_batch_report(bigint[], uuid[], text, text) IS
'Executor side (hx_worker --batch): reads a JSONL output of {"custom_id", "result"} or {"custom_id", "error"} lines and completes or fails each claimed task; a task without a line fails, unknown ids and bad lines are warnings; a stale lease is reported as status refused for that task only';
