/*
 * src/sql/windows.sql
 *
 * Part of the install script: batch windows (hx_window), their validation,
 * the trigger that keeps their pg_cron jobs in sync, and the default
 * windows.  Runs of windows are in batch.sql.
 */

/* ------------------------------------------------------------------------
 * Batch windows
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE hx_window (
	name			text PRIMARY KEY,
	schedule		text NOT NULL,
	max_duration	interval NOT NULL DEFAULT '1 hour',
	chunk_size		integer NOT NULL DEFAULT 1000,
	enabled			boolean NOT NULL DEFAULT true,
	deadline		time,
	margin			interval NOT NULL DEFAULT '15 minutes',
	time_zone		text,
	opportunistic	boolean NOT NULL DEFAULT false,
	parallel		integer NOT NULL DEFAULT 1,
	description		text,
	CONSTRAINT hx_window_name_check CHECK (name <> '' AND length(name) <= 200),
	CONSTRAINT hx_window_parallel_check CHECK (parallel BETWEEN 1 AND 32),
	CONSTRAINT hx_window_chunk_size_check CHECK (chunk_size > 0),
	CONSTRAINT hx_window_max_duration_check
		CHECK (max_duration > interval '0' AND max_duration <= interval '7 days'),
	CONSTRAINT hx_window_margin_check CHECK (margin BETWEEN interval '0' AND interval '1 day')
);
-- [/storage]

COMMENT ON TABLE hx_window IS 'Named batch windows: when batch-routed tasks run and in what chunks';
COMMENT ON COLUMN hx_window.name IS 'Window name (at most 200 characters), referenced by hx_rule.window_name; renaming a window carries its waiting tasks and its runs along';
COMMENT ON COLUMN hx_window.schedule IS 'When the window opens, in cron syntax (minute hour day-of-month month day-of-week)';
COMMENT ON COLUMN hx_window.max_duration IS 'A run stops at a chunk boundary once it has run this long (at most 7 days)';
COMMENT ON COLUMN hx_window.chunk_size IS 'Tasks per chunk; each chunk commits with its checkpoint';
COMMENT ON COLUMN hx_window.enabled IS 'A disabled window keeps its tasks queued';
COMMENT ON COLUMN hx_window.deadline IS 'Adaptive window: results are needed by this local time; the run starts early enough to finish margin before it (NULL = start on schedule)';
COMMENT ON COLUMN hx_window.margin IS 'Adaptive window: how long before the deadline the run should be finished (at most a day)';
COMMENT ON COLUMN hx_window.time_zone IS 'Time zone of deadline (NULL = hybridexec.time_zone); the schedule is in pg_cron''s time zone';
COMMENT ON COLUMN hx_window.parallel IS 'Batch workers a run of the window uses at once (each takes its own share of the tasks), at most hybridexec.batch_workers';
COMMENT ON COLUMN hx_window.opportunistic IS 'May start early while the stream path is idle, and yields at chunk boundaries as soon as stream work waits';
COMMENT ON COLUMN hx_window.description IS 'Free text for humans';

CREATE FUNCTION _hybridexec.hx_window_check() RETURNS trigger
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF NEW.schedule IS NULL THEN
		RAISE EXCEPTION 'hx_window "%": schedule must not be NULL', NEW.name
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'Use five cron fields: minute hour day-of-month month day-of-week, e.g. ''0 2 * * *''.';
	END IF;
	/* raises a clear error naming the bad field */
	PERFORM hx_cron_next(NEW.schedule, now(), 'UTC');
	IF NEW.time_zone IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = NEW.time_zone) THEN
		RAISE EXCEPTION 'hx_window "%": unknown time zone "%"', NEW.name, NEW.time_zone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name from pg_timezone_names, such as ''Europe/Paris''.';
	END IF;
	IF NEW.margin IS NULL THEN
		NEW.margin := interval '15 minutes';
	END IF;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_check() IS 'Trigger: rejects hx_window rows whose schedule is not cron syntax or whose time zone is unknown';

CREATE TRIGGER hx_window_check BEFORE INSERT OR UPDATE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_check();

CREATE TRIGGER hx_window_cron AFTER INSERT OR UPDATE OR DELETE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_cron();

/*
 * Tasks and runs refer to a window by name: a rename carries them along, a
 * window that rules send tasks to or that tasks still wait for cannot go,
 * and neither can change while a run of it is under way (its batch workers
 * know it by name).  Rules follow a rename by their foreign key; deleting
 * a window they use is refused here first, with the rules named, rather
 * than by the foreign key's bare error.
 */
CREATE FUNCTION _hybridexec.hx_window_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	waiting bigint;
	rules text;
	nrules integer;
BEGIN
	IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name THEN
		RETURN NEW;
	END IF;
	IF hx_window_open(OLD.name) THEN
		RAISE EXCEPTION 'window "%" is running', OLD.name
			USING ERRCODE = 'object_in_use',
				  HINT = format('Wait for its run to end (SELECT hx_wait_run(id) FROM hx_window_run WHERE window_name = %L AND status IN (''starting'', ''running'')), then try again.', OLD.name);
	END IF;
	IF TG_OP = 'DELETE' THEN
		SELECT count(*) INTO waiting FROM hx_task t
		 WHERE t.window_name = OLD.name AND t.route = 'batch'
		   AND t.status IN ('queued', 'failed', 'running');
		IF waiting > 0 THEN
			RAISE EXCEPTION 'window "%" still has % task(s) waiting for it', OLD.name, waiting
				USING ERRCODE = 'object_in_use',
					  HINT = format('Run it until they are done (SELECT hx_run_window(%L)), cancel them with hx_cancel(), or disable the window instead of deleting it.', OLD.name);
		END IF;
		SELECT string_agg(format('"%s"', r.name) || CASE WHEN r.enabled THEN '' ELSE ' (disabled)' END,
						  ', ' ORDER BY r.position, r.name),
			   count(*)
		  INTO rules, nrules
		  FROM hx_rule r WHERE r.window_name = OLD.name;
		IF nrules > 0 THEN
			RAISE EXCEPTION 'window "%" is used by %', OLD.name,
					CASE WHEN nrules = 1 THEN 'rule ' ELSE 'rules ' END || rules
				USING ERRCODE = 'foreign_key_violation',
					  DETAIL = 'Rules send batch tasks to a window by its name (hx_rule.window_name).',
					  HINT = format('Point the rules at another window (UPDATE hx_rule SET window_name = %s WHERE window_name = %L) or delete them first; or keep the window and disable it (UPDATE hx_window SET enabled = false WHERE name = %L).',
									coalesce((SELECT quote_literal(w.name) FROM hx_window w
											   WHERE w.name <> OLD.name ORDER BY NOT w.enabled, w.name LIMIT 1),
											 '''another window'''),
									OLD.name, OLD.name);
		END IF;
		RETURN OLD;
	END IF;
	PERFORM hx_move_window(OLD.name, NEW.name);
	UPDATE hx_window_run r SET window_name = NEW.name WHERE r.window_name = OLD.name;
	RETURN NEW;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_guard() IS
'Trigger: a renamed window takes its unfinished tasks and its runs along; a window that rules use (23503, naming them) or that tasks wait for cannot be deleted; neither while it runs';

CREATE TRIGGER hx_window_guard BEFORE UPDATE OF name OR DELETE ON hx_window
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_window_guard();

/* ------------------------------------------------------------------------
 * The default policy of the design brief (after the triggers above, so
 * the default windows get their pg_cron jobs)
 * ------------------------------------------------------------------------ */

-- [storage]
INSERT INTO hx_window (name, schedule, max_duration, chunk_size, description) VALUES
	('fast', '*/5 * * * *', '5 minutes', 1000, 'Every five minutes: tasks needed within the hour'),
	('nightly', '0 2 * * *', '4 hours', 1000, 'Off-peak, discounted: everything that can wait');
-- [/storage]
