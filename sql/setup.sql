--
-- setup: the extension's objects, the default policy, and the handlers the
-- other tests use.  pg_regress has created the extension already.
--
-- at the version of the control file
SELECT e.extname, e.extversion = a.default_version AS current
  FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname
 WHERE e.extname = 'hybridexec';

-- the default policy of the design brief
SELECT name, position, origin, max_sla, route, window_name
  FROM hx_rule ORDER BY position;
SELECT name, schedule, enabled FROM hx_window ORDER BY name;
SELECT task_type, route, unit_cost FROM hx_price ORDER BY route;

-- every table, view, column and function of the extension carries a
-- comment, and so does every attribute of its composite types
SELECT c.relname AS uncommented_table
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e'
	 AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hybridexec')
 WHERE c.relkind IN ('r', 'v') AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT c.relname, a.attname AS uncommented_column
  FROM pg_class c
  JOIN pg_depend d ON d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hybridexec')
	 AND d.deptype = 'e'
	 AND ((d.classid = 'pg_class'::regclass AND d.objid = c.oid AND c.relkind IN ('r', 'v'))
		  OR (d.classid = 'pg_type'::regclass AND d.objid = c.reltype AND c.relkind = 'c'))
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE col_description(c.oid, a.attnum) IS NULL;
SELECT p.oid::regprocedure AS uncommented_function
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
	 AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hybridexec')
 WHERE obj_description(p.oid, 'pg_proc') IS NULL;

-- the stream workers of this instance serve this database
SELECT count(*) AS stream_slots FROM hx_workers();

-- handlers used by the tests
CREATE TABLE effects (task_key text, note text);
CREATE FUNCTION echo_handler(p jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO effects VALUES (p->>'key', 'echo');
	IF p ? 'fail' THEN
		RAISE EXCEPTION 'echo failed for %', p->>'key'
			USING ERRCODE = 'data_exception', HINT = 'the test asked for it';
	END IF;
	RETURN jsonb_build_object('echo', p);
END
$$;
CREATE FUNCTION sleepy_handler(p jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT pg_sleep((p->>'seconds')::float8); SELECT p $$;
CREATE FUNCTION wrong_args(p text) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION wrong_result(p jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$;
CREATE FUNCTION set_result(p jsonb) RETURNS SETOF jsonb LANGUAGE sql AS $$ SELECT p $$;
CREATE FUNCTION two_args(p jsonb, q jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
CREATE FUNCTION batch_ok(p jsonb[]) RETURNS jsonb[] LANGUAGE sql AS $$ SELECT p $$;
