/*
 * src/sql/schedules.sql
 *
 * Part of the install script: recurring tasks.  hx_schedule() records a
 * task to submit on a cron schedule; pg_cron fires each schedule's job,
 * which submits the task for the role that scheduled it, classified by the
 * rules like any other, once per tick.
 */

/* ------------------------------------------------------------------------
 * The schedules
 * ------------------------------------------------------------------------ */

-- [storage 0.4]
CREATE TABLE hx_schedule (
	name			text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
	schedule		text NOT NULL,
	task_type		text NOT NULL REFERENCES hx_type (task_type),
	payload			jsonb NOT NULL DEFAULT '{}',
	sla				interval,
	origin			text NOT NULL DEFAULT 'background',
	priority		integer NOT NULL DEFAULT 0,
	department		text,
	enabled			boolean NOT NULL DEFAULT true,
	submitted_by	regrole NOT NULL,
	created_at		timestamptz NOT NULL DEFAULT now(),
	last_tick		timestamptz,
	last_task_id	bigint
);
-- [/storage]

COMMENT ON TABLE hx_schedule IS
'Recurring tasks: each enabled schedule has a pg_cron job that submits its task once per tick, for the role that scheduled it (hx_schedule(), hx_unschedule())';
COMMENT ON COLUMN hx_schedule.name IS 'Name of the schedule (its pg_cron job is "hybridexec schedule <name>")';
COMMENT ON COLUMN hx_schedule.schedule IS 'Cron schedule (5 fields or @hourly etc.), read in pg_cron''s time zone';
COMMENT ON COLUMN hx_schedule.task_type IS 'Type of the task submitted at each tick';
COMMENT ON COLUMN hx_schedule.payload IS 'Its payload';
COMMENT ON COLUMN hx_schedule.sla IS 'Its SLA';
COMMENT ON COLUMN hx_schedule.origin IS 'Its origin';
COMMENT ON COLUMN hx_schedule.priority IS 'Its priority';
COMMENT ON COLUMN hx_schedule.department IS 'Its department';
COMMENT ON COLUMN hx_schedule.enabled IS 'false: no job, nothing submitted';
COMMENT ON COLUMN hx_schedule.submitted_by IS 'The role that scheduled it: each task is submitted, and its department checked, for this role';
COMMENT ON COLUMN hx_schedule.created_at IS 'When it was created or last changed by hx_schedule()';
COMMENT ON COLUMN hx_schedule.last_tick IS 'The last tick that submitted a task (a tick submits once)';
COMMENT ON COLUMN hx_schedule.last_task_id IS 'The task the last tick submitted';

CREATE FUNCTION _hybridexec.hx_schedule_job_name(schedule_name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT 'hybridexec schedule ' || schedule_name $$;

COMMENT ON FUNCTION _hybridexec.hx_schedule_job_name(text) IS 'Name of the pg_cron job of a schedule';

/*
 * Keeps the job of one schedule in line with its row (as
 * hx_cron_sync_window does for windows); the jobs belong to the extension's
 * owner.
 */
CREATE FUNCTION _hybridexec.hx_cron_sync_schedule(schedule_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	s hx_schedule;
BEGIN
	IF NOT hx_cron_available() THEN
		RETURN;
	END IF;
	/* no row (all fields NULL) or a disabled one: no job */
	SELECT * INTO s FROM hx_schedule WHERE name = schedule_name;
	PERFORM hx_cron_put(hx_schedule_job_name(schedule_name), CASE WHEN s.enabled THEN s.schedule END,
						format('SELECT %I.hx_schedule_fire(%L)', '_hybridexec', schedule_name));
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_cron_sync_schedule(text) IS
'Creates, replaces or removes the pg_cron job of one schedule to match its hx_schedule row';

CREATE FUNCTION _hybridexec.hx_schedule_cron() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
BEGIN
	IF TG_OP <> 'INSERT' THEN
		PERFORM hx_cron_sync_schedule(OLD.name);
	END IF;
	IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.name <> OLD.name) THEN
		PERFORM hx_cron_sync_schedule(NEW.name);
	END IF;
	RETURN NULL;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_schedule_cron() IS 'Trigger: keeps the pg_cron job of each schedule in sync with hx_schedule';

CREATE TRIGGER hx_schedule_cron AFTER INSERT OR UPDATE OR DELETE ON hx_schedule
	FOR EACH ROW EXECUTE FUNCTION _hybridexec.hx_schedule_cron();

/*
 * A tick: the job's call.  The row lock and last_tick make a tick submit
 * at most once, however often the job runs for it; the dedupe key names
 * the tick too.  Submitted as the scheduling role, classified as of now.
 */
CREATE FUNCTION _hybridexec.hx_schedule_fire(schedule_name text) RETURNS bigint
LANGUAGE plpgsql SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	s hx_schedule;
	tick timestamptz;
	id bigint;
BEGIN
	SELECT * INTO s FROM hx_schedule WHERE name = schedule_name AND enabled FOR UPDATE;
	IF NOT FOUND THEN
		RETURN NULL;
	END IF;
	tick := coalesce(hx_cron_prev(s.schedule, now(), hx_cron_time_zone()), date_trunc('minute', now()));
	IF s.last_tick IS NOT DISTINCT FROM tick THEN
		RETURN NULL;
	END IF;
	id := hx_submit_as(s.submitted_by, s.task_type, s.payload, s.sla, s.origin, s.priority, s.department,
					   format('schedule %s %s', s.name, to_char(tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI"Z"')));
	UPDATE hx_schedule SET last_tick = tick, last_task_id = id WHERE name = s.name;
	RETURN id;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_schedule_fire(text) IS
'The pg_cron job of a schedule: submits its task for the current tick, once (returns its id, or NULL when the tick has already submitted or the schedule is disabled or gone)';

/* ------------------------------------------------------------------------
 * The API
 * ------------------------------------------------------------------------ */

CREATE FUNCTION _hybridexec.hx_schedule(name text, schedule text, task_type text, payload jsonb,
										sla interval, origin text, priority integer, department text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	caller regrole := hx_caller();
	old hx_schedule;
BEGIN
	IF name IS NULL OR schedule IS NULL OR task_type IS NULL OR payload IS NULL OR origin IS NULL
	   OR priority IS NULL THEN
		RAISE EXCEPTION 'name, schedule, task_type, payload, origin and priority must not be NULL'
			USING ERRCODE = 'null_value_not_allowed',
				  HINT = 'e.g. SELECT hx_schedule(''nightly-report'', ''0 6 * * 1'', ''report'', ''{"week": "last"}'');';
	END IF;
	PERFORM hx_check_key_length('schedule name', name);
	/* a clear error for a bad schedule, type, department or argument, before anything changes */
	PERFORM hx_cron_next(schedule, now(), hx_cron_time_zone());
	PERFORM hx_decide(task_type, payload, sla, origin, priority, department);
	IF department IS NOT NULL AND NOT hx_may_submit_for(caller::oid, department) THEN
		RAISE EXCEPTION 'role "%" may not submit tasks for department "%"', caller, department
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'An administrator adds the membership to hx_department_member.';
	END IF;
	SELECT * INTO old FROM hx_schedule s WHERE s.name = hx_schedule.name FOR UPDATE;
	IF FOUND AND NOT hx_visible_to(caller::oid, old.submitted_by::oid, NULL) THEN
		RAISE EXCEPTION 'schedule "%" belongs to another role', name
			USING ERRCODE = 'insufficient_privilege',
				  HINT = 'Pick another name; its owner (or an administrator) can change or remove it.';
	END IF;
	INSERT INTO hx_schedule AS s (name, schedule, task_type, payload, sla, origin, priority, department,
								  submitted_by)
	VALUES (name, schedule, task_type, payload, sla, origin, priority, department, caller)
	ON CONFLICT ON CONSTRAINT hx_schedule_pkey DO UPDATE
	   SET schedule = EXCLUDED.schedule, task_type = EXCLUDED.task_type, payload = EXCLUDED.payload,
		   sla = EXCLUDED.sla, origin = EXCLUDED.origin, priority = EXCLUDED.priority,
		   department = EXCLUDED.department, submitted_by = EXCLUDED.submitted_by,
		   enabled = true, created_at = now();
	IF NOT hx_cron_available() THEN
		RAISE WARNING 'pg_cron is not installed in this database: schedule "%" will not fire', name
			USING HINT = 'CREATE EXTENSION pg_cron (preloaded, cron.database_name = this database), then SELECT hx_sync_cron().';
	END IF;
	RETURN name;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_schedule(text, text, text, jsonb, interval, text, integer, text) IS
'Implementation of hx_schedule(), for the calling role (hx_caller())';

CREATE FUNCTION hx_schedule(name text, schedule text, task_type text, payload jsonb DEFAULT '{}',
							sla interval DEFAULT NULL, origin text DEFAULT 'background',
							priority integer DEFAULT 0, department text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_schedule(text, text, text, jsonb, interval, text, integer, text) IS
'Creates or replaces a schedule of the caller''s: its pg_cron job submits the task (classified by the rules like any other) once per tick of the cron schedule, for the calling role; returns its name';

CREATE FUNCTION _hybridexec.hx_unschedule(name text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @extschema@, _hybridexec, pg_temp AS $$
DECLARE
	caller regrole := hx_caller();
	old hx_schedule;
BEGIN
	IF name IS NULL THEN
		RAISE EXCEPTION 'name must not be NULL'
			USING ERRCODE = 'null_value_not_allowed', HINT = 'Schedules are listed in hx_schedule.';
	END IF;
	SELECT * INTO old FROM hx_schedule s WHERE s.name = hx_unschedule.name FOR UPDATE;
	IF NOT FOUND OR NOT hx_visible_to(caller::oid, old.submitted_by::oid, NULL) THEN
		RETURN false;
	END IF;
	DELETE FROM hx_schedule s WHERE s.name = hx_unschedule.name;
	RETURN true;
END
$$;

COMMENT ON FUNCTION _hybridexec.hx_unschedule(text) IS 'Implementation of hx_unschedule(), for the calling role (hx_caller())';

CREATE FUNCTION hx_unschedule(name text) RETURNS boolean
AS 'MODULE_PATHNAME', 'hx_api' LANGUAGE C VOLATILE;

COMMENT ON FUNCTION hx_unschedule(text) IS
'Removes a schedule of the caller''s (or any, for an administrator) and its pg_cron job; returns false when there is none';
