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
	FOREACH t IN ARRAY ARRAY['hx_type', 'hx_task', 'hx_task_history', 'hx_error', 'hx_department_member',
							 'hx_window', 'hx_window_run', 'hx_checkpoint', 'hx_rule',
							 'hx_price', 'hx_price_period', 'hx_cost_attempt', 'hx_cost_chunk', 'hx_cost_day', 'hx_stat_minute', 'hx_cost_daily',
							 'hx_budget', 'hx_alert_state', 'hx_attachment', 'hx_task_source', 'hx_schedule',
							 'hx_fixed_cost', 'hx_quality', 'hx_precompute', 'hx_archive', 'hx_replay_run',
							 'hx_replay_item']::regclass[] LOOP
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
