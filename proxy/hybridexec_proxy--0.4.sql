/*
 * proxy/hybridexec_proxy--0.4.sql
 *
 * hybridexec_proxy: hybridexec over several servers, on PL/Proxy.
 *
 * Installed on a front server (which has hybridexec too: its policy tables
 * are the cluster's master copy), it offers in schema hx_proxy the task
 * API under hybridexec's names - hx_submit, hx_submit_batch, hx_classify,
 * hx_wait, hx_await, hx_cancel, hx_result - as functions that run each
 * call on one shard, an ordinary hybridexec server with its own workers
 * and windows; with hx_proxy before hybridexec's schema in search_path,
 * applications call them unchanged.
 *
 *	cluster		one PL/Proxy cluster, the foreign server hx_shards (SQL/MED):
 *				64 partitions p0..p63, partition p on shard p % n for n
 *				shards (so a hash spreads evenly); hx_add_shards() writes it
 *	ids			shard s hands out task ids from s * 2^48 on (hybridexec's
 *				hx_shard_join()), so id >> 48 is the task's shard, and calls
 *				by id run on partition id >> 48, which is shard id >> 48
 *	submits		run on the partition of hashtext(department) (or of the task
 *				type: hx_proxy_config.route_by; a task without a department
 *				goes by its type)
 *	reports		run on every shard (RUN ON ALL) and are combined here; each
 *				has a _by_shard twin with a shard column
 *	policy		hx_push_policy() copies the front's policy to every shard;
 *				hx_policy_drift() and hx_health() compare digests
 *
 * Every remote call is a statement of its own on its shard (PL/Proxy runs
 * it in autocommit): nothing spans shards, and the front's transaction
 * does not cover what the shards did.
 */

\echo Use "CREATE EXTENSION hybridexec_proxy" to load this file. \quit

CREATE SCHEMA _hx_proxy;

COMMENT ON SCHEMA _hx_proxy IS
'hybridexec_proxy''s internals: the PL/Proxy functions behind the API in hx_proxy and their helpers';

/* ------------------------------------------------------------------------
 * Settings
 * ------------------------------------------------------------------------ */

CREATE TABLE hx_proxy_config (
	only_row		boolean PRIMARY KEY DEFAULT true,
	route_by		text NOT NULL DEFAULT 'department',
	CONSTRAINT hx_proxy_config_only_row_check CHECK (only_row),
	CONSTRAINT hx_proxy_config_route_by_check CHECK (route_by IN ('department', 'task_type'))
);

INSERT INTO hx_proxy_config DEFAULT VALUES;
SELECT pg_catalog.pg_extension_config_dump('hx_proxy_config', '');

COMMENT ON TABLE hx_proxy_config IS
'hybridexec_proxy''s settings: one row, changed with UPDATE';
COMMENT ON COLUMN hx_proxy_config.only_row IS 'Always true: the table has one row';
COMMENT ON COLUMN hx_proxy_config.route_by IS
'What hx_submit() hashes to pick a shard: department (a task without one goes by its type) or task_type; changing it moves only new tasks';

CREATE FUNCTION _hx_proxy.hx_proxy_config_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
BEGIN
	IF NEW.route_by IS NULL OR NEW.route_by NOT IN ('department', 'task_type') THEN
		RAISE EXCEPTION 'hybridexec_proxy cannot route by "%"', coalesce(NEW.route_by, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set hx_proxy.hx_proxy_config.route_by to department or task_type.';
	END IF;
	IF NOT NEW.only_row THEN
		RAISE EXCEPTION 'hx_proxy_config has exactly one row'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'UPDATE the row that is there.';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hx_proxy.hx_proxy_config_check() IS
'Trigger: rejects a route_by other than department or task_type, with a hint';

CREATE TRIGGER hx_proxy_config_check BEFORE INSERT OR UPDATE ON hx_proxy_config
	FOR EACH ROW EXECUTE FUNCTION _hx_proxy.hx_proxy_config_check();

/* ------------------------------------------------------------------------
 * The cluster: foreign server hx_shards
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hx_proxy.hx_partitions() RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS 'SELECT 64';

COMMENT ON FUNCTION _hx_proxy.hx_partitions() IS
'PL/Proxy partitions of the cluster (a power of two, at least the most shards, 32): partition p is on shard p % n';

CREATE FUNCTION hx_shards()
RETURNS TABLE (shard integer, conninfo text, partitions integer, first_id bigint)
LANGUAGE sql STABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	WITH o AS (
		SELECT substr(split_part(opt, '=', 1), 2)::integer AS part,
			   substr(opt, strpos(opt, '=') + 1) AS conninfo
		  FROM pg_foreign_server s, unnest(s.srvoptions) AS opt
		 WHERE s.srvname = 'hx_shards' AND opt ~ '^p[0-9]+='
	), n AS (
		SELECT count(DISTINCT o.conninfo)::integer AS n FROM o
	)
	SELECT o.part, o.conninfo,
		   (SELECT count(*) FROM o x WHERE x.conninfo = o.conninfo)::integer,
		   greatest(o.part::bigint << 48, 1)
	  FROM o, n
	 WHERE o.part < n.n
	 ORDER BY o.part
$$;

COMMENT ON FUNCTION hx_shards() IS
'The shards of the cluster (foreign server hx_shards), in shard order: number, connection string, how many of the 64 partitions it holds, and the first task id it hands out (shard * 2^48)';

CREATE FUNCTION _hx_proxy.hx_shard_count() RETURNS integer
LANGUAGE sql STABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT count(DISTINCT substr(opt, strpos(opt, '=') + 1))::integer
	  FROM pg_foreign_server s, unnest(s.srvoptions) AS opt
	 WHERE s.srvname = 'hx_shards' AND opt ~ '^p[0-9]+='
$$;

COMMENT ON FUNCTION _hx_proxy.hx_shard_count() IS 'How many shards the cluster has (0 before hx_add_shards())';

/* is this PL/Proxy error one of reaching a shard (not one the shard raised)? */
CREATE FUNCTION _hx_proxy.hx_connection_error(message text) RETURNS boolean
LANGUAGE sql IMMUTABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT message ~ '\] PQ[A-Za-z]+: ' OR message ~ 'connect timeout to: '
		   OR message ~ 'Lost result|Unfinished connection|server closed the connection'
$$;

COMMENT ON FUNCTION _hx_proxy.hx_connection_error(text) IS
'Whether a PL/Proxy error message is about reaching a shard (connect, send, lost connection) rather than an error the shard raised';

/*
 * Called in an exception handler with the error's message: raises
 * 08006 naming the shard when the error was about reaching it, else
 * returns (and the caller re-raises the original error).
 */
CREATE FUNCTION _hx_proxy.hx_raise_unreachable(shard integer, message text, what text) RETURNS void
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
BEGIN
	IF NOT hx_connection_error(message) THEN
		RETURN;
	END IF;
	IF shard IS NULL THEN
		RAISE EXCEPTION 'a shard cannot be reached (% failed)', what
			USING ERRCODE = 'connection_failure', DETAIL = message,
				  HINT = 'hx_proxy.hx_health() names the shard; the other shards keep working, and its tasks wait there until it is back.';
	END IF;
	RAISE EXCEPTION 'shard % cannot be reached (% failed)', shard, what
		USING ERRCODE = 'connection_failure', DETAIL = message,
			  HINT = format('Only shard %s''s tasks wait (they finish after it is back); the other shards keep working. Try again later; with a dedupe_key a repeated submit is safe.', shard);
END
$$;

COMMENT ON FUNCTION _hx_proxy.hx_raise_unreachable(integer, text, text) IS
'Raises 08006 (connection_failure) naming the shard when a PL/Proxy error message is about reaching it; returns otherwise';

/* the schema hybridexec is in here on the front (for its policy functions) */
CREATE FUNCTION _hx_proxy.hx_front_schema() RETURNS text
LANGUAGE sql STABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT quote_ident(n.nspname)
	  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
	 WHERE e.extname = 'hybridexec'
$$;

COMMENT ON FUNCTION _hx_proxy.hx_front_schema() IS 'The schema of extension hybridexec on this (front) server, quoted';

/* ------------------------------------------------------------------------
 * Where a call runs
 * ------------------------------------------------------------------------ */

/* inlinable (no SET): the shard of an id costs nothing in a query */
CREATE FUNCTION hx_shard_of(id bigint) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT (id >> 48)::integer
$$;

COMMENT ON FUNCTION hx_shard_of(bigint) IS
'The shard a task id belongs to: id >> 48 (shard s hands out ids from s * 2^48 on)';

CREATE FUNCTION _hx_proxy.hx_id_hash(id bigint) RETURNS integer
LANGUAGE plpgsql IMMUTABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
BEGIN
	IF id IS NULL THEN
		RAISE EXCEPTION 'a task id must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass ids returned by hx_proxy.hx_submit().';
	END IF;
	RETURN (id >> 48)::integer;
END
$$;

COMMENT ON FUNCTION _hx_proxy.hx_id_hash(bigint) IS
'PL/Proxy''s RUN ON value for a task id: its shard number, which is the partition of that shard (partition p < n is shard p)';

CREATE FUNCTION _hx_proxy.hx_route_hash(task_type text, department text) RETURNS integer
LANGUAGE sql STABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT hashtext(CASE WHEN c.route_by = 'department' AND department IS NOT NULL
						 THEN 'department:' || department
						 ELSE 'task_type:' || coalesce(task_type, '') END)
	  FROM hx_proxy.hx_proxy_config c
$$;

COMMENT ON FUNCTION _hx_proxy.hx_route_hash(text, text) IS
'PL/Proxy''s RUN ON value for a new task: hashtext() of its department (or of its type, as hx_proxy_config.route_by says); partition hash & 63, shard partition % n';

CREATE FUNCTION hx_shard_for(task_type text, department text DEFAULT NULL) RETURNS integer
LANGUAGE plpgsql STABLE SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	n integer := hx_shard_count();
BEGIN
	IF n = 0 THEN
		RAISE EXCEPTION 'the cluster has no shards'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add them with hx_proxy.hx_add_shards(ARRAY[''host=... dbname=...'', ...]).';
	END IF;
	RETURN (hx_route_hash(task_type, department) & (hx_partitions() - 1)) % n;
END
$$;

COMMENT ON FUNCTION hx_shard_for(text, text) IS
'The shard hx_proxy.hx_submit() sends a task of this type and department to now';

/* ------------------------------------------------------------------------
 * Setting up: shards, their ids
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hx_proxy.hx_shard_join(shard integer) RETURNS bigint
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard;
	SELECT hx_shard_join($1);
$$;

COMMENT ON FUNCTION _hx_proxy.hx_shard_join(integer) IS
'PL/Proxy: hybridexec''s hx_shard_join(shard) on that shard';

CREATE FUNCTION hx_add_shards(conninfos text[])
RETURNS TABLE (shard integer, conninfo text, partitions integer, first_id bigint)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	owner oid := (SELECT e.extowner FROM pg_extension e WHERE e.extname = 'hybridexec_proxy');
	have text[];
	list text[];
	n integer;
	opts text;
	exists_already boolean := EXISTS (SELECT 1 FROM pg_foreign_server s WHERE s.srvname = 'hx_shards');
	msg text;
	s integer;
BEGIN
	IF NOT pg_has_role(current_user, owner, 'MEMBER') THEN
		RAISE EXCEPTION 'only the owner of extension hybridexec_proxy may add shards'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = format('Run it as %s or a superuser.', owner::regrole);
	END IF;
	IF conninfos IS NULL OR cardinality(conninfos) = 0
	   OR EXISTS (SELECT 1 FROM unnest(conninfos) c WHERE c IS NULL OR btrim(c) = '') THEN
		RAISE EXCEPTION 'hx_add_shards needs one connection string per new shard'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'For example hx_proxy.hx_add_shards(ARRAY[''host=db1 dbname=app'', ''host=db2 dbname=app'']).';
	END IF;
	SELECT coalesce(array_agg(h.conninfo ORDER BY h.shard), '{}') INTO have FROM hx_shards() h;
	list := have || conninfos;
	IF (SELECT count(DISTINCT c) FROM unnest(list) c) <> cardinality(list) THEN
		RAISE EXCEPTION 'every shard needs a connection string of its own'
			USING ERRCODE = 'duplicate_object',
				  DETAIL = format('Shards now: %s; to add: %s.', array_to_string(have, ' | '), array_to_string(conninfos, ' | ')),
				  HINT = 'List each shard''s database once, and none that hx_proxy.hx_shards() lists already (PL/Proxy would take two equal strings for one shard).';
	END IF;
	n := cardinality(list);
	IF n > 32 THEN
		RAISE EXCEPTION 'a cluster has at most 32 shards, not %', n
			USING ERRCODE = 'program_limit_exceeded',
				  HINT = 'Task ids are shard * 2^48 + n: past 32 shards they would exceed 2^53, where JSON clients lose precision.';
	END IF;
	SELECT string_agg(format('%s p%s %L', CASE WHEN exists_already THEN 'SET' ELSE '' END, p, list[p % n + 1]), ', ')
	  INTO opts
	  FROM generate_series(0, hx_partitions() - 1) p;
	IF exists_already THEN
		EXECUTE format('ALTER SERVER hx_shards OPTIONS (%s)', opts);
	ELSE
		EXECUTE format('CREATE SERVER hx_shards FOREIGN DATA WRAPPER plproxy OPTIONS (%s)', opts);
		COMMENT ON SERVER hx_shards IS
			'hybridexec_proxy''s cluster: partition p (of 64) is on shard p % n; written by hx_proxy.hx_add_shards()';
		GRANT USAGE ON FOREIGN SERVER hx_shards TO hybridexec_submitter, hybridexec_admin;
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_user_mappings m WHERE m.srvname = 'hx_shards' AND m.usename = 'public') THEN
		/* no user option: every role connects to the shards as itself */
		CREATE USER MAPPING FOR PUBLIC SERVER hx_shards;
	END IF;
	/* number every shard (again: a shard numbered otherwise refuses, so a reordered list fails here) */
	FOR s IN 0 .. n - 1 LOOP
		BEGIN
			PERFORM hx_shard_join(s);
		EXCEPTION WHEN internal_error THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
			PERFORM hx_raise_unreachable(s, msg, 'numbering it');
			RAISE;
		END;
	END LOOP;
	RETURN QUERY SELECT * FROM hx_shards();
END
$$;

COMMENT ON FUNCTION hx_add_shards(text[]) IS
'Adds shards (libpq connection strings, each a database with hybridexec) to the cluster, after those it has: writes foreign server hx_shards (64 partitions, p on shard p % n; created with a PUBLIC user mapping, so roles connect as themselves, and USAGE for hybridexec''s roles), numbers every shard (hybridexec''s hx_shard_join: shard s''s ids start at s * 2^48) and returns hx_shards(); all shards must be up; new tasks spread over the new set, existing ones stay where their ids say; for the extension''s owner';

/* ------------------------------------------------------------------------
 * The task API, through PL/Proxy
 *
 * Each public function (hx_proxy) keeps hybridexec's signature, so that
 * named arguments and defaults work unchanged, and calls its PL/Proxy
 * twin (_hx_proxy) with where to run; errors raised on the shard pass
 * through as they are, a shard that cannot be reached becomes 08006.
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hx_proxy.hx_submit(shard_hash integer, task_type text, payload jsonb, sla interval,
									origin text, priority integer, department text, dedupe_key text,
									deadline timestamptz, run_at timestamptz, reuse_within interval)
RETURNS bigint LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard_hash;
	SELECT hx_submit($2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
$$;

COMMENT ON FUNCTION _hx_proxy.hx_submit(integer, text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval) IS
'PL/Proxy: hx_submit() on the partition of shard_hash';

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
RETURNS bigint LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN _hx_proxy.hx_submit(hx_route_hash(task_type, department), task_type, payload, sla, origin,
							   priority, department, dedupe_key, deadline, run_at, reuse_within);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_for(task_type, department), msg, 'submit');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval) IS
'hybridexec''s hx_submit() on the shard of the task''s department (or type: hx_proxy_config.route_by); returns the id, which says the shard (id >> 48); committed there at once, whatever becomes of the caller''s transaction; dedupe keys are per shard';

CREATE FUNCTION _hx_proxy.hx_submit_batch(shard_hash integer, task_type text, payloads jsonb[], sla interval,
										  origin text, priority integer, department text,
										  deadline timestamptz, run_at timestamptz)
RETURNS SETOF bigint LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard_hash;
	SELECT hx_submit_batch($2, $3, $4, $5, $6, $7, $8, $9);
$$;

COMMENT ON FUNCTION _hx_proxy.hx_submit_batch(integer, text, jsonb[], interval, text, integer, text, timestamptz, timestamptz) IS
'PL/Proxy: hx_submit_batch() on the partition of shard_hash';

CREATE FUNCTION hx_submit_batch(task_type text,
								payloads jsonb[],
								sla interval DEFAULT NULL,
								origin text DEFAULT 'background',
								priority integer DEFAULT 0,
								department text DEFAULT NULL,
								deadline timestamptz DEFAULT NULL,
								run_at timestamptz DEFAULT NULL)
RETURNS SETOF bigint LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN QUERY SELECT * FROM _hx_proxy.hx_submit_batch(hx_route_hash(task_type, department), task_type,
														 payloads, sla, origin, priority, department,
														 deadline, run_at);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_for(task_type, department), msg, 'submit');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz, timestamptz) IS
'hybridexec''s hx_submit_batch() on the shard of the department (or type): all the tasks on one shard, in one INSERT there; ids in payload order';

CREATE FUNCTION _hx_proxy.hx_classify(shard_hash integer, task_type text, payload jsonb, sla interval,
									  origin text, priority integer, department text, dedupe_key text,
									  deadline timestamptz, at timestamptz)
RETURNS TABLE (route text, window_name text, rule_name text, reason text, est_cost numeric)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard_hash;
	SELECT c.route, c.window_name, c.rule_name, c.reason, c.est_cost
	  FROM hx_classify($2, $3, $4, $5, $6, $7, $8, $9, $10) c;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_classify(integer, text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'PL/Proxy: hx_classify() on the partition of shard_hash';

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
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN QUERY SELECT * FROM _hx_proxy.hx_classify(hx_route_hash(task_type, department), task_type, payload,
													 sla, origin, priority, department, dedupe_key,
													 deadline, at);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_for(task_type, department), msg, 'classify');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz) IS
'hybridexec''s hx_classify() on the shard hx_proxy.hx_submit() would send the task to (its budgets and backlog decide there); queues nothing';

CREATE FUNCTION _hx_proxy.hx_wait(id bigint, timeout interval) RETURNS text
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON _hx_proxy.hx_id_hash(id);
	SELECT hx_wait($1, $2);
$$;

COMMENT ON FUNCTION _hx_proxy.hx_wait(bigint, interval) IS 'PL/Proxy: hx_wait() on the task''s shard';

CREATE FUNCTION hx_wait(id bigint, timeout interval DEFAULT '30 seconds') RETURNS text
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN _hx_proxy.hx_wait(id, timeout);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_of(id), msg, 'wait');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_wait(bigint, interval) IS
'hybridexec''s hx_wait() on the task''s shard (id >> 48)';

CREATE FUNCTION _hx_proxy.hx_await(ids bigint[], timeout interval)
RETURNS TABLE (id bigint, status text, result jsonb)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	SPLIT ids;
	RUN ON _hx_proxy.hx_id_hash(ids);
	SELECT a.id, a.status, a.result FROM hx_await($1, $2) a;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_await(bigint[], interval) IS
'PL/Proxy: hx_await() of each shard''s share of ids, on all those shards at once';

CREATE FUNCTION hx_await(ids bigint[], timeout interval DEFAULT '30 seconds')
RETURNS TABLE (id bigint, status text, result jsonb)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	IF ids IS NULL OR array_position(ids, NULL) IS NOT NULL THEN
		RAISE EXCEPTION 'hx_await needs an array of task ids without NULLs'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Pass ids returned by hx_proxy.hx_submit().';
	END IF;
	IF cardinality(ids) = 0 THEN
		RETURN;
	END IF;
	RETURN QUERY SELECT a.id, a.status, a.result
				   FROM _hx_proxy.hx_await(ids, timeout) a
				  ORDER BY array_position(ids, a.id);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	/* which shard failed is known only when all the ids are on one */
	PERFORM hx_raise_unreachable(CASE WHEN (SELECT count(DISTINCT hx_shard_of(i)) FROM unnest(ids) i) = 1
									  THEN hx_shard_of(ids[1]) END, msg, 'await');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_await(bigint[], interval) IS
'hybridexec''s hx_await() over shards: each shard waits for its own ids (id >> 48) at the same time, up to timeout; one row per distinct id in the order given';

CREATE FUNCTION _hx_proxy.hx_cancel(id bigint) RETURNS boolean
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON _hx_proxy.hx_id_hash(id);
	SELECT hx_cancel($1);
$$;

COMMENT ON FUNCTION _hx_proxy.hx_cancel(bigint) IS 'PL/Proxy: hx_cancel() on the task''s shard';

CREATE FUNCTION hx_cancel(id bigint) RETURNS boolean
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN _hx_proxy.hx_cancel(id);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_of(id), msg, 'cancel');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_cancel(bigint) IS 'hybridexec''s hx_cancel() on the task''s shard (id >> 48)';

CREATE FUNCTION _hx_proxy.hx_result(id bigint)
RETURNS TABLE (task_id bigint, tier integer, final boolean, result jsonb)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON _hx_proxy.hx_id_hash(id);
	SELECT r.task_id, r.tier, r.final, r.result FROM hx_result($1) r;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_result(bigint) IS 'PL/Proxy: hx_result() on the task''s shard';

CREATE FUNCTION hx_result(id bigint)
RETURNS TABLE (task_id bigint, tier integer, final boolean, result jsonb)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	msg text;
BEGIN
	RETURN QUERY SELECT * FROM _hx_proxy.hx_result(id);
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(hx_shard_of(id), msg, 'result');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_result(bigint) IS
'hybridexec''s hx_result() on the task''s shard (a chain of tiers lives on one shard)';

/* ------------------------------------------------------------------------
 * Cluster-wide reports
 *
 * Each runs on every shard at once (RUN ON ALL: every shard must be up;
 * hx_health() says which is not) with the front's now() for its period.
 * hx_<report>_by_shard returns the shards' own rows under hybridexec's
 * columns with a shard column first (a row type of its own, which the
 * PL/Proxy function returns too); hx_<report> combines them under
 * hybridexec's columns: counts, costs and rates are summed per group,
 * and a column no sum can give (a percentile, a ratio) is the worst
 * shard's, as each function's comment says.
 * ------------------------------------------------------------------------ */

CREATE TYPE _hx_proxy.hx_cost_report_row AS (
	shard integer, "group" text, currency text, tasks bigint, attempts bigint, cost numeric,
	baseline_cost numeric, saved numeric, run_seconds numeric);

COMMENT ON TYPE _hx_proxy.hx_cost_report_row IS 'A shard''s hx_cost_report() row, with its number';

CREATE FUNCTION _hx_proxy.hx_cost_report(group_by text, from_at timestamptz, to_at timestamptz)
RETURNS SETOF _hx_proxy.hx_cost_report_row LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON ALL;
	SELECT hx_shard_number() AS shard, r.* FROM hx_cost_report($1, $2, $3) r;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_cost_report(text, timestamptz, timestamptz) IS
'PL/Proxy: hx_cost_report() on every shard, with its number';

CREATE FUNCTION hx_cost_report_by_shard(group_by text DEFAULT 'department',
										"from" timestamptz DEFAULT now() - interval '1 day',
										"to" timestamptz DEFAULT now())
RETURNS SETOF _hx_proxy.hx_cost_report_row
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT * FROM _hx_proxy.hx_cost_report(group_by, "from", "to") r
	 ORDER BY r.shard, r."group", r.currency
$$;

COMMENT ON FUNCTION hx_cost_report_by_shard(text, timestamptz, timestamptz) IS
'hybridexec''s hx_cost_report() of every shard, with the shard''s number';

CREATE FUNCTION hx_cost_report(group_by text DEFAULT 'department',
							   "from" timestamptz DEFAULT now() - interval '1 day',
							   "to" timestamptz DEFAULT now())
RETURNS TABLE ("group" text, currency text, tasks bigint, attempts bigint, cost numeric,
			   baseline_cost numeric, saved numeric, run_seconds numeric)
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT r."group", r.currency, sum(r.tasks)::bigint, sum(r.attempts)::bigint, sum(r.cost),
		   sum(r.baseline_cost), sum(r.saved), sum(r.run_seconds)
	  FROM hx_cost_report_by_shard(group_by, "from", "to") r
	 GROUP BY 1, 2
	 ORDER BY 1, 2
$$;

COMMENT ON FUNCTION hx_cost_report(text, timestamptz, timestamptz) IS
'hybridexec''s hx_cost_report() over the cluster: every column is the sum of the shards'' (a task lives on one shard, so tasks add up too); hx_cost_report_by_shard() shows the split';

CREATE TYPE _hx_proxy.hx_savings_row AS (
	shard integer, currency text, attempts bigint, actual_cost numeric, all_stream_cost numeric,
	all_batch_cost numeric, saved numeric, saved_pct numeric, background_saved_pct numeric,
	interactive_tasks bigint, interactive_p50_s numeric, interactive_p95_s numeric,
	all_batch_p50_s numeric, all_batch_p95_s numeric, latency_cut_pct numeric,
	fixed_stream_cost numeric, fixed_batch_cost numeric, total_cost numeric,
	all_stream_total numeric, all_batch_total numeric, saved_with_fixed numeric);

COMMENT ON TYPE _hx_proxy.hx_savings_row IS 'A shard''s hx_savings() row, with its number';

CREATE FUNCTION _hx_proxy.hx_savings(from_at timestamptz, to_at timestamptz, batch_window text)
RETURNS SETOF _hx_proxy.hx_savings_row LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON ALL;
	SELECT hx_shard_number() AS shard, r.* FROM hx_savings($1, $2, $3) r;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_savings(timestamptz, timestamptz, text) IS
'PL/Proxy: hx_savings() on every shard, with its number';

CREATE FUNCTION hx_savings_by_shard("from" timestamptz DEFAULT now() - interval '1 day',
									"to" timestamptz DEFAULT now(),
									batch_window text DEFAULT NULL)
RETURNS SETOF _hx_proxy.hx_savings_row
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT * FROM _hx_proxy.hx_savings("from", "to", batch_window) r ORDER BY r.shard, r.currency
$$;

COMMENT ON FUNCTION hx_savings_by_shard(timestamptz, timestamptz, text) IS
'hybridexec''s hx_savings() of every shard, with the shard''s number (each shard counts the whole fixed costs, which are policy)';

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
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	WITH s AS (
		SELECT r.currency, sum(r.attempts)::bigint AS attempts, sum(r.actual_cost) AS actual,
			   sum(r.all_stream_cost) AS stream, sum(r.all_batch_cost) AS batch,
			   count(*) AS shards, max(r.background_saved_pct) AS bg_pct, max(r.latency_cut_pct) AS cut_pct,
			   sum(r.interactive_tasks)::bigint AS interactive,
			   max(r.interactive_p50_s) AS p50, max(r.interactive_p95_s) AS p95,
			   max(r.all_batch_p50_s) AS b50, max(r.all_batch_p95_s) AS b95,
			   /* fixed costs are policy, the same on every shard: count them once */
			   max(r.fixed_stream_cost) AS fs, max(r.fixed_batch_cost) AS fb
		  FROM hx_savings_by_shard("from", "to", batch_window) r
		 GROUP BY r.currency
	)
	SELECT s.currency, s.attempts, s.actual, s.stream, s.batch, s.stream - s.actual,
		   CASE WHEN s.stream > 0 THEN round(100 * (s.stream - s.actual) / s.stream, 1) END,
		   CASE WHEN s.shards = 1 THEN s.bg_pct END,
		   s.interactive, s.p50, s.p95, s.b50, s.b95,
		   CASE WHEN s.shards = 1 THEN s.cut_pct END,
		   s.fs, s.fb, s.actual + s.fs + s.fb, s.stream + s.fs, s.batch + s.fb,
		   s.stream + s.fs - (s.actual + s.fs + s.fb)
	  FROM s
	 ORDER BY s.currency
$$;

COMMENT ON FUNCTION hx_savings(timestamptz, timestamptz, text) IS
'hybridexec''s hx_savings() over the cluster: attempts and costs summed, saved and saved_pct from the sums, fixed costs (policy, the same on every shard) counted once; the latency percentiles are the worst shard''s (an upper bound of the cluster''s); background_saved_pct and latency_cut_pct only when a single shard has bookings (else NULL: hx_savings_by_shard() has each shard''s)';

CREATE TYPE _hx_proxy.hx_stats_row AS (
	shard integer, task_type text, route text, queued bigint, running bigint, failed bigint,
	done bigint, dead bigint, oldest_queued interval,
	per_min_1 numeric, per_min_5 numeric, per_min_15 numeric, error_rate numeric,
	wait_p50_ms numeric, wait_p95_ms numeric, wait_p99_ms numeric,
	run_p50_ms numeric, run_p95_ms numeric, run_p99_ms numeric, reused bigint,
	quality numeric, evaluations bigint);

COMMENT ON TYPE _hx_proxy.hx_stats_row IS 'A shard''s hx_stats() row, with its number';

CREATE FUNCTION _hx_proxy.hx_stats(span interval)
RETURNS SETOF _hx_proxy.hx_stats_row LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON ALL;
	SELECT hx_shard_number() AS shard, r.* FROM hx_stats($1) r;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_stats(interval) IS 'PL/Proxy: hx_stats() on every shard, with its number';

CREATE FUNCTION hx_stats_by_shard(span interval DEFAULT '1 hour')
RETURNS SETOF _hx_proxy.hx_stats_row
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT * FROM _hx_proxy.hx_stats(span) r ORDER BY r.shard, r.task_type, r.route
$$;

COMMENT ON FUNCTION hx_stats_by_shard(interval) IS 'hybridexec''s hx_stats() of every shard, with the shard''s number';

CREATE FUNCTION hx_stats(span interval DEFAULT '1 hour')
RETURNS TABLE (task_type text, route text, queued bigint, running bigint, failed bigint,
			   done bigint, dead bigint, oldest_queued interval,
			   per_min_1 numeric, per_min_5 numeric, per_min_15 numeric,
			   error_rate numeric,
			   wait_p50_ms numeric, wait_p95_ms numeric, wait_p99_ms numeric,
			   run_p50_ms numeric, run_p95_ms numeric, run_p99_ms numeric, reused bigint,
			   quality numeric, evaluations bigint)
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT r.task_type, r.route, sum(r.queued)::bigint, sum(r.running)::bigint, sum(r.failed)::bigint,
		   sum(r.done)::bigint, sum(r.dead)::bigint, max(r.oldest_queued),
		   sum(r.per_min_1), sum(r.per_min_5), sum(r.per_min_15),
		   max(r.error_rate),
		   max(r.wait_p50_ms), max(r.wait_p95_ms), max(r.wait_p99_ms),
		   max(r.run_p50_ms), max(r.run_p95_ms), max(r.run_p99_ms),
		   sum(r.reused)::bigint,
		   round(sum(r.quality * r.evaluations) / nullif(sum(r.evaluations) FILTER (WHERE r.quality IS NOT NULL), 0), 3),
		   sum(r.evaluations)::bigint
	  FROM hx_stats_by_shard(span) r
	 GROUP BY 1, 2
	 ORDER BY 1, 2
$$;

COMMENT ON FUNCTION hx_stats(interval) IS
'hybridexec''s hx_stats() over the cluster, per task type and route: counts and per-minute rates summed, oldest_queued the oldest, quality the average weighted by evaluations; error_rate and the percentiles are the worst shard''s (an upper bound of the cluster''s percentile; hx_stats_by_shard() has each shard''s)';

CREATE TYPE _hx_proxy.hx_window_plan_row AS (
	shard integer, window_name text, next_start timestamptz, scheduled_start timestamptz,
	start_reason text, backlog bigint, expected_duration interval,
	expected_finish timestamptz, deadline_at timestamptz, on_time boolean, running_run bigint);

COMMENT ON TYPE _hx_proxy.hx_window_plan_row IS 'A shard''s hx_window_plan() row, with its number';

CREATE FUNCTION _hx_proxy.hx_window_plan(at timestamptz)
RETURNS SETOF _hx_proxy.hx_window_plan_row LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON ALL;
	SELECT hx_shard_number() AS shard, r.* FROM hx_window_plan($1) r;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_window_plan(timestamptz) IS 'PL/Proxy: hx_window_plan() on every shard, with its number';

CREATE FUNCTION hx_window_plan_by_shard(at timestamptz DEFAULT now())
RETURNS SETOF _hx_proxy.hx_window_plan_row
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT * FROM _hx_proxy.hx_window_plan(at) r ORDER BY r.shard, r.window_name
$$;

COMMENT ON FUNCTION hx_window_plan_by_shard(timestamptz) IS
'hybridexec''s hx_window_plan() of every shard, with the shard''s number (each shard runs its own windows)';

CREATE FUNCTION hx_window_plan(at timestamptz DEFAULT now())
RETURNS TABLE (window_name text, next_start timestamptz, scheduled_start timestamptz,
			   start_reason text, backlog bigint, expected_duration interval,
			   expected_finish timestamptz, deadline_at timestamptz,
			   on_time boolean, running_run bigint)
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT r.window_name, min(r.next_start), min(r.scheduled_start),
		   (array_agg(r.start_reason ORDER BY r.next_start NULLS LAST, r.shard))[1],
		   sum(r.backlog)::bigint, max(r.expected_duration), max(r.expected_finish),
		   min(r.deadline_at), bool_and(r.on_time), min(r.running_run)
	  FROM hx_window_plan_by_shard(at) r
	 GROUP BY 1
	 ORDER BY 1
$$;

COMMENT ON FUNCTION hx_window_plan(timestamptz) IS
'hybridexec''s hx_window_plan() over the cluster, per window: backlog summed, the earliest start (and its reason), the longest expected duration and latest finish, on_time only if on time on every shard; running_run is one shard''s running run (run ids are per shard: hx_window_plan_by_shard() says which)';

/* ------------------------------------------------------------------------
 * Policy: set on the front, copied to every shard
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hx_proxy.hx_policy_import(policy jsonb)
RETURNS TABLE (shard integer, policy_table text, changed bigint, deleted bigint)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON ALL;
	SELECT hx_shard_number() AS shard, i.* FROM hx_policy_import($1) i;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_policy_import(jsonb) IS
'PL/Proxy: hybridexec''s hx_policy_import() of the document on every shard, with its number';

CREATE FUNCTION _hx_proxy.hx_policy_digest(shard_no integer)
RETURNS TABLE (policy_table text, rows bigint, digest text)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard_no;
	SELECT d.policy_table, d.rows, d.digest FROM hx_policy_digest() d;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_policy_digest(integer) IS
'PL/Proxy: hybridexec''s hx_policy_digest() on one shard';

CREATE FUNCTION hx_push_policy()
RETURNS TABLE (shard integer, policy_table text, changed bigint, deleted bigint)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	doc jsonb;
	msg text;
BEGIN
	EXECUTE format('SELECT %s.hx_policy_export()', hx_front_schema()) INTO doc;
	RETURN QUERY SELECT i.* FROM _hx_proxy.hx_policy_import(doc) i ORDER BY i.shard, i.policy_table;
EXCEPTION WHEN internal_error THEN
	GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
	PERFORM hx_raise_unreachable(NULL, msg, 'hx_push_policy');
	RAISE;
END
$$;

COMMENT ON FUNCTION hx_push_policy() IS
'Copies this front server''s policy (hybridexec''s hx_policy_export(): types, windows, rules, prices, price periods, budgets, fixed costs) to every shard (hx_policy_import() there, each shard in one transaction of its own, as the extension owner''s mapped user); per shard and table the rows changed and deleted; run it again after a failure';

CREATE FUNCTION hx_policy_drift()
RETURNS TABLE (shard integer, policy_table text, front_rows bigint, shard_rows bigint,
			   front_digest text, shard_digest text, in_sync boolean)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	s integer;
	msg text;
	front jsonb;
BEGIN
	EXECUTE format('SELECT jsonb_object_agg(d.policy_table, jsonb_build_object(''rows'', d.rows, ''digest'', d.digest))
					  FROM %s.hx_policy_digest() d', hx_front_schema())
		INTO front;
	FOR s IN 0 .. hx_shard_count() - 1 LOOP
		BEGIN
			RETURN QUERY
			SELECT s, coalesce(f.key, d.policy_table), (f.value->>'rows')::bigint, d.rows,
				   f.value->>'digest', d.digest, (f.value->>'digest') IS NOT DISTINCT FROM d.digest
			  FROM jsonb_each(front) f
			  FULL JOIN _hx_proxy.hx_policy_digest(s) d ON d.policy_table = f.key
			 ORDER BY 2;
		EXCEPTION WHEN internal_error THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
			PERFORM hx_raise_unreachable(s, msg, 'comparing its policy');
			RAISE;
		END;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_policy_drift() IS
'Per shard and policy table: the front''s and the shard''s row counts and digests (hybridexec''s hx_policy_digest()) and whether they are equal; a shard out of sync was changed directly or missed a push: hx_push_policy() puts it right';

/* ------------------------------------------------------------------------
 * Health: every shard's, unreachable shards, drift
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hx_proxy.hx_health(shard_no integer)
RETURNS TABLE (problem text, severity text, subject text, detail text, hint text)
LANGUAGE plproxy AS $$
	CLUSTER 'hx_shards';
	RUN ON shard_no;
	SELECT h.problem, h.severity, h.subject, h.detail, h.hint FROM hx_health() h;
$$;

COMMENT ON FUNCTION _hx_proxy.hx_health(integer) IS 'PL/Proxy: hybridexec''s hx_health() on one shard';

CREATE FUNCTION hx_health_by_shard()
RETURNS TABLE (shard integer, problem text, severity text, subject text, detail text, hint text)
LANGUAGE plpgsql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
DECLARE
	s integer;
	msg text;
	front jsonb;
	d record;
BEGIN
	EXECUTE format('SELECT jsonb_object_agg(d.policy_table, jsonb_build_object(''rows'', d.rows, ''digest'', d.digest))
					  FROM %s.hx_policy_digest() d', hx_front_schema())
		INTO front;
	FOR s IN 0 .. hx_shard_count() - 1 LOOP
		BEGIN
			RETURN QUERY SELECT s, h.problem, h.severity, h.subject, h.detail, h.hint FROM _hx_proxy.hx_health(s) h;
			FOR d IN SELECT x.policy_table, x.rows, x.digest FROM _hx_proxy.hx_policy_digest(s) x
					  WHERE x.digest IS DISTINCT FROM front->x.policy_table->>'digest' LOOP
				shard := s;
				problem := 'policy drift';
				severity := 'warning';
				subject := d.policy_table;
				detail := format('%s of shard %s (%s rows) differs from the front''s (%s rows)',
								 d.policy_table, s, d.rows, coalesce(front->d.policy_table->>'rows', 'no'));
				hint := 'Change policy on the front only, then run SELECT * FROM hx_proxy.hx_push_policy(); a push overwrites changes made on a shard.';
				RETURN NEXT;
			END LOOP;
		EXCEPTION WHEN internal_error THEN
			GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT;
			IF NOT hx_connection_error(msg) THEN
				RAISE;
			END IF;
			shard := s;
			problem := 'shard unreachable';
			severity := 'critical';
			subject := format('shard %s', s);
			detail := msg;
			hint := format('Start shard %s again (or fix the network to it): its tasks wait there and finish after it is back; submits routed to it fail meanwhile, the other shards keep working.', s);
			RETURN NEXT;
		END;
	END LOOP;
END
$$;

COMMENT ON FUNCTION hx_health_by_shard()  IS
'Every shard''s hx_health() rows with its number, plus a critical "shard unreachable" row for a shard that cannot be reached and a warning "policy drift" row per policy table whose digest differs from the front''s';

CREATE FUNCTION hx_health()
RETURNS TABLE (problem text, severity text, subject text, detail text, hint text)
LANGUAGE sql SET search_path = hx_proxy, _hx_proxy, pg_temp AS $$
	SELECT h.problem, h.severity,
		   CASE WHEN h.problem = 'shard unreachable' THEN h.subject
				ELSE format('shard %s: %s', h.shard, h.subject) END,
		   h.detail, h.hint
	  FROM hx_health_by_shard() h
	 ORDER BY h.severity = 'critical' DESC, h.shard, h.problem, h.subject
$$;

COMMENT ON FUNCTION hx_health() IS
'hybridexec''s hx_health() over the cluster: every shard''s problems (subject prefixed "shard N: "), shards that cannot be reached and policy tables that drifted from the front''s; critical first';

/* ------------------------------------------------------------------------
 * Privileges: nothing for PUBLIC; submitters get the task API, admins
 * everything (setting up shards and pushing policy also need the owner's
 * rights on the shards: they check there)
 * ------------------------------------------------------------------------ */

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA hx_proxy FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA _hx_proxy FROM PUBLIC;
REVOKE ALL ON SCHEMA _hx_proxy FROM PUBLIC;
GRANT USAGE ON SCHEMA hx_proxy, _hx_proxy TO hybridexec_submitter, hybridexec_admin;

GRANT EXECUTE ON FUNCTION
	hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval),
	hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz, timestamptz),
	hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	hx_wait(bigint, interval),
	hx_await(bigint[], interval),
	hx_cancel(bigint),
	hx_result(bigint),
	hx_shard_of(bigint),
	hx_shard_for(text, text),
	_hx_proxy.hx_submit(integer, text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval),
	_hx_proxy.hx_submit_batch(integer, text, jsonb[], interval, text, integer, text, timestamptz, timestamptz),
	_hx_proxy.hx_classify(integer, text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	_hx_proxy.hx_wait(bigint, interval),
	_hx_proxy.hx_await(bigint[], interval),
	_hx_proxy.hx_cancel(bigint),
	_hx_proxy.hx_result(bigint),
	_hx_proxy.hx_id_hash(bigint),
	_hx_proxy.hx_route_hash(text, text),
	_hx_proxy.hx_partitions(),
	_hx_proxy.hx_shard_count(),
	_hx_proxy.hx_connection_error(text),
	_hx_proxy.hx_raise_unreachable(integer, text, text)
TO hybridexec_submitter;

GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA hx_proxy TO hybridexec_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA _hx_proxy TO hybridexec_admin;
GRANT SELECT ON hx_proxy_config TO hybridexec_submitter, hybridexec_admin;
GRANT UPDATE ON hx_proxy_config TO hybridexec_admin;
