--
-- classify: every rule condition, decided by hx_classify() at fixed times.
-- 2026-06-15 is a Monday; times are given in UTC.
--

-- the default rules
SELECT * FROM hx_classify('echo', origin => 'user', at => '2026-06-15 12:00+00');
SELECT * FROM hx_classify('echo', sla => '2 seconds', at => '2026-06-15 12:00+00');
SELECT * FROM hx_classify('echo', sla => '5 seconds', at => '2026-06-15 12:00+00');
SELECT * FROM hx_classify('echo', sla => '30 minutes', at => '2026-06-15 12:00+00');
SELECT * FROM hx_classify('echo', sla => '1 hour', at => '2026-06-15 12:00+00');
SELECT * FROM hx_classify('echo', at => '2026-06-15 12:00+00');
-- a deadline counts as an SLA: 3 seconds left streams, 20 minutes left goes to fast
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', deadline => '2026-06-15 12:00:03+00', at => '2026-06-15 12:00+00');
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', sla => '1 day', deadline => '2026-06-15 12:20+00', at => '2026-06-15 12:00+00');
-- a deadline already passed is as urgent as it gets
SELECT route, rule_name FROM hx_classify('echo', deadline => '2026-06-15 11:00+00', at => '2026-06-15 12:00+00');

-- more windows and rules for the conditions
INSERT INTO hx_window (name, schedule) VALUES ('morning', '0 7 * * *'), ('weekend', '0 3 * * 6');

-- task type
INSERT INTO hx_rule (name, position, task_type, route, window_name)
VALUES ('bulk-is-batch', 1, 'bulk', 'batch', 'nightly');
SELECT route, window_name, rule_name, reason FROM hx_classify('bulk', origin => 'user', at => '2026-06-15 12:00+00');
SELECT route, rule_name FROM hx_classify('echo', origin => 'user', at => '2026-06-15 12:00+00');

-- department
INSERT INTO hx_rule (name, position, department, route)
VALUES ('fraud-streams', 2, 'fraud', 'stream');
SELECT route, rule_name, reason FROM hx_classify('echo', department => 'fraud', at => '2026-06-15 12:00+00');
SELECT route, rule_name FROM hx_classify('echo', department => 'sales', at => '2026-06-15 12:00+00');
SELECT route, rule_name FROM hx_classify('echo', at => '2026-06-15 12:00+00');

-- payload containment
INSERT INTO hx_rule (name, position, payload_match, route)
VALUES ('gold-tier', 3, '{"tier": "gold"}', 'stream');
SELECT route, rule_name, reason FROM hx_classify('echo', '{"tier": "gold", "q": 1}', at => '2026-06-15 12:00+00');
SELECT route, rule_name FROM hx_classify('echo', '{"tier": "silver"}', at => '2026-06-15 12:00+00');

-- SLA range [min_sla, max_sla)
INSERT INTO hx_rule (name, position, min_sla, max_sla, route, window_name)
VALUES ('within-a-day', 40, '1 hour', '1 day', 'batch', 'morning');
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', sla => '1 hour', at => '2026-06-15 12:00+00');
SELECT route, window_name, rule_name FROM hx_classify('echo', sla => '1 day', at => '2026-06-15 12:00+00');
-- min_sla alone: no SLA counts as infinite
INSERT INTO hx_rule (name, position, min_sla, route, window_name)
VALUES ('no-hurry', 50, '7 days', 'batch', 'weekend');
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', at => '2026-06-15 12:00+00');
SELECT route, window_name, rule_name FROM hx_classify('echo', sla => '3 days', at => '2026-06-15 12:00+00');
DELETE FROM hx_rule WHERE name = 'no-hurry';

-- time of day in a time zone: at 02:00 in Paris (00:00 UTC in summer) a
-- request that needs its answer within 8 hours waits for the morning batch
INSERT INTO hx_rule (name, position, max_sla, local_from, local_until, time_zone, route, window_name)
VALUES ('night-to-morning', 4, '8 hours', '00:00', '06:00', 'Europe/Paris', 'batch', 'morning');
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', sla => '8 hours' - interval '1 second', at => '2026-06-15 00:00+00');
SELECT route, window_name, rule_name FROM hx_classify('echo', sla => '2 hours', at => '2026-06-15 04:00+00');
-- 04:00 UTC is 06:00 in Paris: the range excludes its end
SELECT route, window_name, rule_name FROM hx_classify('echo', sla => '2 hours', at => '2026-06-15 03:59:59+00');
-- in winter Paris is UTC+1: 23:30 UTC on 14 Jan is 00:30 local
SELECT route, window_name, rule_name FROM hx_classify('echo', sla => '2 hours', at => '2026-01-14 23:30+00');
-- a range that wraps past midnight, in the default zone (UTC)
INSERT INTO hx_rule (name, position, local_from, local_until, task_type, route, window_name)
VALUES ('late-bulk', 0, '22:00', '02:00', 'bulk', 'batch', 'morning');
SELECT route, window_name, rule_name, reason FROM hx_classify('bulk', at => '2026-06-15 23:00+00');
SELECT route, window_name, rule_name FROM hx_classify('bulk', at => '2026-06-15 01:59+00');
SELECT route, window_name, rule_name FROM hx_classify('bulk', at => '2026-06-15 02:00+00');

-- day of week (ISO: 6 = Saturday, 7 = Sunday), in New York
INSERT INTO hx_rule (name, position, days, time_zone, task_type, route, window_name)
VALUES ('weekend-echo', 5, '{6,7}', 'America/New_York', 'echo', 'batch', 'weekend');
-- Sunday 2026-06-21 02:00 UTC is still Saturday evening in New York
SELECT route, window_name, rule_name, reason FROM hx_classify('echo', at => '2026-06-21 02:00+00');
-- Monday 2026-06-22 02:00 UTC is Sunday evening in New York
SELECT route, window_name, rule_name FROM hx_classify('echo', at => '2026-06-22 02:00+00');
-- Tuesday 2026-06-23 02:00 UTC is Monday in New York
SELECT route, window_name, rule_name FROM hx_classify('echo', at => '2026-06-23 02:00+00');

-- order: position first, disabled rules are skipped
UPDATE hx_rule SET enabled = false WHERE name = 'weekend-echo';
SELECT route, window_name, rule_name FROM hx_classify('echo', at => '2026-06-21 02:00+00');
UPDATE hx_rule SET position = 35 WHERE name = 'bulk-is-batch';
SELECT route, rule_name FROM hx_classify('bulk', origin => 'user', at => '2026-06-15 12:00+00');

-- a rule change inside a transaction is seen at once, and undone by rollback
BEGIN;
INSERT INTO hx_rule (name, position, route) VALUES ('everything-streams', -1, 'stream');
SELECT route, rule_name FROM hx_classify('echo', at => '2026-06-15 12:00+00');
ROLLBACK;
SELECT route, rule_name FROM hx_classify('echo', at => '2026-06-15 12:00+00');

-- no matching rule is an error, not a guess
BEGIN;
UPDATE hx_rule SET enabled = false WHERE name = 'slow-batch';
SELECT * FROM hx_classify('echo', at => '2026-06-15 12:00+00');
ROLLBACK;

-- est_cost follows the effective-dated price catalog
INSERT INTO hx_price (task_type, route, unit_cost, valid_from) VALUES
	('echo', 'stream', 3.0, '2026-01-01'),
	('echo', 'stream', 4.0, '2026-07-01');
SELECT route, est_cost FROM hx_classify('echo', origin => 'user', at => '2025-12-31 12:00+00');
SELECT route, est_cost FROM hx_classify('echo', origin => 'user', at => '2026-06-15 12:00+00');
SELECT route, est_cost FROM hx_classify('echo', origin => 'user', at => '2026-07-02 12:00+00');
SELECT route, est_cost FROM hx_classify('echo', at => '2026-07-02 12:00+00');

-- leave the default policy plus the extra windows for the next tests
DELETE FROM hx_rule WHERE name NOT IN ('user-initiated', 'interactive-sla', 'fast-batch', 'slow-batch');
DELETE FROM hx_price WHERE task_type IS NOT NULL;
