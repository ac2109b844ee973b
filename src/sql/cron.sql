/*
 * src/sql/cron.sql
 *
 * Part of the install script: cron schedules (parsed in src/cron.c) and
 * the pg_cron jobs that open windows, kept in sync with hx_window when
 * pg_cron is installed in this database.
 */

/* ------------------------------------------------------------------------
 * Cron schedules
 * ------------------------------------------------------------------------ */

CREATE FUNCTION hx_cron_next(schedule text, after timestamptz DEFAULT now(),
							 time_zone text DEFAULT 'UTC')
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'hx_cron_next' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION hx_cron_next(text, timestamptz, text) IS
'The first moment strictly after "after" that a cron schedule (5 fields or @hourly/@daily/@weekly/@monthly/@yearly) fires, read in time_zone; raises a clear error for bad cron text';

CREATE FUNCTION hx_cron_prev(schedule text, before timestamptz DEFAULT now(),
							 time_zone text DEFAULT 'UTC')
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'hx_cron_prev' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION hx_cron_prev(text, timestamptz, text) IS
'The last moment not after "before" that a cron schedule fired, read in time_zone (NULL if not within a year)';

/* the time zone pg_cron reads schedules in (GMT unless cron.timezone says otherwise) */
CREATE FUNCTION _hybridexec.hx_cron_time_zone() RETURNS text
LANGUAGE sql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
	SELECT coalesce(nullif(current_setting('cron.timezone', true), ''), 'GMT')
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_time_zone() IS
'The time zone window schedules are read in: pg_cron''s cron.timezone, GMT when unset';

CREATE FUNCTION _hybridexec.hx_cron_job_name(window_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'hybridexec window ' || window_name $$;

COMMENT ON FUNCTION _hybridexec.hx_cron_job_name(text) IS 'Name of the pg_cron job that opens a window';

CREATE FUNCTION _hybridexec.hx_cron_available() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	RETURN EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron');
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_available() IS 'True when pg_cron is installed in this database';

/*
 * Removes the pg_cron jobs whose names start with prefix, but for those
 * named prefix || one of keep (NULL: the job named prefix alone).  pg_cron
 * must be installed; its table is read with dynamic SQL, since it may not
 * exist when this is created.
 */
CREATE FUNCTION _hybridexec.hx_cron_unschedule(prefix text, keep text[] DEFAULT '{}') RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	job bigint;
BEGIN
	FOR job IN EXECUTE 'SELECT jobid FROM cron.job WHERE CASE WHEN $2 IS NULL THEN jobname = $1
							ELSE starts_with(jobname, $1) AND substr(jobname, length($1) + 1) <> ALL ($2) END'
			   USING prefix, keep LOOP
		PERFORM cron.unschedule(job);
	END LOOP;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_unschedule(text, text[]) IS
'Removes the pg_cron jobs named prefix plus anything but the names in keep (keep NULL: the job named prefix)';

/*
 * Puts the job of a window or schedule in line with its row: schedule NULL
 * (no row, or not enabled) removes it; else cron.schedule, which replaces
 * the job of that name.  pg_cron must be installed.
 */
CREATE FUNCTION _hybridexec.hx_cron_put(job_name text, schedule text, command text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF schedule IS NULL THEN
		PERFORM hx_cron_unschedule(job_name, NULL);
	ELSE
		PERFORM cron.schedule(job_name, schedule, command);
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_put(text, text, text) IS
'Creates or replaces the pg_cron job named job_name, or removes it when schedule is NULL';

/*
 * Keeps the job of one window in line with its row; SECURITY DEFINER so
 * that the jobs belong to the extension's owner whoever edits hx_window.
 */
CREATE FUNCTION _hybridexec.hx_cron_sync_window(old_name text, new_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	w hx_window;
BEGIN
	IF NOT hx_cron_available() THEN
		/*
		 * Tell once, when the DBA can see it: CREATE EXTENSION runs its
		 * script with client_min_messages raised to warning.
		 */
		IF NOT EXISTS (SELECT 1 FROM hx_state WHERE key = 'pg_cron missing noticed')
		   AND current_setting('client_min_messages') IN ('debug5', 'debug4', 'debug3', 'debug2',
														   'debug1', 'log', 'notice') THEN
			INSERT INTO hx_state (key, value) VALUES ('pg_cron missing noticed', 'true')
			ON CONFLICT (key) DO NOTHING;
			RAISE NOTICE 'pg_cron is not installed in this database: batch windows will not open on their schedules'
				USING HINT = 'Run CREATE EXTENSION pg_cron (with pg_cron in shared_preload_libraries and cron.database_name set to this database), then SELECT hx_sync_cron(); or open windows yourself with SELECT hx_run_window(name). You are told this once.';
		END IF;
		RETURN;
	END IF;
	IF old_name IS NOT NULL AND old_name IS DISTINCT FROM new_name THEN
		PERFORM hx_cron_unschedule(hx_cron_job_name(old_name), NULL);
	END IF;
	IF new_name IS NULL THEN
		RETURN;
	END IF;
	/* no row (all fields NULL) or a disabled one: no job */
	SELECT * INTO w FROM hx_window WHERE name = new_name;
	PERFORM hx_cron_put(hx_cron_job_name(new_name), CASE WHEN w.enabled THEN w.schedule END,
						format('SELECT %I.hx_run_window(%L, %L)',
							   (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
								 WHERE e.extname = 'hybridexec'),
							   new_name, 'cron'));
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_sync_window(text, text) IS
'Creates, replaces or removes the pg_cron job of one window to match its hx_window row';

CREATE FUNCTION _hybridexec.hx_window_cron() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF TG_OP = 'INSERT' THEN
		PERFORM hx_cron_sync_window(NULL, NEW.name);
	ELSIF TG_OP = 'UPDATE' THEN
		PERFORM hx_cron_sync_window(OLD.name, NEW.name);
	ELSE
		PERFORM hx_cron_sync_window(OLD.name, NULL);
	END IF;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_window_cron() IS 'Trigger: keeps the pg_cron job of each window in sync with hx_window';

CREATE FUNCTION hx_sync_cron() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	n integer := 0;
	w record;
BEGIN
	IF NOT hx_cron_available() THEN
		RAISE EXCEPTION 'pg_cron is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, and CREATE EXTENSION pg_cron.';
	END IF;
	/* jobs of windows and schedules that are gone or disabled (schedules.sql) */
	PERFORM hx_cron_unschedule(hx_cron_job_name(''), ARRAY(SELECT name FROM hx_window WHERE enabled));
	PERFORM hx_cron_unschedule(hx_schedule_job_name(''), ARRAY(SELECT name FROM hx_schedule WHERE enabled));
	FOR w IN SELECT name FROM hx_window WHERE enabled ORDER BY name LOOP
		PERFORM hx_cron_sync_window(NULL, w.name);
		n := n + 1;
	END LOOP;
	FOR w IN SELECT name FROM hx_schedule WHERE enabled ORDER BY name LOOP
		PERFORM hx_cron_sync_schedule(w.name);
		n := n + 1;
	END LOOP;
	RETURN n;
END
$$;

COMMENT ON FUNCTION hx_sync_cron() IS
'Recreates the pg_cron job of every enabled window and schedule and removes stale ones (run it after installing pg_cron); returns the number of jobs';
