/*
 * src/sql/attach.sql
 *
 * Part of the install script: watched tables (hx_attach, hx_backfill,
 * hx_detach).
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

CREATE TABLE hx_attachment (
	source			regclass PRIMARY KEY,
	task_type		text NOT NULL,
	columns			text[],
	on_update		boolean NOT NULL DEFAULT false,
	filter			text,
	result_column	text,
	result_type		text,
	key_columns		text[] NOT NULL,
	sla				interval,
	origin			text NOT NULL DEFAULT 'background',
	backfill_after	jsonb,
	backfill_done	boolean NOT NULL DEFAULT false,
	attached_at		timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE hx_attachment IS 'Watched tables: each row of source becomes a task of task_type (hx_attach); removed by hx_detach or when the table is dropped';
COMMENT ON COLUMN hx_attachment.source IS 'The watched table';
COMMENT ON COLUMN hx_attachment.task_type IS 'Type of the tasks its rows become';
COMMENT ON COLUMN hx_attachment.columns IS 'Columns that make up the payload; NULL = the whole row (without result_column)';
COMMENT ON COLUMN hx_attachment.on_update IS 'Whether an update that changes the payload submits another task';
COMMENT ON COLUMN hx_attachment.filter IS 'Only rows for which this boolean expression over the row''s columns is true become tasks; NULL = all';
COMMENT ON COLUMN hx_attachment.result_column IS 'Column the result of a done task is written into; NULL = no write-back';
COMMENT ON COLUMN hx_attachment.result_type IS 'Type of result_column (json and jsonb take the result as is, other types its text)';
COMMENT ON COLUMN hx_attachment.key_columns IS 'The primary key of source, which hx_task_source records per task';
COMMENT ON COLUMN hx_attachment.sla IS 'SLA passed to hx_submit for each row';
COMMENT ON COLUMN hx_attachment.origin IS 'Origin passed to hx_submit for each row (hx_backfill uses ''backfill'')';
COMMENT ON COLUMN hx_attachment.backfill_after IS 'Primary key of the last row hx_backfill turned into a task (it resumes after it)';
COMMENT ON COLUMN hx_attachment.backfill_done IS 'Whether hx_backfill went through the whole table';
COMMENT ON COLUMN hx_attachment.attached_at IS 'When hx_attach was called';

CREATE TABLE hx_task_source (
	task_id			bigint PRIMARY KEY,
	source			regclass NOT NULL,
	source_key		jsonb NOT NULL
);

CREATE INDEX hx_task_source_key_idx ON hx_task_source (source, source_key);

COMMENT ON TABLE hx_task_source IS 'Which row of a watched table each of its tasks came from';
COMMENT ON COLUMN hx_task_source.task_id IS 'The task (hx_task.id)';
COMMENT ON COLUMN hx_task_source.source IS 'The watched table';
COMMENT ON COLUMN hx_task_source.source_key IS 'Primary key of the row, as a JSON object of its columns';

CREATE FUNCTION hx_attach_payload(a hx_attachment, row_data jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path FROM CURRENT AS $$
	SELECT CASE WHEN a.columns IS NULL
				THEN CASE WHEN a.result_column IS NULL THEN row_data ELSE row_data - a.result_column END
				ELSE (SELECT coalesce(jsonb_object_agg(c, row_data->c), '{}') FROM unnest(a.columns) c) END
$$;

COMMENT ON FUNCTION hx_attach_payload(hx_attachment, jsonb) IS
'The payload of a watched row: its chosen columns (or all but the result column)';

CREATE FUNCTION hx_attach_submit(a hx_attachment, row_data jsonb, origin text) RETURNS bigint
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	task bigint;
BEGIN
	task := hx_submit(a.task_type, hx_attach_payload(a, row_data), sla => a.sla, origin => origin);
	INSERT INTO hx_task_source (task_id, source, source_key)
	SELECT task, a.source, jsonb_object_agg(k, row_data->k) FROM unnest(a.key_columns) k
	ON CONFLICT (task_id) DO NOTHING;
	RETURN task;
END
$$;

COMMENT ON FUNCTION hx_attach_submit(hx_attachment, jsonb, text) IS
'Submits the task of one watched row and records which row it came from';

CREATE FUNCTION hx_attach_passes(a hx_attachment, row_data jsonb) RETURNS boolean
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	pass boolean;
BEGIN
	EXECUTE format('SELECT EXISTS (SELECT 1 FROM jsonb_populate_record(NULL::%s, $1) r WHERE (%s))',
				   a.source, a.filter)
	   INTO pass USING row_data;
	RETURN pass;
END
$$;

COMMENT ON FUNCTION hx_attach_passes(hx_attachment, jsonb) IS
'Whether a row (as JSON) passes the filter of its attachment';

CREATE FUNCTION hx_attach_row() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
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

COMMENT ON FUNCTION hx_attach_row() IS
'Trigger on watched tables: submits a task for the new (or changed) row when it passes the filter';

CREATE FUNCTION hx_attach_write_back() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	a hx_attachment;
	k jsonb;
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
	/*
	 * A row that cannot take the result (column renamed, type mismatch,
	 * no privilege) must not block the completion: the result stays in
	 * hx_task, and the completing session gets a warning.
	 */
	BEGIN
		EXECUTE format('UPDATE %s SET %I = %s WHERE (%s) = (SELECT %s FROM jsonb_populate_record(NULL::%s, $2))',
					   a.source, a.result_column,
					   CASE a.result_type WHEN 'jsonb' THEN '$1'
										  WHEN 'json' THEN '$1::json'
										  ELSE format('($1 #>> ''{}'')::%s', a.result_type) END,
					   (SELECT string_agg(format('%I', c), ', ') FROM unnest(a.key_columns) c),
					   (SELECT string_agg(format('%I', c), ', ') FROM unnest(a.key_columns) c),
					   a.source)
		  USING NEW.result, k;
	EXCEPTION WHEN OTHERS THEN
		RAISE WARNING 'could not write a result back into %: %', a.source, SQLERRM
			USING DETAIL = format('Task %s is done all the same.', NEW.id),
				  HINT = 'The result is in hx_task.result; check hx_attachment.result_column and the completing role''s UPDATE privilege on the table.';
	END;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION hx_attach_write_back() IS
'Trigger on hx_task (present while an attachment has a result_column): writes the result of a done task into the row of the watched table it came from, in the same transaction (a row that cannot take it gets a warning, the completion stands)';

/* the write-back trigger on hx_task exists only while it has work */
/*
 * SECURITY DEFINER: a table owner who is not the owner of hx_task may
 * attach a table with write-back; the function only creates or drops this
 * one trigger.
 */
CREATE FUNCTION hx_attach_sync_write_back() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
DECLARE
	wanted boolean := EXISTS (SELECT 1 FROM hx_attachment WHERE result_column IS NOT NULL);
	present boolean := EXISTS (SELECT 1 FROM pg_trigger
								WHERE tgrelid = 'hx_task'::regclass AND tgname = 'hx_attach_write_back');
BEGIN
	IF wanted AND NOT present THEN
		CREATE TRIGGER hx_attach_write_back AFTER UPDATE OF status ON hx_task
			FOR EACH ROW WHEN (NEW.status = 'done' AND OLD.status IS DISTINCT FROM 'done')
			EXECUTE FUNCTION hx_attach_write_back();
	ELSIF present AND NOT wanted THEN
		DROP TRIGGER hx_attach_write_back ON hx_task;
	END IF;
END
$$;

COMMENT ON FUNCTION hx_attach_sync_write_back() IS
'Creates the write-back trigger on hx_task when an attachment has a result_column, drops it when none has';

CREATE FUNCTION hx_attach(source regclass,
						  task_type text,
						  columns text[] DEFAULT NULL,
						  on_update boolean DEFAULT false,
						  filter text DEFAULT NULL,
						  result_column text DEFAULT NULL,
						  sla interval DEFAULT NULL,
						  origin text DEFAULT 'background')
RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	src regclass := hx_attach.source;
	keys text[];
	bad text;
	rtype text;
	watched text[];
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
	IF NOT pg_has_role((SELECT c.relowner FROM pg_class c WHERE c.oid = src), 'USAGE') THEN
		RAISE EXCEPTION 'must be owner of table %', src
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Attach the table as its owner.';
	END IF;
	IF NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = hx_attach.task_type) THEN
		RAISE EXCEPTION 'unknown task type "%"', task_type
			USING ERRCODE = 'undefined_object',
				  HINT = 'Register it first with hx_register().';
	END IF;
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
			EXECUTE format('SELECT 1 FROM %s WHERE (%s) LIMIT 0', src, filter);
		EXCEPTION WHEN OTHERS THEN
			RAISE EXCEPTION 'invalid filter for table %: %', src, SQLERRM
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'The filter is a boolean expression over the table''s columns, such as priority = ''urgent''.';
		END;
	END IF;
	IF result_column IS NOT NULL THEN
		SELECT format_type(a.atttypid, a.atttypmod) INTO rtype
		  FROM pg_attribute a WHERE a.attrelid = src AND a.attname = result_column;
	END IF;

	INSERT INTO hx_attachment (source, task_type, columns, on_update, filter, result_column,
							   result_type, key_columns, sla, origin)
	VALUES (src, task_type, columns, coalesce(on_update, false), filter, result_column,
			rtype, keys, sla, coalesce(origin, 'background'));

	/* updates fire only for the payload's columns, never for the result's */
	SELECT array_agg(quote_ident(a.attname::text) ORDER BY a.attnum) INTO watched
	  FROM pg_attribute a
	 WHERE a.attrelid = src AND a.attnum > 0 AND NOT a.attisdropped
	   AND (columns IS NULL OR a.attname = ANY (columns))
	   AND a.attname IS DISTINCT FROM result_column;
	EXECUTE format('CREATE TRIGGER hx_attach AFTER INSERT%s ON %s FOR EACH ROW EXECUTE FUNCTION %I.hx_attach_row()',
				   CASE WHEN coalesce(on_update, false) THEN ' OR UPDATE OF ' || array_to_string(watched, ', ') ELSE '' END,
				   src, (SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
						  WHERE p.oid = 'hx_attach_row'::regproc));
	PERFORM hx_attach_sync_write_back();
END
$$;

COMMENT ON FUNCTION hx_attach(regclass, text, text[], boolean, text, text, interval, text) IS
'Watches a table: each inserted row (and, with on_update, each row whose payload changes) that passes filter becomes a task of task_type whose payload is the row (or columns); with result_column, the result of a done task is written into its row';

CREATE FUNCTION hx_detach(source regclass) RETURNS void
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM hx_attachment x WHERE x.source = hx_detach.source) THEN
		RAISE EXCEPTION 'table % is not attached', source
			USING ERRCODE = 'undefined_object',
				  HINT = 'SELECT source FROM hx_attachment lists the watched tables.';
	END IF;
	EXECUTE format('DROP TRIGGER IF EXISTS hx_attach ON %s', source);
	DELETE FROM hx_task_source s WHERE s.source = hx_detach.source;
	DELETE FROM hx_attachment x WHERE x.source = hx_detach.source;
	PERFORM hx_attach_sync_write_back();
END
$$;

COMMENT ON FUNCTION hx_detach(regclass) IS
'Stops watching a table: removes its trigger and registration (tasks already queued still run, their results are no longer written back)';

CREATE FUNCTION hx_backfill(source regclass, chunk integer DEFAULT 10000) RETURNS integer
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
	a hx_attachment;
	keys text;
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
	keys := (SELECT string_agg(format('%I', c), ', ') FROM unnest(a.key_columns) c);
	FOR r IN EXECUTE format(
		'SELECT to_jsonb(t) AS row_data FROM %s t %s ORDER BY %s LIMIT %s',
		a.source,
		CASE WHEN a.backfill_after IS NULL THEN ''
			 ELSE format('WHERE (%s) > (SELECT %s FROM jsonb_populate_record(NULL::%s, %L))',
						 keys, keys, a.source, a.backfill_after) END,
		keys, chunk)
	LOOP
		n := n + 1;
		last_key := (SELECT jsonb_object_agg(k, r.row_data->k) FROM unnest(a.key_columns) k);
		/* rows that already have a task (inserted since hx_attach) are skipped */
		IF NOT EXISTS (SELECT 1 FROM hx_task_source s
						WHERE s.source = a.source AND s.source_key = last_key)
		   AND (a.filter IS NULL OR hx_attach_passes(a, r.row_data)) THEN
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

COMMENT ON FUNCTION hx_backfill(regclass, integer) IS
'Goes through up to chunk existing rows of an attached table (after the last one done, in primary-key order) and turns those that pass the filter and have no task yet into tasks with origin ''backfill'' (the rules classify them); returns how many rows it went through: call again until it returns 0 (hx_attachment.backfill_done)';

/*
 * A dropped watched table takes its registration with it.  SECURITY
 * DEFINER: any role may drop its own tables, without rights on ours.
 */
CREATE FUNCTION hx_attach_dropped() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, pg_temp AS $$
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

COMMENT ON FUNCTION hx_attach_dropped() IS
'Event trigger: forgets the attachments of dropped tables';

CREATE EVENT TRIGGER hx_attach_dropped ON sql_drop
	WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
	EXECUTE FUNCTION hx_attach_dropped();

COMMENT ON EVENT TRIGGER hx_attach_dropped IS
'Forgets the attachments (and task sources) of dropped watched tables';
REVOKE ALL ON FUNCTION hx_attach_sync_write_back() FROM PUBLIC;
