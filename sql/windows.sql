--
-- windows: batch windows as rows (defaults, validation), cron arithmetic
-- at fixed times, hx_window_plan() over a synthetic history, the errors of
-- hx_run_window(), and the pg_cron job of each window kept in sync with
-- its row.  Nothing here depends on the clock: every time is given.
--
\set VERBOSITY default
SET timezone = 'UTC';

-- the default windows, and what a new window gets when it says nothing
SELECT name, schedule, max_duration, chunk_size, enabled, deadline, margin,
	   time_zone, opportunistic
  FROM hx_window WHERE name IN ('fast', 'nightly') ORDER BY name;
-- (classify already told once that pg_cron is missing: no notice again)
INSERT INTO hx_window (name, schedule) VALUES ('w_defaults', '0 3 * * *')
RETURNING name, schedule, max_duration, chunk_size, enabled, deadline, margin,
		  time_zone, opportunistic;
-- an explicit NULL margin is the default margin too
INSERT INTO hx_window (name, schedule, margin) VALUES ('w_nullmargin', '0 3 * * *', NULL)
RETURNING margin;

--
-- Bad windows: each is rejected with a message naming the problem, and
-- nothing is left behind.
--
-- cron text: wrong field count
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '* * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 2 * * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', NULL);
-- out-of-range values, one per field, and a reversed range
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '60 * * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '* 24 * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 0 0 * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 0 32 * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 0 * 13 *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 0 * * 8');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '30-10 * * * *');
-- bad steps and lists
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '*/0 * * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '*/x * * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '1,,2 * * * *');
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '0 0 * * mon-fry');
-- unknown macro
INSERT INTO hx_window (name, schedule) VALUES ('w_bad', '@fortnightly');
-- an UPDATE is checked like an INSERT
UPDATE hx_window SET schedule = '0 0 * * 8' WHERE name = 'w_defaults';
-- zero and negative chunk sizes, zero duration, negative margin
INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('w_bad', '0 2 * * *', 0);
INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('w_bad', '0 2 * * *', -5);
INSERT INTO hx_window (name, schedule, max_duration) VALUES ('w_bad', '0 2 * * *', '0');
INSERT INTO hx_window (name, schedule, deadline, margin)
	VALUES ('w_bad', '0 2 * * *', '06:00', '-10 minutes');
-- unknown time zone, empty name
INSERT INTO hx_window (name, schedule, time_zone) VALUES ('w_bad', '0 2 * * *', 'Mars/Olympus');
INSERT INTO hx_window (name, schedule) VALUES ('', '0 2 * * *');
-- a rule naming an unknown window, and a window a rule still uses
INSERT INTO hx_rule (name, position, route, window_name) VALUES ('r_bad', 5, 'batch', 'no_such_window');
INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('r_defaults', 5, 'no-type-yet', 'batch', 'w_defaults');
DELETE FROM hx_window WHERE name = 'w_defaults';
-- every rule that uses it is named, disabled ones too; the error is still
-- a foreign_key_violation (23503)
INSERT INTO hx_rule (name, position, task_type, route, window_name, enabled)
	VALUES ('r_defaults_off', 6, 'no-type-yet', 'batch', 'w_defaults', false);
DELETE FROM hx_window WHERE name = 'w_defaults';
DO $$
BEGIN
	DELETE FROM hx_window WHERE name = 'w_defaults';
EXCEPTION WHEN foreign_key_violation THEN
	RAISE NOTICE 'caught %: %', SQLSTATE, SQLERRM;
END
$$;
DELETE FROM hx_rule WHERE name IN ('r_defaults', 'r_defaults_off');
SELECT count(*) AS bad_windows_left FROM hx_window WHERE name IN ('w_bad', '');
SELECT count(*) AS bad_rules_left FROM hx_rule WHERE name = 'r_bad';

--
-- hx_cron_next / hx_cron_prev at fixed times.  Times print in UTC; the
-- third argument is the zone the schedule is read in.
--
-- strictly after / not after; seconds are ignored
SELECT hx_cron_next('0 2 * * *', '2024-01-06 02:00+00') AS next_after_a_fire,
	   hx_cron_prev('0 2 * * *', '2024-01-06 02:00+00') AS prev_at_a_fire,
	   hx_cron_next('0 2 * * *', '2024-01-06 01:59:59+00') AS next_a_second_before,
	   hx_cron_prev('0 2 * * *', '2024-01-06 01:59:59+00') AS prev_a_second_before;
-- steps: every 15 minutes of hours 9 and 13 and 17 (9-17/4), January to
-- March, Monday to Friday; 2024-01-06 is a Saturday, so Monday 09:00
SELECT hx_cron_next('*/15 9-17/4 * jan-mar mon-fri', '2024-01-06 12:00+00') AS steps_names,
	   hx_cron_next('*/15 9-17/4 * jan-mar mon-fri', '2024-01-08 09:00+00') AS then_0915,
	   hx_cron_next('*/15 9-17/4 * jan-mar mon-fri', '2024-01-08 09:45+00') AS then_1300,
	   hx_cron_next('*/15 9-17/4 * jan-mar mon-fri', '2024-03-29 17:45+00') AS then_next_year,
	   hx_cron_next('5-50/20 * * * *', '2024-01-06 12:46+00') AS range_step;
-- names are case-insensitive; 7 and sun are Sunday like 0
SELECT hx_cron_next('0 0 * * 7', '2024-09-01 00:00+00') AS sunday_7,
	   hx_cron_next('0 0 * * SUN', '2024-09-01 00:00+00') AS sunday_name,
	   hx_cron_next('0 0 1 DEC *', '2024-09-01 00:00+00') AS december;
-- day of month OR day of week when both are restricted: the 13th or a
-- Friday; 2024-09-06 is a Friday, 2024-09-13 a Friday the 13th
SELECT hx_cron_next('0 0 13 * 5', '2024-09-01 00:00+00') AS dom_or_dow,
	   hx_cron_next('0 0 13 * 5', '2024-09-06 00:00+00') AS then_13th,
	   hx_cron_next('0 0 13 * *', '2024-09-01 00:00+00') AS dom_only,
	   hx_cron_next('0 0 * * 5', '2024-09-07 00:00+00') AS dow_only,
	   hx_cron_next('0 0 1,15 * mon', '2024-09-03 00:00+00') AS list_or_monday;
-- macros
SELECT hx_cron_next('@hourly', '2024-01-06 12:00+00') AS hourly,
	   hx_cron_next('@daily', '2024-01-06 12:00+00') AS daily,
	   hx_cron_next('@midnight', '2024-01-06 12:00+00') AS midnight,
	   hx_cron_next('@weekly', '2024-01-06 12:00+00') AS weekly,
	   hx_cron_next('@monthly', '2024-01-06 12:00+00') AS monthly,
	   hx_cron_next('@yearly', '2024-01-06 12:00+00') AS yearly,
	   hx_cron_next('@annually', '2024-01-06 12:00+00') AS annually;
-- February 29th: the next leap year; February 30th never comes
SELECT hx_cron_next('0 0 29 2 *', '2024-03-01 00:00+00') AS leap_day,
	   hx_cron_prev('0 0 29 2 *', '2024-03-01 00:00+00') AS last_leap_day,
	   hx_cron_next('0 0 30 2 *', '2024-01-01 00:00+00') AS never;
-- a zone shifts the fire: 02:00 in Tokyo (UTC+9, no DST) is 17:00 UTC
SELECT hx_cron_next('0 2 * * *', '2024-01-06 12:00+00', 'Asia/Tokyo') AS tokyo,
	   hx_cron_prev('0 2 * * *', '2024-01-06 12:00+00', 'Asia/Tokyo') AS tokyo_prev;
-- DST in Europe/Paris.  Spring, 2024-03-31: 02:00 CET jumps to 03:00
-- CEST, so 02:30 does not exist that day; it is read as PostgreSQL reads
-- a skipped local time (02:30 CET = 01:30 UTC, i.e. 03:30 CEST): the
-- window still opens once that day.  A daily 03:00 is 01:00 UTC in CEST.
SELECT hx_cron_next('30 2 * * *', '2024-03-30 12:00+00', 'Europe/Paris') AS spring_skipped,
	   hx_cron_next('30 2 * * *', '2024-03-31 01:30+00', 'Europe/Paris') AS spring_next_day,
	   hx_cron_next('0 3 * * *', '2024-03-30 12:00+00', 'Europe/Paris') AS spring_0300,
	   hx_cron_next('0 3 * * *', '2024-03-29 12:00+00', 'Europe/Paris') AS winter_0300;
-- Autumn, 2024-10-27: 03:00 CEST falls back to 02:00 CET, so 02:30 comes
-- twice (00:30 and 01:30 UTC): the window opens once that day (the
-- second time, 02:30 CET, as PostgreSQL reads an ambiguous local time),
-- and next on the 28th.
SELECT hx_cron_next('30 2 * * *', '2024-10-26 12:00+00', 'Europe/Paris') AS autumn_once,
	   hx_cron_next('30 2 * * *', '2024-10-27 01:30+00', 'Europe/Paris') AS autumn_next_day,
	   hx_cron_prev('30 2 * * *', '2024-10-27 12:00+00', 'Europe/Paris') AS autumn_prev;
-- The same fire whichever pass of the repeated hour the question is asked
-- in: 00:35 UTC is 02:35 CEST (after the first 02:30, before the second),
-- 01:15 UTC is 02:15 CET; both see the day's fire at 01:30 UTC.
SELECT hx_cron_next('30 2 * * *', '2024-10-27 00:35+00', 'Europe/Paris') AS from_first_pass,
	   hx_cron_next('30 2 * * *', '2024-10-27 01:15+00', 'Europe/Paris') AS from_second_pass,
	   hx_cron_prev('30 2 * * *', '2024-10-27 01:29+00', 'Europe/Paris') AS prev_before_it;
-- A day field starting with "*" is unrestricted when the two are combined,
-- as in pg_cron: '*/10' days AND Fridays (2024-10-11 is the first Friday
-- on a 1st, 11th, 21st or 31st after September 1st); a range with a step
-- is restricted, so days OR Fridays (Friday 2024-09-06).
SELECT hx_cron_next('0 0 */10 * 5', '2024-09-01 00:00+00') AS star_step_and_friday,
	   hx_cron_next('0 0 1-31/10 * 5', '2024-09-01 00:00+00') AS range_step_or_friday;
-- a step after a single number is an error, as in pg_cron
SELECT hx_cron_next('5/15 * * * *', '2024-01-06 12:00+00');
-- errors of the functions themselves
SELECT hx_cron_next('0 2 * * *', '2024-01-06 12:00+00', 'Mars/Olympus');
SELECT hx_cron_prev('0 2 *', '2024-01-06 12:00+00');
SELECT hx_cron_next(NULL, '2024-01-06 12:00+00') AS null_schedule;

--
-- hx_window_plan(at) over a synthetic history.  All of it is rolled back,
-- so the scheduler of this instance (which plans with now()) never sees it.
--
-- Measured throughput is (processed + failed) / seconds summed over a
-- type's last 20 committed chunks:
--   plan_a: 1000 tasks in 8 s, then 150 + 50 failed in 2 s
--           -> 1200 tasks / 10 s = 120 tasks/s
--           (a chunk still "started" does not count)
--   plan_b: 8 + 2 failed in 20 s -> 10 / 20 = 0.5 tasks/s
--   plan_c: never ran -> unknown
-- Windows read their schedule in pg_cron's zone (GMT here) and their
-- deadline in time_zone:
--   plan_calm     02:00, deadline 06:00, margin 30 min; backlog 1200 a +
--                 300 b = 10 s + 600 s = 610 s (00:10:10); it can start on
--                 schedule (latest start 06:00 - 0:30 - 0:10:10 = 05:19:50
--                 is after 02:00) and finish at 02:10:10: on time
--   plan_late     05:00, deadline 06:00, margin 45 min; backlog 900 b +
--                 1200 a = 1800 s + 10 s = 00:30:10; the latest start is
--                 06:00 - 0:45 - 0:30:10 = 04:44:50, before 05:00, so it
--                 starts then, for its deadline, and finishes at 05:15:00,
--                 exactly deadline - margin: on time
--   plan_unknown  03:00, deadline 06:00; 10 a and 5 c: the duration is
--                 unknown, so no finish, no verdict, and the reason says why
--   plan_nodl     04:00, no deadline; 1200 a queued + 120 a failed (to be
--                 retried: backlog too) = 1320 / 120 = 11 s; finish 04:00:11
--   plan_empty    no backlog: duration 0, finish = start
--   plan_paris    01:00 GMT, deadline 06:00 Europe/Paris = 05:00 UTC in
--                 March (CET); 1200 a = 10 s
--   plan_busy     has a running run: next start is "at", reason running
--   plan_off      disabled: not planned at all
-- "at" is 2024-03-10 12:00 UTC, so the next start is on 2024-03-11.
--
BEGIN;
INSERT INTO hx_window (name, schedule, deadline, margin, time_zone) VALUES
	('plan_calm', '0 2 * * *', '06:00', '30 minutes', 'UTC'),
	('plan_late', '0 5 * * *', '06:00', '45 minutes', 'UTC'),
	('plan_unknown', '0 3 * * *', '06:00', '15 minutes', 'UTC'),
	('plan_paris', '0 1 * * *', '06:00', '15 minutes', 'Europe/Paris');
INSERT INTO hx_window (name, schedule) VALUES
	('plan_nodl', '0 4 * * *'), ('plan_empty', '0 4 * * *'), ('plan_busy', '0 4 * * *');
INSERT INTO hx_window (name, schedule, enabled) VALUES ('plan_off', '0 4 * * *', false);

INSERT INTO hx_window_run (window_name, status, started_at, finished_at, processed, failed, chunks)
VALUES ('plan_calm', 'done', '2024-03-01 02:00+00', '2024-03-01 02:01+00', 1168, 52, 4)
RETURNING id AS hist_run \gset
INSERT INTO hx_checkpoint (run_id, chunk, state, task_type, processed, failed, started_at, committed_at) VALUES
	(:hist_run, 1, 'committed', 'plan_a', 1000, 0, '2024-03-01 02:00:00+00', '2024-03-01 02:00:08+00'),
	(:hist_run, 2, 'committed', 'plan_a', 150, 50, '2024-03-01 02:00:08+00', '2024-03-01 02:00:10+00'),
	(:hist_run, 3, 'committed', 'plan_b', 8, 2, '2024-03-01 02:00:10+00', '2024-03-01 02:00:30+00'),
	(:hist_run, 4, 'started', 'plan_a', 999999, 0, '2024-03-01 02:00:30+00', '2024-03-01 02:00:31+00');
SELECT t, hx_type_throughput(t) AS tasks_per_second
  FROM unnest(ARRAY['plan_a', 'plan_b', 'plan_c']) t;

INSERT INTO hx_task (task_type, route, window_name)
SELECT w.typ, 'batch', w.win
  FROM (VALUES ('plan_calm', 'plan_a', 1200), ('plan_calm', 'plan_b', 300),
			   ('plan_late', 'plan_b', 900), ('plan_late', 'plan_a', 1200),
			   ('plan_unknown', 'plan_a', 10), ('plan_unknown', 'plan_c', 5),
			   ('plan_nodl', 'plan_a', 1200), ('plan_paris', 'plan_a', 1200),
			   ('plan_busy', 'plan_a', 1200), ('plan_off', 'plan_a', 1200)) w(win, typ, n),
	   generate_series(1, w.n);
-- done, cancelled and dead tasks are no backlog; failed ones (to retry) are
INSERT INTO hx_task (task_type, route, window_name, status)
VALUES ('plan_a', 'batch', 'plan_empty', 'done'), ('plan_a', 'batch', 'plan_empty', 'cancelled'),
	   ('plan_a', 'batch', 'plan_empty', 'dead');
INSERT INTO hx_task (task_type, route, window_name, status)
SELECT 'plan_a', 'batch', 'plan_nodl', 'failed' FROM generate_series(1, 120);
INSERT INTO hx_window_run (window_name, status, started_at)
VALUES ('plan_busy', 'running', '2024-03-10 11:59+00') RETURNING id AS busy_run \gset

SELECT window_name, next_start, scheduled_start, start_reason, backlog,
	   expected_duration, expected_finish, deadline_at, on_time,
	   running_run = :busy_run AS is_busy_run
  FROM hx_window_plan(at => '2024-03-10 12:00+00')
 WHERE window_name LIKE 'plan%' ORDER BY window_name;

-- The same late window seen at 04:50, after its deadline start: it starts
-- "now" (at), finishes at 04:50 + 0:30:10 = 05:20:10, after 05:15: late.
SELECT window_name, next_start, start_reason, expected_finish, on_time
  FROM hx_window_plan(at => '2024-03-11 04:50+00') WHERE window_name = 'plan_late';
-- More history for plan_b, now 10 tasks in 10 s (1/s): the rate is over
-- all 20 s + 10 s = 20 tasks / 30 s = 0.667/s, so 900 b + 1200 a take
-- 1350 s + 10 s = 00:22:40; latest start 06:00 - 0:45 - 0:22:40 = 04:52:20.
INSERT INTO hx_checkpoint (run_id, chunk, state, task_type, processed, failed, started_at, committed_at)
VALUES (:hist_run, 5, 'committed', 'plan_b', 10, 0, '2024-03-01 02:01:00+00', '2024-03-01 02:01:10+00');
SELECT window_name, next_start, start_reason, expected_duration, expected_finish, on_time
  FROM hx_window_plan(at => '2024-03-10 12:00+00') WHERE window_name = 'plan_late';
-- A rate limit slower than the measured rate bounds the plan: plan_a at
-- 60 a minute takes (1200 - 60 in the full bucket) s = 00:19:00, not 10 s;
-- with plan_b's 300 at 0.667/s (450 s), plan_calm takes 00:26:30.
SELECT hx_register('plan_a', rate_limit => 60, rate_period => '1 minute');
SELECT window_name, backlog, expected_duration
  FROM hx_window_plan(at => '2024-03-10 12:00+00') WHERE window_name = 'plan_calm';
ROLLBACK;

--
-- hx_run_window(): errors, and the one run a window has at a time
--
SELECT hx_run_window('no_such_window');
SELECT hx_run_window(NULL);
INSERT INTO hx_window (name, schedule, enabled) VALUES ('w_disabled', '0 4 * * *', false);
SELECT hx_run_window('w_disabled');
SELECT count(*) AS runs_of_bad_calls FROM hx_window_run
 WHERE window_name IN ('no_such_window', 'w_disabled');
-- a window already running returns its run (rolled back: no worker starts)
BEGIN;
INSERT INTO hx_window_run (id, window_name, status) VALUES (900001, 'w_defaults', 'running');
SELECT hx_run_window('w_defaults') AS same_run;
SELECT count(*) AS runs FROM hx_window_run WHERE window_name = 'w_defaults';
ROLLBACK;

--
-- pg_cron: one job per enabled window, kept in sync with hx_window
--
CREATE EXTENSION pg_cron;
-- hx_sync_cron() creates the jobs of the windows made before pg_cron
SELECT hx_sync_cron() AS jobs;
SELECT jobname, schedule, command, active, database FROM cron.job ORDER BY jobname;
-- INSERT: a job appears
INSERT INTO hx_window (name, schedule) VALUES ('w_cron', '15 4 * * *');
SELECT jobid AS cron_jobid, schedule, command FROM cron.job
 WHERE jobname = 'hybridexec window w_cron' \gset
SELECT :'schedule' AS schedule, :'command' AS command;
-- UPDATE of the schedule: the same job, with the new schedule
UPDATE hx_window SET schedule = '45 5 * * 1-5' WHERE name = 'w_cron';
SELECT jobid = :cron_jobid AS same_job, schedule FROM cron.job WHERE jobname = 'hybridexec window w_cron';
-- an UPDATE that does not touch the schedule changes nothing
UPDATE hx_window SET chunk_size = 50 WHERE name = 'w_cron';
SELECT jobid = :cron_jobid AS same_job, schedule FROM cron.job WHERE jobname = 'hybridexec window w_cron';
-- a rejected UPDATE leaves the job alone
UPDATE hx_window SET schedule = '99 * * * *' WHERE name = 'w_cron';
SELECT schedule FROM cron.job WHERE jobname = 'hybridexec window w_cron';
-- rename: the old job goes, a job of the new name calls the new name
UPDATE hx_window SET name = 'w_cron2' WHERE name = 'w_cron';
SELECT jobname, schedule, command FROM cron.job WHERE jobname LIKE 'hybridexec window w_cron%';
-- disable: the job goes; enable: it comes back
UPDATE hx_window SET enabled = false WHERE name = 'w_cron2';
SELECT count(*) AS jobs_of_disabled FROM cron.job WHERE jobname = 'hybridexec window w_cron2';
UPDATE hx_window SET enabled = true WHERE name = 'w_cron2';
SELECT jobname, schedule FROM cron.job WHERE jobname = 'hybridexec window w_cron2';
-- a window inserted and rolled back leaves no job
BEGIN;
INSERT INTO hx_window (name, schedule) VALUES ('w_rolled_back', '0 1 * * *');
SELECT count(*) AS job_inside FROM cron.job WHERE jobname = 'hybridexec window w_rolled_back';
ROLLBACK;
SELECT count(*) AS job_after FROM cron.job WHERE jobname = 'hybridexec window w_rolled_back';
-- DELETE: the job goes
DELETE FROM hx_window WHERE name = 'w_cron2';
SELECT count(*) AS jobs_of_deleted FROM cron.job WHERE jobname = 'hybridexec window w_cron2';
-- hx_sync_cron() removes jobs whose window is gone and restores missing ones
SELECT cron.schedule('hybridexec window ghost', '0 1 * * *', 'SELECT 1') > 0 AS ghost_scheduled;
SELECT cron.unschedule('hybridexec window w_defaults');
SELECT hx_sync_cron() AS jobs;
SELECT jobname, schedule FROM cron.job ORDER BY jobname;

DELETE FROM hx_window WHERE name IN ('w_defaults', 'w_nullmargin', 'w_disabled');
SELECT jobname FROM cron.job ORDER BY jobname;

--
-- hx_health() and pg_cron: when a window's job does not open it, the hint
-- names the likely cause from cron.job_run_details.  (In this test
-- instance the server listens on no TCP address, so pg_cron's own runs do
-- fail with "connection failed"; the runs below are written by hand.)
--
BEGIN;
-- a window that was due an hour ago (in pg_cron's zone, GMT here), with a
-- task waiting since before that
INSERT INTO hx_window (name, schedule)
VALUES ('w_missed', to_char(now() AT TIME ZONE 'GMT' - interval '1 hour', 'FMMI FMHH24 * * *'));
INSERT INTO hx_task (task_type, route, window_name, submitted_at)
VALUES ('external', 'batch', 'w_missed', now() - interval '2 hours') RETURNING id AS missed_task \gset
-- the job never connected: pg_cron records such a run without times
INSERT INTO cron.job_run_details (jobid, database, username, command, status, return_message)
SELECT jobid, database, username, command, 'failed', 'connection failed'
  FROM cron.job WHERE jobname = 'hybridexec window w_missed';
SELECT problem, severity, subject, hint FROM hx_health() WHERE subject = 'w_missed';
-- without a waiting task nothing was missed, but the failing job is a problem
DELETE FROM hx_task WHERE id = :missed_task;
SELECT problem, severity, subject, detail, hint FROM hx_health() WHERE subject = 'w_missed';
-- no background worker slot; then an error of the job's own
INSERT INTO cron.job_run_details (jobid, database, username, command, status, return_message)
SELECT jobid, database, username, command, 'failed',
	   'could not start background process; more details may be available in the server log'
  FROM cron.job WHERE jobname = 'hybridexec window w_missed';
SELECT problem, detail, hint FROM hx_health() WHERE subject = 'w_missed';
INSERT INTO cron.job_run_details (jobid, database, username, command, status, return_message,
								  start_time, end_time)
SELECT jobid, database, username, command, 'failed',
	   E'ERROR:  permission denied for function hx_run_window\n', now() - interval '1 hour',
	   now() - interval '1 hour'
  FROM cron.job WHERE jobname = 'hybridexec window w_missed';
SELECT problem, regexp_replace(detail, 'latest at [^)]*', 'latest at T') AS detail, hint
  FROM hx_health() WHERE subject = 'w_missed';
-- a run that succeeded clears it
INSERT INTO cron.job_run_details (jobid, database, username, command, status, return_message,
								  start_time, end_time)
SELECT jobid, database, username, command, 'succeeded', '1 row', now(), now()
  FROM cron.job WHERE jobname = 'hybridexec window w_missed';
SELECT count(*) AS problems FROM hx_health() WHERE subject = 'w_missed';
-- a window whose job is gone
SELECT cron.unschedule('hybridexec window w_missed');
SELECT problem, severity, subject, detail, hint FROM hx_health() WHERE subject = 'w_missed';
ROLLBACK;
-- this server preloads hybridexec: no complaint about it
SELECT _hybridexec.hx_preloaded() AS preloaded,
	   count(*) FILTER (WHERE h.subject = 'shared_preload_libraries') AS preload_problems
  FROM hx_health() h;

-- hx_wait_run: a run that does not exist is an error; a finished one
-- returns its status at once
SELECT hx_wait_run(-1);
BEGIN;
INSERT INTO hx_window_run (window_name, status, started_by, started_at, finished_at)
VALUES ('nightly', 'overran', 'manual', now(), now()) RETURNING id AS ended_run \gset
SELECT hx_wait_run(:ended_run, '10 seconds') AS ended_status;
ROLLBACK;
-- both waits refuse a snapshot that would never see the change
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT hx_wait_run(-1);
ROLLBACK;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT hx_wait(-1);
ROLLBACK;
