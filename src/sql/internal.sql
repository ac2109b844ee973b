/*
 * src/sql/internal.sql
 *
 * First part of the install script (the Makefile joins the files of
 * SQL_PARTS, in its order, into hybridexec--<version>.sql): the internal
 * schema and what the other parts share - the small facts the extension
 * remembers (hx_state), the validation of time conditions, the settings
 * read back in seconds.
 *
 * The API (what users call and read) lives in the schema the extension is
 * created in; everything else - triggers, the workers' steps, checks,
 * helpers - in schema _hybridexec, which only the extension's owner may
 * use (privileges.sql), so that \df shows users the API alone.  Every
 * function of both pins its search_path to the two schemas (and pg_temp
 * last), so no object a user creates can stand in for one of ours - but
 * for a few one-statement SQL helpers that are inlined into their callers
 * (a SET clause would prevent it) and so run with their callers' pinned
 * path: hx_local_zone, hx_cron_job_name, hx_price_rule.
 *
 * Storage - schemas, tables, indexes and the rows the extension ships -
 * stands between "-- [storage]" and "-- [/storage]" lines in every part.
 * An update script (src/sql/update/) leaves those blocks out, since its
 * own migration brings the storage up to date, and re-creates everything
 * else: so whatever is outside them must run on an existing database too.
 * Storage new in a version stands between "-- [storage <version>]" and
 * "-- [/storage]": the update to that version creates it as a fresh
 * install does (the migration need not repeat it), later ones leave it out.
 */

\echo Use "CREATE EXTENSION hybridexec" to load this file. \quit

-- [storage]
CREATE SCHEMA _hybridexec;
-- [/storage]

COMMENT ON SCHEMA _hybridexec IS
'hybridexec''s internals: triggers, the workers'' steps, checks and helpers; used by the extension''s owner only';

/* while the script runs: create in the extension's schema, find internals too */
SET LOCAL search_path = @extschema@, _hybridexec, pg_temp;

/* ------------------------------------------------------------------------
 * Validation of DBA-edited rows
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_check_time_condition(label text, local_from time, local_until time,
										days integer[], time_zone text)
RETURNS void
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	d integer;
BEGIN
	IF (local_from IS NULL) <> (local_until IS NULL) THEN
		RAISE EXCEPTION '%: local_from and local_until go together', label
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Set both (a time-of-day range) or neither.';
	END IF;
	IF local_from = local_until THEN
		RAISE EXCEPTION '%: empty time-of-day range', label
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'local_from must differ from local_until; leave both NULL to match any time.';
	END IF;
	IF days IS NOT NULL THEN
		IF cardinality(days) = 0 THEN
			RAISE EXCEPTION '%: days is empty', label
				USING ERRCODE = 'invalid_parameter_value',
					  HINT = 'Use NULL to match every day.';
		END IF;
		FOREACH d IN ARRAY days LOOP
			IF d IS NULL OR d NOT BETWEEN 1 AND 7 THEN
				RAISE EXCEPTION '%: day % is not an ISO day of week', label, d
					USING ERRCODE = 'invalid_parameter_value',
						  HINT = 'Days are 1 (Monday) to 7 (Sunday).';
			END IF;
		END LOOP;
	END IF;
	IF time_zone IS NOT NULL
	   AND NOT EXISTS (SELECT 1 FROM pg_timezone_names z WHERE z.name = time_zone) THEN
		RAISE EXCEPTION '%: unknown time zone "%"', label, time_zone
			USING ERRCODE = 'invalid_parameter_value',
				  HINT = 'Use a name from pg_timezone_names, such as ''Europe/Paris''.';
	END IF;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_check_time_condition(text, time, time, integer[], text) IS
'Validation shared by hx_rule and hx_price_period: a time-of-day range needs both ends and must not be empty, days are ISO days of week, the time zone must exist; raises a clear error naming label';

CREATE FUNCTION _hybridexec.hx_check_key_length(what text, value text) RETURNS void
AS 'MODULE_PATHNAME', 'hx_check_key_length_sql' LANGUAGE C IMMUTABLE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_check_key_length(text, text) IS
'Raises a clear error when text that becomes a key (what names it) is longer than hx_submit allows (200 characters)';

CREATE FUNCTION _hybridexec.hx_require_read_committed(caller text, what text) RETURNS void
AS 'MODULE_PATHNAME', 'hx_require_read_committed' LANGUAGE C STABLE STRICT;

COMMENT ON FUNCTION _hybridexec.hx_require_read_committed(text, text) IS
'Raises a clear error unless the transaction is READ COMMITTED: the waiting functions (hx_wait, hx_wait_run) would otherwise never see the change they wait for';

CREATE FUNCTION _hybridexec.hx_caller() RETURNS regrole
AS 'MODULE_PATHNAME', 'hx_caller' LANGUAGE C STABLE;

COMMENT ON FUNCTION _hybridexec.hx_caller() IS
'The role that called the API function now running (API functions that must know it are C functions that note it, then run their implementation in this schema); outside one, the current user';

CREATE FUNCTION _hybridexec.hx_alert_send(payload jsonb) RETURNS void
AS 'MODULE_PATHNAME', 'hx_alert_send_sql' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION _hybridexec.hx_alert_send(jsonb) IS
'Sends a JSON object on channel hx_alert at commit, its long strings clipped when it would not fit a NOTIFY payload: the one way alerts are sent';

/* ------------------------------------------------------------------------
 * Small facts remembered between sessions
 * ------------------------------------------------------------------------ */

-- [storage]
CREATE TABLE _hybridexec.hx_state (
	key				text PRIMARY KEY,
	value			text,
	at				timestamptz NOT NULL DEFAULT now()
);
-- [/storage]

COMMENT ON TABLE _hybridexec.hx_state IS 'Small facts the extension remembers between sessions (such as: the DBA was told pg_cron is missing)';
COMMENT ON COLUMN _hybridexec.hx_state.key IS 'What is remembered';
COMMENT ON COLUMN _hybridexec.hx_state.value IS 'Its value';
COMMENT ON COLUMN _hybridexec.hx_state.at IS 'When it was last set';

CREATE FUNCTION _hybridexec.hx_local_zone() RETURNS text
LANGUAGE sql STABLE AS $$
	SELECT coalesce(current_setting('hybridexec.time_zone', true), 'UTC')
$$;

COMMENT ON FUNCTION _hybridexec.hx_local_zone() IS 'hybridexec.time_zone (UTC when the library is not loaded): the zone of days, weeks and months in the books';

CREATE FUNCTION _hybridexec.hx_setting_seconds(name text, fallback double precision) RETURNS double precision
LANGUAGE plpgsql STABLE SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	v text := current_setting(name, true);
BEGIN
	/* time settings read back with their unit ("5min", "7d"); bare numbers are seconds */
	IF v IS NULL OR v = '' THEN
		RETURN fallback;
	ELSIF v ~ '^-?[0-9.]+$' THEN
		RETURN v::double precision;
	END IF;
	RETURN extract(epoch FROM v::interval);
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_setting_seconds(text, double precision) IS
'A time setting such as hybridexec.retention in seconds (fallback when the library is not loaded)';
