/*
 * src/sql/policy.sql
 *
 * Part of the install script: the policy as one document, and this
 * database's place in a cluster of hybridexec servers.
 *
 * The policy is what a DBA sets: task types, windows, rules, prices, price
 * periods, budgets and fixed costs.  hx_policy_export() writes it as one
 * jsonb document, hx_policy_import() makes this database's policy equal
 * to such a document, and hx_policy_digest() fingerprints it table by
 * table.  hybridexec_proxy (proxy/) keeps a cluster's policy on its front
 * server and copies it to every shard with these, and compares digests to
 * report drift.
 *
 * hx_shard_join() numbers a shard: its task ids then start at
 * shard * 2^48, so that an id says which shard holds the task.
 */

/* ------------------------------------------------------------------------
 * The policy tables
 * ------------------------------------------------------------------------ */

/* referenced tables before the tables that reference them */
CREATE FUNCTION _hybridexec.hx_policy_tables() RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT ARRAY['hx_type', 'hx_window', 'hx_rule', 'hx_price', 'hx_price_period',
				 'hx_budget', 'hx_fixed_cost']
$$;

COMMENT ON FUNCTION _hybridexec.hx_policy_tables() IS
'The tables that make up the policy, referenced ones first: what hx_policy_export() writes and hx_policy_import() replaces';

CREATE FUNCTION _hybridexec.hx_policy_keys(tbl text) RETURNS text[]
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT array_agg(a.attname::text ORDER BY k.ord)
	  FROM pg_index i
	 CROSS JOIN LATERAL unnest(i.indkey::smallint[]) WITH ORDINALITY AS k(attnum, ord)
	  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
	 WHERE i.indrelid = format('%I.%I', '@extschema@', tbl)::regclass AND i.indisprimary
$$;

COMMENT ON FUNCTION _hybridexec.hx_policy_keys(text) IS
'The primary key columns of a policy table, in key order';

CREATE FUNCTION _hybridexec.hx_policy_columns(tbl text) RETURNS text[]
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT array_agg(a.attname::text ORDER BY a.attnum)
	  FROM pg_attribute a
	 WHERE a.attrelid = format('%I.%I', '@extschema@', tbl)::regclass
	   AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
$$;

COMMENT ON FUNCTION _hybridexec.hx_policy_columns(text) IS
'The stored columns of a policy table, in table order';

/*
 * One table's rows as a jsonb array in key order.  The settings that
 * change how values print (time zone, interval style, float digits) are
 * pinned by the callers, so that the same rows give the same text on
 * every server, whatever the session's settings.
 */
CREATE FUNCTION _hybridexec.hx_policy_rows(tbl text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	rows jsonb;
BEGIN
	EXECUTE format('SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY %s), ''[]'') FROM %I.%I t',
				   (SELECT string_agg(format('t.%I', k), ', ') FROM unnest(hx_policy_keys(tbl)) k),
				   '@extschema@', tbl)
		INTO rows;
	RETURN rows;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_policy_rows(text) IS
'The rows of one policy table as a jsonb array in primary key order (callers pin the settings values print with)';

/* ------------------------------------------------------------------------
 * Export, digest, import
 * ------------------------------------------------------------------------ */

/*
 * Export and digest run as the owner (the policy helpers are internal)
 * for the roles allowed to run them: administrators, who may read every
 * policy table anyway.
 */
CREATE FUNCTION hx_policy_export() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = @extschema@, _hybridexec, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, YMD' SET extra_float_digits = 1
AS $$
DECLARE
	doc jsonb := '{}';
	tbl text;
BEGIN
	FOREACH tbl IN ARRAY hx_policy_tables() LOOP
		doc := doc || jsonb_build_object(tbl, hx_policy_rows(tbl));
	END LOOP;
	RETURN jsonb_build_object('format', 1,
							  'hybridexec', (SELECT e.extversion FROM pg_extension e WHERE e.extname = 'hybridexec'),
							  'tables', doc);
END
$$;

COMMENT ON FUNCTION hx_policy_export() IS
'The policy (hx_type, hx_window, hx_rule, hx_price, hx_price_period, hx_budget, hx_fixed_cost) as one jsonb document: {"format": 1, "hybridexec": version, "tables": {table: [rows in key order]}}; handlers and roles by name; what hx_policy_import() takes';

CREATE FUNCTION hx_policy_digest()
RETURNS TABLE (policy_table text, rows bigint, digest text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT t.key, jsonb_array_length(t.value)::bigint, md5(t.value::text)
	  FROM jsonb_each(hx_policy_export()->'tables') t
	 ORDER BY array_position(hx_policy_tables(), t.key)
$$;

COMMENT ON FUNCTION hx_policy_digest() IS
'Per policy table: its rows and the md5 of their hx_policy_export() text; two servers with equal digests have the same policy (hybridexec_proxy''s hx_policy_drift() compares them)';

CREATE FUNCTION hx_policy_import(policy jsonb)
RETURNS TABLE (policy_table text, changed bigint, deleted bigint)
LANGUAGE plpgsql VOLATILE
SET search_path = @extschema@, _hybridexec, pg_temp
SET TimeZone = 'UTC' SET IntervalStyle = 'postgres' SET DateStyle = 'ISO, YMD' SET extra_float_digits = 1
AS $$
DECLARE
	ext record;
	tbl text;
	cols text[];
	keys text[];
	col_list text;
	excluded_list text;
	current_list text;
	key_match text;
	n bigint;
	seq text;
	col text;
	changes bigint[] := '{}';
	deletes bigint[] := '{}';
	tables text[];
	missing text;
BEGIN
	SELECT e.extowner, e.extversion INTO ext FROM pg_extension e WHERE e.extname = 'hybridexec';
	IF NOT pg_has_role(current_user, ext.extowner, 'MEMBER') THEN
		RAISE EXCEPTION 'only the owner of extension hybridexec may import policy'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = format('Run it as %s or a superuser (hybridexec_proxy''s hx_push_policy() does, through its user mapping).',
								ext.extowner::regrole);
	END IF;
	tables := hx_policy_tables();
	IF policy IS NULL OR jsonb_typeof(policy) <> 'object' OR policy->>'format' IS DISTINCT FROM '1'
	   OR jsonb_typeof(policy->'tables') IS DISTINCT FROM 'object' THEN
		RAISE EXCEPTION 'the policy must be a document made by hx_policy_export()'
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Pass what hx_policy_export() returned on the server whose policy is the master copy.';
	END IF;
	IF policy->>'hybridexec' IS DISTINCT FROM ext.extversion THEN
		RAISE EXCEPTION 'policy exported by hybridexec % cannot be imported into hybridexec %',
			coalesce(policy->>'hybridexec', '(unknown)'), ext.extversion
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Bring both servers to the same version first (ALTER EXTENSION hybridexec UPDATE).';
	END IF;
	SELECT string_agg(t, ', ') INTO missing
	  FROM (SELECT unnest(tables) AS t
			EXCEPT SELECT k FROM jsonb_each(policy->'tables') AS j(k, v) WHERE jsonb_typeof(j.v) = 'array') x;
	IF missing IS NULL THEN
		SELECT string_agg(k, ', ') INTO missing
		  FROM jsonb_object_keys(policy->'tables') AS k WHERE k <> ALL (tables);
	END IF;
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'the policy document does not have exactly the policy tables (%)', missing
			USING ERRCODE = 'invalid_parameter_value',
				  DETAIL = format('It needs an array of rows for each of %s, and nothing else.', array_to_string(tables, ', ')),
				  HINT = 'Pass what hx_policy_export() returned, unchanged.';
	END IF;
	/* a type that goes away must have no work left here */
	SELECT string_agg(DISTINCT format('"%s"', t.task_type), ', ') INTO missing
	  FROM ONLY hx_task t
	 WHERE t.status IN ('queued', 'running', 'failed')
	   AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(policy->'tables'->'hx_type') y
					    WHERE y->>'task_type' = t.task_type);
	IF missing IS NOT NULL THEN
		RAISE EXCEPTION 'the policy drops task types that still have unfinished tasks here: %', missing
			USING ERRCODE = 'object_in_use',
				  HINT = 'Let those tasks finish (or cancel them) before removing their types from the master policy.';
	END IF;

	/* insert or update, referenced tables first */
	FOREACH tbl IN ARRAY tables LOOP
		cols := hx_policy_columns(tbl);
		keys := hx_policy_keys(tbl);
		SELECT string_agg(format('%I', c), ', '), string_agg(format('EXCLUDED.%I', c), ', '),
			   string_agg(format('t.%I', c), ', ')
		  INTO col_list, excluded_list, current_list
		  FROM unnest(cols) c;
		EXECUTE format('WITH up AS (
							INSERT INTO %1$I.%2$I AS t (%3$s)
							SELECT %3$s FROM jsonb_populate_recordset(NULL::%1$I.%2$I, $1)
							ON CONFLICT (%4$s) DO UPDATE SET (%3$s) = ROW(%5$s)
							 WHERE ROW(%6$s) IS DISTINCT FROM ROW(%5$s)
							RETURNING 1)
						SELECT count(*) FROM up',
					   '@extschema@', tbl, col_list,
					   (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k),
					   excluded_list, current_list)
			INTO n USING policy->'tables'->tbl;
		changes := changes || n;
		/* identity columns: local inserts continue after the imported ids */
		FOR seq, col IN SELECT pg_get_serial_sequence(format('%I.%I', '@extschema@', tbl), c), c
							   FROM unnest(cols) c LOOP
			CONTINUE WHEN seq IS NULL;
			EXECUTE format('SELECT setval(%L, m.x) FROM (SELECT max(t.%I) AS x FROM %I.%I t) m
							 WHERE m.x > (SELECT s.last_value FROM %s s)',
						   seq, col, '@extschema@', tbl, seq);
		END LOOP;
	END LOOP;

	/* delete what the document does not have, referencing tables first */
	FOR i IN REVERSE cardinality(tables) .. 1 LOOP
		tbl := tables[i];
		SELECT string_agg(format('r.%1$I = t.%1$I', k), ' AND ') INTO key_match
		  FROM unnest(hx_policy_keys(tbl)) k;
		EXECUTE format('WITH gone AS (
							DELETE FROM %1$I.%2$I t
							 WHERE NOT EXISTS (SELECT 1 FROM jsonb_populate_recordset(NULL::%1$I.%2$I, $1) r
											    WHERE %3$s)
							RETURNING 1)
						SELECT count(*) FROM gone',
					   '@extschema@', tbl, key_match)
			INTO n USING policy->'tables'->tbl;
		deletes[i] := n;
	END LOOP;

	RETURN QUERY SELECT t.tbl, t.changed, t.deleted
				   FROM unnest(tables, changes, deletes) AS t(tbl, changed, deleted);
END
$$;

COMMENT ON FUNCTION hx_policy_import(jsonb) IS
'Makes this database''s policy equal to a document from hx_policy_export() (same hybridexec version): inserts and updates rows by primary key, deletes rows the document lacks (refused while a dropped type has unfinished tasks here), all in the caller''s transaction; handlers and roles must exist here by name; per table the rows changed and deleted; for the extension''s owner only';

/* ------------------------------------------------------------------------
 * Shards: ids that say where a task lives
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_shard_join(shard integer) RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	ext record;
	numbered text;
	low bigint;
	lowest bigint;
	highest bigint;
	seq text := pg_get_serial_sequence(format('%I.hx_task', '@extschema@'), 'id');
BEGIN
	SELECT e.extowner INTO ext FROM pg_extension e WHERE e.extname = 'hybridexec';
	IF NOT pg_has_role(current_user, ext.extowner, 'MEMBER') THEN
		RAISE EXCEPTION 'only the owner of extension hybridexec may number a shard'
			USING ERRCODE = 'insufficient_privilege',
				  HINT = format('Run it as %s or a superuser (hybridexec_proxy''s hx_add_shards() does, through its user mapping).',
								ext.extowner::regrole);
	END IF;
	IF shard IS NULL OR shard < 0 OR shard > 31 THEN
		RAISE EXCEPTION 'a shard number must be between 0 and 31, not %', coalesce(shard::text, 'NULL')
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Task ids are shard * 2^48 + n: up to 32 shards they stay below 2^53, exact in JSON.';
	END IF;
	SELECT s.value INTO numbered FROM _hybridexec.hx_state s WHERE s.key = 'shard';
	IF numbered IS NOT NULL AND numbered <> shard::text THEN
		RAISE EXCEPTION 'this database is shard %, not shard %', numbered, shard
			USING ERRCODE = 'object_in_use',
				  HINT = 'A shard keeps its number, since its tasks'' ids carry it: list the shards in the order they were first added, and add a new database as a new shard.';
	END IF;
	low := shard::bigint << 48;
	SELECT min(t.id), max(t.id) INTO lowest, highest FROM hx_task t;
	IF lowest < low OR highest >= low + (1::bigint << 48) THEN
		RAISE EXCEPTION 'this database has tasks whose ids are not shard %''s (% to %)', shard, lowest, highest
			USING ERRCODE = 'object_in_use',
				  HINT = 'Make shard 0 of the database that has tasks already (its ids start at 1), or join a database without tasks.';
	END IF;
	IF highest IS NULL THEN
		PERFORM setval(seq, greatest(low, 1), false);
	ELSE
		PERFORM setval(seq, highest, true);
	END IF;
	INSERT INTO _hybridexec.hx_state AS s (key, value) VALUES ('shard', shard::text)
		ON CONFLICT (key) DO NOTHING;
	RETURN coalesce(highest + 1, greatest(low, 1));
END
$$;

COMMENT ON FUNCTION hx_shard_join(integer) IS
'Makes this database shard number "shard" (0 to 31) of a hybridexec_proxy cluster: its task ids continue from shard * 2^48, so that an id says which shard holds the task; refused for a database numbered otherwise or with tasks outside that range; returns the next task id; for the extension''s owner only';

CREATE FUNCTION hx_shard_number() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT s.value::integer FROM _hybridexec.hx_state s WHERE s.key = 'shard'
$$;

COMMENT ON FUNCTION hx_shard_number() IS
'The number hx_shard_join() gave this database in a hybridexec_proxy cluster; NULL when it is no shard';
