--
-- rules: invalid rules and windows are rejected with a clear error, and the
-- table is unchanged afterwards.
--
\set VERBOSITY default
SELECT count(*) AS rules_before FROM hx_rule;

INSERT INTO hx_rule (name, position, route) VALUES ('r', 1, 'sometimes');
INSERT INTO hx_rule (name, position, route) VALUES ('r', 1, NULL);
INSERT INTO hx_rule (name, position, route) VALUES ('r', 1, 'batch');
INSERT INTO hx_rule (name, position, route, window_name) VALUES ('r', 1, 'batch', 'no-such-window');
INSERT INTO hx_rule (name, position, route, window_name) VALUES ('r', 1, 'stream', 'fast');
INSERT INTO hx_rule (name, position, min_sla, max_sla, route) VALUES ('r', 1, '1 hour', '10 minutes', 'stream');
INSERT INTO hx_rule (name, position, min_sla, max_sla, route) VALUES ('r', 1, '1 hour', '1 hour', 'stream');
INSERT INTO hx_rule (name, position, max_sla, route) VALUES ('r', 1, '-5 seconds', 'stream');
INSERT INTO hx_rule (name, position, local_from, route) VALUES ('r', 1, '01:00', 'stream');
INSERT INTO hx_rule (name, position, local_from, local_until, route) VALUES ('r', 1, '01:00', '01:00', 'stream');
INSERT INTO hx_rule (name, position, days, route) VALUES ('r', 1, '{1,8}', 'stream');
INSERT INTO hx_rule (name, position, days, route) VALUES ('r', 1, '{}', 'stream');
INSERT INTO hx_rule (name, position, time_zone, route) VALUES ('r', 1, 'Mars/Olympus_Mons', 'stream');
INSERT INTO hx_rule (name, position, payload_match, route) VALUES ('r', 1, '[1, 2]', 'stream');
INSERT INTO hx_rule (name, position, route) VALUES ('', 1, 'stream');
-- an update is checked too
UPDATE hx_rule SET route = 'batch', window_name = NULL WHERE name = 'user-initiated';
-- a window a rule uses cannot disappear
DELETE FROM hx_window WHERE name = 'fast';

SELECT count(*) AS rules_after FROM hx_rule;
SELECT name, route, window_name FROM hx_rule WHERE name = 'user-initiated';

-- windows
INSERT INTO hx_window (name, schedule) VALUES ('w', 'every night');
INSERT INTO hx_window (name, schedule) VALUES ('w', '0 2 * *');
INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('w', '0 2 * * *', 0);
INSERT INTO hx_window (name, schedule, max_duration) VALUES ('w', '0 2 * * *', '0 seconds');
SELECT count(*) AS windows FROM hx_window WHERE name = 'w';
-- renaming a window follows into the rules that use it
UPDATE hx_window SET name = 'quick' WHERE name = 'fast';
SELECT name, window_name FROM hx_rule WHERE name = 'fast-batch';
UPDATE hx_window SET name = 'fast' WHERE name = 'quick';

-- shipped rows: a row inserted under the name of a default that is still
-- as installed replaces it (what pg_restore does with a dumped default);
-- once the default was changed, the name collides as usual
BEGIN;
INSERT INTO hx_rule (name, position, origin, route, description)
VALUES ('user-initiated', 11, 'user', 'stream', 'the restored version');
SELECT name, position, description FROM hx_rule WHERE name = 'user-initiated';
UPDATE hx_rule SET position = 12 WHERE name = 'user-initiated';
INSERT INTO hx_rule (name, position, origin, route)
VALUES ('user-initiated', 13, 'user', 'stream');
ROLLBACK;
-- deleting a default leaves a tombstone (pg_dump keeps it), inserting it
-- again removes the tombstone
BEGIN;
DELETE FROM hx_rule WHERE name = 'slow-batch';
SELECT key FROM _hybridexec.hx_state WHERE key LIKE 'removed %';
INSERT INTO hx_rule (name, position, route, window_name) VALUES ('slow-batch', 1000, 'batch', 'nightly');
SELECT key FROM _hybridexec.hx_state WHERE key LIKE 'removed %';
ROLLBACK;

-- percentage rollout: a sampled rule takes only its share of the tasks its
-- other conditions match, by a stable hash of the dedupe key (or the id)
INSERT INTO hx_rule (name, position, task_type, route, sample) VALUES ('r0', 0, 'rollout', 'stream', 0);
INSERT INTO hx_rule (name, position, task_type, route, sample) VALUES ('r0', 0, 'rollout', 'stream', 1.5);
BEGIN;
SELECT hx_register('rollout', description => 'rollout test type');
INSERT INTO hx_rule (name, position, task_type, route, sample)
VALUES ('rollout-30', 0, 'rollout', 'stream', 0.3);
-- the decision follows hx_sample_point exactly, key by key, and twice the same
SELECT count(*) AS keys,
	   count(*) FILTER (WHERE (c.rule_name = 'rollout-30') <> (hx_sample_point('rollout-30', 'k' || g) < 0.3)) AS disagree,
	   count(*) FILTER (WHERE c.rule_name = 'rollout-30') BETWEEN 250 AND 350 AS near_30_pct,
	   count(*) FILTER (WHERE c.rule_name <> d.rule_name) AS changed_on_second_look
  FROM generate_series(1, 1000) g,
	   hx_classify('rollout', dedupe_key => 'k' || g) c,
	   hx_classify('rollout', dedupe_key => 'k' || g) d;
-- the reason says how the sample took a task; a dry run without a key says it has no id
SELECT rule_name, reason FROM hx_classify('rollout', dedupe_key => 'k1') WHERE rule_name = 'rollout-30'
UNION ALL
SELECT rule_name, reason FROM hx_classify('rollout', dedupe_key => 'k2') WHERE rule_name = 'rollout-30';
SELECT rule_name, reason FROM hx_classify('rollout');
-- submitted tasks without a key are sampled by their id, and say which sampled rule saw them
SELECT count(hx_submit('rollout', jsonb_build_object('i', g))) FROM generate_series(1, 300) g;
SELECT count(*) FROM hx_submit_batch('rollout', array_fill('{}'::jsonb, ARRAY[300]));
SELECT count(*) AS tasks,
	   count(*) FILTER (WHERE sample_rule = 'rollout-30') AS seen_by_rule,
	   count(*) FILTER (WHERE (rule_name = 'rollout-30') <> (hx_sample_point('rollout-30', id::text) < 0.3)) AS disagree,
	   count(*) FILTER (WHERE rule_name = 'rollout-30') BETWEEN 120 AND 240 AS near_30_pct
  FROM hx_task WHERE task_type = 'rollout';
SELECT rule_name, sample, arm, tasks > 0 AS some, share BETWEEN 0.2 AND 0.4 OR arm = 'fell through' AS share_ok
  FROM hx_rollout_report(now() - interval '1 hour', now() + interval '1 hour');
SELECT * FROM hx_rollout_report(now(), now() - interval '1 day');
ROLLBACK;
-- the ids the rolled-back tasks took are given back, for the tests that follow
SELECT setval('hx_task_id_seq', coalesce((SELECT max(id) FROM hx_task), 0) + 1, false) > 0 AS ids_given_back;
