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
'External executors: claims up to max due tasks of types without an in-database handler (FOR UPDATE SKIP LOCKED; batch tasks only while their window is open, once per run), counts the attempt and returns each, in claim order (higher priority first, then the older), with a lease token that hx_complete, hx_fail and hx_heartbeat must present before lease_expires_at (a lease is at most 7 days)';

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
										   retry boolean, cost numeric, hint text,
										   retry_after interval DEFAULT NULL)
RETURNS TABLE (id bigint, status text)
AS 'MODULE_PATHNAME', 'hx_fail_leased' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_fail_leased(bigint[], text, text, boolean, numeric, text, interval) IS
'Executor side: books failed external attempts of tasks the caller has locked (an hx_error row each; retried with backoff, after retry_after when given, in the next window run, or dead; a task that cannot be booked is set aside)';

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
						cost numeric DEFAULT NULL, retry_after interval DEFAULT NULL)
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
	IF retry_after < interval '0' OR retry_after > interval '1 day' THEN
		RAISE EXCEPTION 'retry_after must be between 0 and 1 day, not %', retry_after
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass the delay the provider asked for (a 429''s Retry-After), e.g. ''30 seconds''.';
	END IF;
	IF retry_after IS NOT NULL AND retry IS FALSE THEN
		RAISE EXCEPTION 'retry_after asks for a retry, retry => false for none'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Leave retry at true with retry_after.';
	END IF;
	RETURN (SELECT f.status FROM hx_fail_leased(ARRAY[id], error, '38000',
												coalesce(retry, true), cost,
												'Reported by the executor.', retry_after) f);
END
$$;

COMMENT ON FUNCTION hx_fail(bigint, uuid, text, boolean, numeric, interval) IS
'External executors: the attempt under this lease failed (hx_error row, SQLSTATE 38000; counted in the failed of its window run, if any); the task is retried like a failed handler call, or dead when retry is false or no attempt is left; with retry_after (a provider''s 429), retried after that delay, the attempt not counted against max_attempts. Returns the new status';

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
