/*
 * src/sql/update/begin.sql
 *
 * First step of every update script (hybridexec--<from>--<to>.sql, built
 * by the Makefile): drops the extension's code - views, functions,
 * aggregates, composite types, event triggers, and with them the triggers
 * and policies that use them - keeping its storage (schemas, tables,
 * sequences, indexes and their rows).  The update's own migration then
 * brings the storage to the new version, every part's code is created
 * again as a fresh install creates it, and end.sql re-creates what hangs
 * off user tables.  So an updated database has the same code as a fresh
 * install of the new version, whatever the old one had.
 *
 * Refuses, changing nothing, when an object that is not the extension's
 * depends on its code (a view over hx_stats, a function returning
 * hx_claimed...): dropping it would lose the user's object.  The triggers
 * the extension put on watched tables (hx_attach) are the exception:
 * end.sql puts them back.
 */

\echo Use "ALTER EXTENSION hybridexec UPDATE" to load this file. \quit

SET LOCAL search_path = @extschema@, pg_temp;

DO $hx_update$
DECLARE
	ext oid := (SELECT oid FROM pg_extension WHERE extname = 'hybridexec');
	ext_tables oid[];
	code_class oid[];
	code_obj oid[];
	blockers text;
	r record;
BEGIN
	/* its tables: what hangs off them (triggers, policies) goes with the code */
	SELECT array_agg(d.objid) INTO ext_tables
	  FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
	 WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass
	   AND d.refobjid = ext AND d.deptype = 'e' AND c.relkind IN ('r', 'p');

	/*
	 * The extension's code: members that are not storage.  A view's rule,
	 * an attribute default or a constraint of a member table, a trigger or
	 * policy on one, belong to the extension through their table.
	 */
	SELECT array_agg(d.classid), array_agg(d.objid)
	  INTO code_class, code_obj
	  FROM pg_depend d
	  LEFT JOIN pg_class c ON d.classid = 'pg_class'::regclass AND c.oid = d.objid
	  LEFT JOIN pg_type t ON d.classid = 'pg_type'::regclass AND t.oid = d.objid
	 WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext AND d.deptype = 'e'
	   AND (d.classid IN ('pg_proc'::regclass, 'pg_event_trigger'::regclass)
			OR (d.classid = 'pg_class'::regclass AND c.relkind = 'v')
			OR (d.classid = 'pg_type'::regclass AND t.typtype IN ('c', 'd', 'e')
				AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')));

	/* what depends on that code and is neither the extension's nor ours to re-create */
	WITH code AS (SELECT * FROM unnest(code_class, code_obj) AS x (classid, objid))
	SELECT string_agg(DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
	  INTO blockers
	  FROM pg_depend d
	  JOIN code x ON x.classid = d.refclassid AND x.objid = d.refobjid
	  LEFT JOIN pg_rewrite rw ON d.classid = 'pg_rewrite'::regclass AND rw.oid = d.objid
	  LEFT JOIN pg_trigger tg ON d.classid = 'pg_trigger'::regclass AND tg.oid = d.objid
	  LEFT JOIN pg_policy po ON d.classid = 'pg_policy'::regclass AND po.oid = d.objid
	 WHERE d.deptype IN ('n', 'a')
	   AND NOT EXISTS (SELECT 1 FROM code y WHERE y.classid = d.classid AND y.objid = d.objid)
	   AND NOT EXISTS (SELECT 1 FROM pg_depend m
					    WHERE m.classid = d.classid AND m.objid = d.objid AND m.deptype = 'e')
	   /* our views' own rules */
	   AND NOT (rw.oid IS NOT NULL
				AND EXISTS (SELECT 1 FROM code y WHERE y.classid = 'pg_class'::regclass AND y.objid = rw.ev_class))
	   /* triggers and policies on our tables, and the trigger of each watched table */
	   AND NOT (tg.oid IS NOT NULL AND (tg.tgrelid = ANY (ext_tables) OR tg.tgname = 'hx_attach'))
	   AND NOT (po.oid IS NOT NULL AND po.polrelid = ANY (ext_tables));
	IF blockers IS NOT NULL THEN
		RAISE EXCEPTION 'cannot update extension hybridexec: other objects depend on its functions, views or types'
			USING ERRCODE = 'dependent_objects_still_exist',
				  DETAIL = 'These would be dropped with the old code: ' || blockers || '.',
				  HINT = 'Drop them (keep their definitions), run ALTER EXTENSION hybridexec UPDATE, then create them again.';
	END IF;

	/* views first (they use functions), then event triggers, functions, types */
	FOR r IN SELECT x.objid::regclass AS v FROM unnest(code_class, code_obj) AS x (classid, objid)
			  WHERE x.classid = 'pg_class'::regclass LOOP
		CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = r.v);
		EXECUTE format('DROP VIEW %s CASCADE', r.v);
	END LOOP;
	FOR r IN SELECT e.evtname FROM unnest(code_class, code_obj) AS x (classid, objid)
			   JOIN pg_event_trigger e ON e.oid = x.objid
			  WHERE x.classid = 'pg_event_trigger'::regclass LOOP
		EXECUTE format('DROP EVENT TRIGGER IF EXISTS %I', r.evtname);
	END LOOP;
	FOR r IN SELECT p.oid::regprocedure AS f, p.prokind
			   FROM unnest(code_class, code_obj) AS x (classid, objid)
			   JOIN pg_proc p ON p.oid = x.objid
			  WHERE x.classid = 'pg_proc'::regclass
			  ORDER BY p.prokind = 'a' DESC LOOP
		/* an aggregate's functions may be gone with it */
		CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_proc WHERE oid = r.f);
		EXECUTE format('DROP %s %s CASCADE',
					   CASE r.prokind WHEN 'a' THEN 'AGGREGATE' WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
					   r.f);
	END LOOP;
	FOR r IN SELECT x.objid FROM unnest(code_class, code_obj) AS x (classid, objid)
			  WHERE x.classid = 'pg_type'::regclass LOOP
		CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_type WHERE oid = r.objid);
		EXECUTE format('DROP TYPE %s CASCADE', r.objid::regtype);
	END LOOP;
	/*
	 * the extension's policies that used no function (policies belong to
	 * no extension: ours are told by their names, a DBA's own are kept)
	 */
	FOR r IN SELECT po.polname, po.polrelid::regclass AS rel
			   FROM pg_policy po
			  WHERE po.polrelid = ANY (ext_tables) AND po.polname LIKE 'hx\_%' LOOP
		EXECUTE format('DROP POLICY %I ON %s', r.polname, r.rel);
	END LOOP;
END
$hx_update$;
