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
