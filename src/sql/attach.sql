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
	attached_by		regrole NOT NULL,
	max_lag			interval,
	CONSTRAINT hx_attachment_max_lag_check CHECK (max_lag > interval '0')
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
COMMENT ON COLUMN hx_attachment.max_lag IS 'Freshness: hx_health() alerts when rows of the table have waited longer than this for their result (their tasks unfinished); NULL = no alert';
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
'Trigger on hx_task and hx_task_history (present while an attachment has a result_column): writes the result of a done task into the row of the watched table it came from, as the table''s owner, in the same transaction (a row that cannot take it gets a warning, the completion stands)';

/*
 * The write-back triggers exist only while they have work: on hx_task for
 * tasks done in place, on hx_task_history for the tasks a window run's
 * chunk moved there done.
 */
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
		CREATE TRIGGER hx_attach_write_back AFTER INSERT ON hx_task_history
			FOR EACH ROW WHEN (NEW.status = 'done' AND _hybridexec.hx_book_moving())
			EXECUTE FUNCTION _hybridexec.hx_attach_write_back();
	ELSIF present AND NOT wanted THEN
		DROP TRIGGER hx_attach_write_back ON hx_task;
		DROP TRIGGER hx_attach_write_back ON hx_task_history;
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_attach_sync_write_back() IS
'Creates the write-back triggers on hx_task and hx_task_history when an attachment has a result_column, drops them when none has';

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
