--
-- cost: the price catalog (effective dating, peak/off-peak, batch discount,
-- validation), the hx_cost ledger on a fixed synthetic history, attribution,
-- budgets and budget rules, cost-benefit routing, savings and advice.
--
-- Every figure is checked against the same figure computed here by hand
-- (the "expected" columns are plain arithmetic on the inputs).
--
-- Type acct has no handler: no worker ever touches its tasks, so the test
-- plays the workers' part with UPDATEs at fixed moments.
SELECT hx_register('acct', description => 'cost test, external');
SET TIME ZONE 'UTC';

-- prices: acct has its own stream price from 2026-01-01, a new one from
-- 2026-03-01, and a batch row of its own from 2026-03-10
INSERT INTO hx_price (task_type, route, unit_cost, per_second, valid_from) VALUES
	('acct', 'stream', 2.0, 0.1, '2026-01-01'),
	('acct', 'stream', 3.0, 0.5, '2026-03-01'),
	('acct', 'batch', 0.4, 0, '2026-03-10');
-- weekday peak for stream, 09:00-17:00 UTC; nights cheaper for batch
INSERT INTO hx_price_period (name, route, days, local_from, local_until, multiplier) VALUES
	('weekday-peak', 'stream', '{1,2,3,4,5}', '09:00', '17:00', 1.5),
	('night', 'batch', NULL, '22:00', '06:00', 0.8);

-- 2026-02-01 is a Sunday, 2026-02-02 a Monday
SELECT at, route, hx_price_at('acct', route, at) AS price, expected,
	   hx_price_at('acct', route, at) = expected AS ok
  FROM (VALUES
	('2025-12-31 08:00+00'::timestamptz, 'stream', 1.0),		-- default row only
	('2025-12-31 08:00+00', 'batch', 1.0 * 0.5),				-- default less the discount
	('2025-12-31 10:00+00', 'stream', 1.0 * 1.5),				-- a Wednesday: peak
	('2026-02-01 10:00+00', 'stream', 2.0),						-- Sunday: no peak
	('2026-02-02 10:00+00', 'stream', 2.0 * 1.5),				-- Monday in the peak
	('2026-02-02 17:00+00', 'stream', 2.0),						-- the peak ends at 17:00
	('2026-02-02 10:00+00', 'batch', 2.0 * 0.5),				-- the peak is for stream only
	('2026-02-02 23:00+00', 'batch', 2.0 * 0.5 * 0.8),			-- night, before midnight
	('2026-02-03 05:59+00', 'batch', 2.0 * 0.5 * 0.8),			-- night, after midnight
	('2026-03-02 08:00+00', 'stream', 3.0),						-- the March price
	('2026-03-02 08:00+00', 'batch', 3.0 * 0.5),
	('2026-03-11 08:00+00', 'batch', 0.4))						-- acct's own batch row
	AS x (at, route, expected)
 ORDER BY at, route;

-- hx_classify's est_cost is the same catalog price
SELECT route, est_cost, est_cost = 2.0 * 1.5 AS ok
  FROM hx_classify('acct', origin => 'user', at => '2026-02-02 10:00+00');

-- another zone: 09:00-17:00 in New York is 14:00-22:00 UTC in February
UPDATE hx_price_period SET time_zone = 'America/New_York' WHERE name = 'weekday-peak';
SELECT hx_price_at('acct', 'stream', '2026-02-02 10:00+00') = 2.0 AS before_ny_peak,
	   hx_price_at('acct', 'stream', '2026-02-02 15:00+00') = 2.0 * 1.5 AS in_ny_peak;
UPDATE hx_price_period SET time_zone = NULL WHERE name = 'weekday-peak';

-- invalid catalog rows are rejected with clear errors
\set VERBOSITY default
INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('acct', 'later', 1);
INSERT INTO hx_price (task_type, route, unit_cost, valid_from) VALUES ('acct', 'stream', -1, '2027-01-01');
INSERT INTO hx_price (task_type, route, batch_discount, valid_from) VALUES ('acct', 'stream', 1.5, '2027-01-01');
INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('nosuchtype', 'stream', 1);
INSERT INTO hx_price (task_type, route, currency, valid_from) VALUES ('acct', 'stream', 'dollars', '2027-01-01');
INSERT INTO hx_price_period (name, days, multiplier) VALUES ('bad', '{0}', 2);
INSERT INTO hx_price_period (name, local_from, local_until, multiplier) VALUES ('bad', '10:00', '10:00', 2);
INSERT INTO hx_price_period (name, local_from, multiplier) VALUES ('bad', '10:00', 2);
INSERT INTO hx_price_period (name, multiplier) VALUES ('bad', 0);
INSERT INTO hx_price_period (name, time_zone, multiplier) VALUES ('bad', 'Mars/Olympus', 2);
\set VERBOSITY terse

-- ------------------------------------------------------------------------
-- a synthetic history in March 2026 (2026-03-02 is a Monday)
-- ------------------------------------------------------------------------
CREATE TEMP TABLE hist (k text PRIMARY KEY, id bigint);
INSERT INTO hist
SELECT k, nextval(pg_get_serial_sequence('hx_task', 'id'))
  FROM (VALUES ('t1'), ('t2'), ('t3'), ('t4'), ('t5'), ('t6')) v (k);

INSERT INTO hx_task (id, task_type, route, window_name, origin, department, sla, submitted_at, status)
SELECT h.id, 'acct', x.route, x.win, x.origin, x.dept, x.sla, x.sub, 'queued'
  FROM hist h JOIN (VALUES
	('t1', 'stream', NULL, 'user', 'sales', NULL::interval, '2026-03-02 10:00:00+00'::timestamptz),
	('t2', 'stream', NULL, 'background', 'sales', '1 day', '2026-03-02 10:00:00+00'),
	('t3', 'batch', 'nightly', 'background', 'ops', NULL, '2026-03-02 12:00:00+00'),
	('t4', 'batch', 'nightly', 'background', 'ops', NULL, '2026-03-02 12:00:00+00'),
	('t5', 'stream', NULL, 'background', 'ops', NULL, '2026-03-02 18:00:00+00'),
	('t6', 'stream', NULL, 'user', 'sales', NULL, '2026-03-08 12:00:00+00'))
	AS x (k, route, win, origin, dept, sla, sub) ON x.k = h.k;

-- t1: claimed at 10:00:01, done at 10:00:03 (2 s, in the peak)
UPDATE hx_task SET status = 'running', attempts = 1, started_at = '2026-03-02 10:00:01+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't1');
UPDATE hx_task SET status = 'done', finished_at = '2026-03-02 10:00:03+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't1');
-- t2: 10:00:00 to 10:00:04 (4 s, peak)
UPDATE hx_task SET status = 'running', attempts = 1, started_at = '2026-03-02 10:00:00+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't2');
UPDATE hx_task SET status = 'done', finished_at = '2026-03-02 10:00:04+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't2');
-- t3 and t4: one batch chunk booked straight from queued, started at
-- 02:00:00 (night), the last result at 02:00:06: 3 s each
UPDATE hx_task t SET status = 'done', attempts = 1, run_id = 4242,
	   started_at = '2026-03-03 02:00:00+00',
	   finished_at = CASE WHEN h.k = 't3' THEN '2026-03-03 02:00:05+00'::timestamptz
						  ELSE '2026-03-03 02:00:06+00' END
  FROM hist h WHERE h.id = t.id AND h.k IN ('t3', 't4');
-- t5: fails at 18:00:01 after 1 s (no peak), done at the retry 18:01:00-18:01:02
UPDATE hx_task SET status = 'running', attempts = 1, started_at = '2026-03-02 18:00:00+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't5');
UPDATE hx_task SET status = 'failed', last_error = 'boom', finished_at = '2026-03-02 18:00:01+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't5');
UPDATE hx_task SET status = 'running', attempts = 2, started_at = '2026-03-02 18:01:00+00', finished_at = NULL
 WHERE id = (SELECT id FROM hist WHERE k = 't5');
UPDATE hx_task SET status = 'done', finished_at = '2026-03-02 18:01:02+00'
 WHERE id = (SELECT id FROM hist WHERE k = 't5');
-- t6: an external executor reports its own cost, 0.25, after 10 s on Sunday
UPDATE hx_task SET status = 'running', attempts = 1, started_at = '2026-03-08 12:00:00+00',
	   executor = 'llm-box'
 WHERE id = (SELECT id FROM hist WHERE k = 't6');
UPDATE hx_task SET status = 'done', finished_at = '2026-03-08 12:00:10+00', reported_cost = 0.25
 WHERE id = (SELECT id FROM hist WHERE k = 't6');
-- updates that finish no attempt book nothing
UPDATE hx_task SET result = '{"again": true}' WHERE id IN (SELECT id FROM hist);

-- the expected books, by hand: (unit + per_second * seconds) * factor
CREATE TEMP TABLE want (k text, attempt int, outcome text, route text, wall float8,
						cost numeric, baseline numeric, batch numeric, reported boolean);
INSERT INTO want VALUES
	('t1', 1, 'done', 'stream', 2, (3 + 0.5 * 2) * 1.5, (3 + 0.5 * 2) * 1.5, (3 + 0.5 * 2) * 0.5, false),
	('t2', 1, 'done', 'stream', 4, (3 + 0.5 * 4) * 1.5, (3 + 0.5 * 4) * 1.5, (3 + 0.5 * 4) * 0.5, false),
	('t3', 1, 'done', 'batch', 3, (3 + 0.5 * 3) * 0.5 * 0.8, 3 + 0.5 * 3, (3 + 0.5 * 3) * 0.5 * 0.8, false),
	('t4', 1, 'done', 'batch', 3, (3 + 0.5 * 3) * 0.5 * 0.8, 3 + 0.5 * 3, (3 + 0.5 * 3) * 0.5 * 0.8, false),
	('t5', 1, 'failed', 'stream', 1, 3 + 0.5 * 1, 3 + 0.5 * 1, (3 + 0.5 * 1) * 0.5, false),
	('t5', 2, 'done', 'stream', 2, 3 + 0.5 * 2, 3 + 0.5 * 2, (3 + 0.5 * 2) * 0.5, false),
	('t6', 1, 'done', 'stream', 10, 0.25, 0.25, (3 + 0.5 * 10) * 0.5, true);

SELECT w.k, c.attempt, c.outcome, c.route, c.wall_seconds, c.cost, c.baseline_cost, c.batch_cost,
	   c.reported, c.department, c.executor,
	   c.wall_seconds = w.wall AND c.cost = w.cost AND c.baseline_cost = w.baseline
	   AND c.batch_cost = w.batch AND c.reported = w.reported AND c.outcome = w.outcome
	   AND c.route = w.route AS ok
  FROM want w JOIN hist h ON h.k = w.k
  FULL JOIN hx_cost c ON c.task_id = h.id AND c.attempt = w.attempt
 WHERE c.task_id IN (SELECT id FROM hist) OR w.k IS NOT NULL
 ORDER BY w.k, c.attempt;
-- the priced rows name the price that applied: the March stream row
SELECT count(*) FILTER (WHERE p.valid_from = '2026-03-01' AND p.route = 'stream') AS by_march_row,
	   count(*) FILTER (WHERE c.price_id IS NULL) AS reported_unpriced
  FROM hx_cost c LEFT JOIN hx_price p ON p.id = c.price_id
 WHERE c.task_id IN (SELECT id FROM hist);
-- the wait and latency of t1: 1 s queued, 3 s to the result
SELECT wait_seconds = 1 AS wait_ok, latency_seconds = 3 AS latency_ok
  FROM hx_cost WHERE task_id = (SELECT id FROM hist WHERE k = 't1');

-- a price that priced bookings cannot change; a later row is the way
UPDATE hx_price SET unit_cost = 9 WHERE task_type = 'acct' AND valid_from = '2026-03-01';
UPDATE hx_price SET description = 'notes are fine' WHERE task_type = 'acct' AND valid_from = '2026-03-01';

-- the ledger is append-only; corrections are new rows
UPDATE hx_cost SET cost = 0 WHERE task_id = (SELECT id FROM hist WHERE k = 't6');
DELETE FROM hx_cost WHERE task_id = (SELECT id FROM hist WHERE k = 't6');
TRUNCATE hx_cost;
TRUNCATE hx_cost_attempt;
TRUNCATE hx_cost_chunk;
SELECT hx_cost_correct(c.id, 0.30, 'invoice says 0.30') > c.id AS corrected
  FROM hx_cost c WHERE c.task_id = (SELECT id FROM hist WHERE k = 't6');
SELECT sum(cost) AS t6_total, sum(cost) = 0.30 AS ok, count(*) AS rows
  FROM hx_cost WHERE task_id = (SELECT id FROM hist WHERE k = 't6');
UPDATE want SET cost = 0.30 WHERE k = 't6';

-- ------------------------------------------------------------------------
-- attribution: every grouping adds up to the hand-made books
-- ------------------------------------------------------------------------
CREATE TEMP TABLE who (k text, dept text, day text);
INSERT INTO who VALUES ('t1', 'sales', '2026-03-02'), ('t2', 'sales', '2026-03-02'),
	('t3', 'ops', '2026-03-03'), ('t4', 'ops', '2026-03-03'), ('t5', 'ops', '2026-03-02'),
	('t6', 'sales', '2026-03-08');

SELECT r."group", r.tasks, r.attempts, r.cost, r.baseline_cost, r.saved,
	   r.cost = e.cost AND r.baseline_cost = e.baseline AND r.saved = e.baseline - e.cost
	   AND r.tasks = e.tasks AND r.attempts = e.attempts
	   AND r.run_seconds = e.secs AS ok
  FROM hx_cost_report('department', '2026-03-01', '2026-04-01') r
  JOIN (SELECT o.dept, sum(w.cost) AS cost, sum(w.baseline) AS baseline,
			   count(DISTINCT w.k) AS tasks, count(*) AS attempts, sum(w.wall) AS secs
		  FROM want w JOIN who o ON o.k = w.k GROUP BY o.dept) e ON e.dept = r."group"
 ORDER BY 1;
SELECT r."group", r.cost, r.cost = e.cost AS ok
  FROM hx_cost_report('route', '2026-03-01', '2026-04-01') r
  JOIN (SELECT route, sum(cost) AS cost FROM want GROUP BY route) e ON e.route = r."group"
 ORDER BY 1;
SELECT r."group", r.cost, r.cost = e.cost AS ok
  FROM hx_cost_report('day', '2026-03-01', '2026-04-01') r
  JOIN (SELECT o.day, sum(w.cost) AS cost FROM want w JOIN who o ON o.k = w.k GROUP BY o.day) e
	ON e.day = r."group"
 ORDER BY 1;
SELECT "group", cost FROM hx_cost_report('window', '2026-03-01', '2026-04-01') ORDER BY 1;
SELECT "group", attempts FROM hx_cost_report('executor', '2026-03-01', '2026-04-01') ORDER BY 1;
-- the period is half-open: [from, to)
SELECT sum(cost) = (SELECT sum(cost) FROM want WHERE k IN ('t1', 't2', 't5')) AS only_monday
  FROM hx_cost_report('task_type', '2026-03-02', '2026-03-03');
SELECT * FROM hx_cost_report('colour', '2026-03-01', '2026-04-01');
SELECT * FROM hx_cost_report('day', '2026-04-01', '2026-03-01');

-- ------------------------------------------------------------------------
-- budgets
-- ------------------------------------------------------------------------
INSERT INTO hx_budget (department, period, amount) VALUES
	('sales', 'month', 10), ('sales', 'day', 100), ('ops', 'week', 100);
INSERT INTO hx_budget (department, period, amount) VALUES ('ops', 'year', 1);
INSERT INTO hx_budget (department, period, amount) VALUES ('ops', 'day', -1);

SELECT s.department, s.period, s.period_start, s.amount, s.spent, s.exhausted,
	   s.spent = e.spent AND s.exhausted = (e.spent >= s.amount) AS ok
  FROM hx_budget_status('2026-03-08 18:00+00') s
  JOIN (VALUES
	('sales', 'month', (SELECT sum(cost) FROM want WHERE k IN ('t1', 't2', 't6'))),
	('sales', 'day', (SELECT sum(cost) FROM want WHERE k = 't6')),	-- Sunday the 8th only
	-- the ISO week of Sunday 2026-03-08 began on Monday 2026-03-02
	('ops', 'week', (SELECT sum(cost) FROM want WHERE k IN ('t3', 't4', 't5'))))
	AS e (department, period, spent) ON e.department = s.department AND e.period = s.period
 ORDER BY 1, 2;
SELECT hx_budget_exhausted('sales', '2026-03-08 18:00+00') AS sales_out,
	   hx_budget_exhausted('ops', '2026-03-08 18:00+00') AS ops_out,
	   hx_budget_exhausted('nobody', '2026-03-08 18:00+00') AS nobody_out,
	   hx_budget_exhausted('sales', '2026-04-01 00:00+00') AS sales_next_month;

-- a rule sends the background work of a department out of budget to batch
INSERT INTO hx_rule (name, position, origin, budget_exhausted, route, window_name)
VALUES ('over-budget', 5, 'background', true, 'batch', 'nightly');
SELECT route, window_name, rule_name, reason
  FROM hx_classify('acct', sla => '1 second', department => 'sales', at => '2026-03-08 18:00+00');
SELECT route, rule_name
  FROM hx_classify('acct', sla => '1 second', department => 'ops', at => '2026-03-08 18:00+00');
SELECT route, rule_name
  FROM hx_classify('acct', sla => '1 second', department => 'sales', origin => 'user',
				   at => '2026-03-08 18:00+00');
-- hx_submit decides the same way (an amount of 0 is used up at once)
BEGIN;
INSERT INTO hx_budget (department, period, amount) VALUES ('ops', 'week', 0)
ON CONFLICT (department, period) DO UPDATE SET amount = 0;
SELECT hx_submit('acct', sla => '1 second', department => 'ops') AS ops_task \gset
SELECT hx_submit('acct', sla => '1 second', department => 'support') AS support_task \gset
SELECT department, route, window_name, rule_name FROM hx_task
 WHERE id IN (:ops_task, :support_task) ORDER BY id;
ROLLBACK;
-- escalation leaves tasks that a budget rule sent to batch alone (no
-- window would be on time: the others take the stream path).  The deadline
-- has passed, so no window can be on time whenever the test runs (one due
-- to open within the minute, such as morning at 07:00, would be)
BEGIN;
UPDATE hx_window SET enabled = false WHERE name = 'fast';
INSERT INTO hx_task (task_type, route, window_name, rule_name, department, deadline)
VALUES ('acct', 'batch', 'nightly', 'over-budget', 'sales', now() - interval '1 second'),
	   ('acct', 'batch', 'nightly', 'slow-batch', 'sales', now() - interval '1 second');
SELECT _hybridexec.hx_escalate() >= 1 AS escalated;
SELECT rule_name, route FROM hx_task WHERE task_type = 'acct' AND rule_name IN ('over-budget', 'slow-batch')
 ORDER BY 1;
ROLLBACK;
DELETE FROM hx_rule WHERE name = 'over-budget';

-- ------------------------------------------------------------------------
-- cost-benefit routing: stream when an hour of latency is worth more than
-- the extra cost of streaming now
-- ------------------------------------------------------------------------
BEGIN;
UPDATE hx_window SET enabled = false;
INSERT INTO hx_window (name, schedule) VALUES ('hourly', '0 * * * *');
INSERT INTO hx_rule (name, position, worth_streaming, route) VALUES ('worth-it', 6, true, 'stream');
-- Sunday 2026-03-15 12:15: the batch path starts at 13:00, 45 minutes later;
-- streaming costs 3.0 instead of 0.4
SELECT _hybridexec.hx_batch_wait('2026-03-15 12:15+00') AS batch_wait;
SELECT hx_worth_streaming('acct', '{}', '2026-03-15 12:15+00') AS no_value_known;
UPDATE hx_type SET latency_value = 3.0 WHERE task_type = 'acct';
SELECT hx_worth_streaming('acct', '{}', '2026-03-15 12:15+00') AS at_3_per_hour,
	   3.0 * 45 / 60 > 3.0 - 0.4 AS expected;
SELECT hx_worth_streaming('acct', '{"latency_value": 4}', '2026-03-15 12:15+00') AS at_4_per_hour,
	   4.0 * 45 / 60 > 3.0 - 0.4 AS expected;
SELECT route, rule_name FROM hx_classify('acct', '{"latency_value": 4}', at => '2026-03-15 12:15+00');
SELECT route, rule_name FROM hx_classify('acct', '{"latency_value": 3}', at => '2026-03-15 12:15+00');
-- streaming is weighed against the task's own window: with a rule sending
-- acct to a window that opens at 02:00 (13 h 45 min away), 3 per hour of
-- latency is worth streaming, though the hourly window opens in 45 minutes
INSERT INTO hx_window (name, schedule) VALUES ('at-two', '0 2 * * *');
INSERT INTO hx_rule (name, position, task_type, route, window_name) VALUES ('acct-at-two', 7, 'acct', 'batch', 'at-two');
SELECT route, rule_name, reason LIKE '%latency saved (window at-two) is worth the extra cost of streaming%' AS says_which_window
  FROM hx_classify('acct', '{"latency_value": 3}', at => '2026-03-15 12:15+00');
SELECT hx_worth_streaming('acct', '{"latency_value": 3}', '2026-03-15 12:15+00', 'at-two') AS against_at_two,
	   3.0 * (13 * 60 + 45) / 60 > 3.0 - 0.4 AS expected;
SELECT hx_worth_streaming('acct', '{"latency_value": "lots"}', '2026-03-15 12:15+00');
ROLLBACK;

-- ------------------------------------------------------------------------
-- savings and advice over March
-- ------------------------------------------------------------------------
SELECT s.actual_cost, s.all_stream_cost, s.all_batch_cost, s.saved, s.saved_pct,
	   s.actual_cost = e.cost AND s.all_stream_cost = e.stream AND s.all_batch_cost = e.batch
	   AND s.saved = e.stream - e.cost AND s.saved_pct = round(100 * (e.stream - e.cost) / e.stream, 1) AS ok
  FROM hx_savings('2026-03-01', '2026-04-01') s,
	   (SELECT sum(cost) AS cost, sum(baseline) AS stream, sum(batch) AS batch FROM want) e;
-- interactive tasks t1 (3 s) and t6 (10 s); all-batch = wait for nightly at
-- 02:00 after submission plus the run time
SELECT s.interactive_tasks, s.interactive_p50_s, round(s.interactive_p95_s::numeric, 6) AS interactive_p95_s,
	   s.all_batch_p50_s, round(s.all_batch_p95_s::numeric, 6) AS all_batch_p95_s,
	   s.interactive_p50_s = (3 + 10) / 2.0 AND abs(s.interactive_p95_s - (3 + 0.95 * (10 - 3))) < 1e-9
	   AND s.all_batch_p50_s = ((16 * 3600 + 2) + (14 * 3600 + 10)) / 2.0
	   AND abs(s.all_batch_p95_s - ((14 * 3600 + 10) + 0.95 * ((16 * 3600 + 2) - (14 * 3600 + 10)))) < 1e-6
	   AS ok
  FROM hx_savings('2026-03-01', '2026-04-01') s;
SELECT * FROM hx_savings('2026-03-01', '2026-04-01', 'no-such-window');

-- acct: 6 tasks, 4 streamed, 2 urgent (user); t2 (SLA 1 day) and t5 (none)
-- streamed without need: moving them saves their cost less the batch cost
SELECT a.task_type, a.tasks, a.streamed_share, a.urgent_share, a.movable_per_day, a.recommendation,
	   a.tasks = 6 AND a.streamed_share = round(4 / 6.0, 3) AND a.urgent_share = round(2 / 6.0, 3)
	   AND a.movable_per_day = round(((SELECT cost - batch FROM want WHERE k = 't2')
									 + (SELECT cost - batch FROM want WHERE k = 't5' AND attempt = 2)) / 31, 4)
	   AS ok
  FROM hx_advise('2026-03-01', '2026-04-01') a WHERE a.task_type = 'acct';
-- money is never added across currencies: a booking in EUR (a EUR price
-- from 2026-03-20; Saturday the 21st, no peak) is a row of its own, and
-- each recommendation names its currency
BEGIN;
INSERT INTO hx_price (task_type, route, unit_cost, currency, valid_from) VALUES
	('acct', 'stream', 2.0, 'EUR', '2026-03-20'), ('acct', 'batch', 1.0, 'EUR', '2026-03-20');
INSERT INTO hx_task (task_type, route, origin, submitted_at, status)
VALUES ('acct', 'stream', 'background', '2026-03-21 10:00+00', 'queued') RETURNING id AS eur_task \gset
UPDATE hx_task SET status = 'running', attempts = 1, started_at = '2026-03-21 10:00:00+00' WHERE id = :eur_task;
UPDATE hx_task SET status = 'done', finished_at = '2026-03-21 10:00:00+00' WHERE id = :eur_task;
SELECT a.task_type, a.currency, a.tasks, a.cost, a.cost_if_all_batch, a.movable_per_day, a.recommendation
  FROM hx_advise('2026-03-01', '2026-04-01') a WHERE a.task_type = 'acct' ORDER BY a.currency;
ROLLBACK;

-- ------------------------------------------------------------------------
-- fixed costs and the break-even share
-- ------------------------------------------------------------------------
INSERT INTO hx_fixed_cost (route, amount, period) VALUES ('streaming', 1, '1 day');
INSERT INTO hx_fixed_cost (route, amount, period) VALUES ('stream', -1, '1 day');
INSERT INTO hx_fixed_cost (route, amount, period) VALUES ('stream', 1, '1 minute');
INSERT INTO hx_fixed_cost (route, amount, period, valid_from, valid_until)
VALUES ('stream', 1, '1 day', '2026-03-02+00', '2026-03-01+00');
SELECT count(*) AS fixed_costs_kept FROM hx_fixed_cost;
BEGIN;
-- a warm GPU node all month, a batch cluster from the 16th: 310 + 16 x 2
INSERT INTO hx_fixed_cost (route, amount, period, valid_from, description) VALUES
	('stream', 310, '31 days', '2026-03-01+00', 'GPU node kept warm'),
	('batch', 2, '1 day', '2026-03-16+00', 'batch cluster'),
	('batch', 1000, '1 day', '2026-04-01+00', 'after the period: not counted');
SELECT * FROM hx_fixed_costs('2026-03-01+00', '2026-04-01+00');
SELECT s.fixed_stream_cost, s.fixed_batch_cost,
	   s.total_cost = s.actual_cost + 342 AND s.all_stream_total = s.all_stream_cost + 310
	   AND s.all_batch_total = s.all_batch_cost + 32
	   AND s.saved_with_fixed = s.all_stream_total - s.total_cost AS ok
  FROM hx_savings('2026-03-01+00', '2026-04-01+00') s;
-- the overall row: a third of March's work needed real time, over the
-- default break-even share of 20%: stream more; at 50%, batch-first
SELECT a.task_type, a.urgent_share, a.break_even_share, a.fixed_cost,
	   a.all_stream_total = 310 + (SELECT sum(c.baseline_cost) FROM hx_cost c
									WHERE c.at >= '2026-03-01+00' AND c.at < '2026-04-01+00'
									  AND c.outcome IN ('done', 'dead')) AS all_stream_ok,
	   a.batch_first_total > a.fixed_cost AS batch_first_counts_work,
	   a.recommendation
  FROM hx_advise('2026-03-01+00', '2026-04-01+00') a WHERE a.task_type = '(all)';
SET LOCAL hybridexec.break_even_share = 0.5;
SELECT a.task_type, a.break_even_share, a.recommendation
  FROM hx_advise('2026-03-01+00', '2026-04-01+00') a WHERE a.task_type = '(all)';
ROLLBACK;

-- ------------------------------------------------------------------------
-- histograms and the observability functions run
-- ------------------------------------------------------------------------
SELECT _hybridexec.hx_hist_bucket(0.5) AS b0, _hybridexec.hx_hist_bucket(1) AS b1, _hybridexec.hx_hist_bucket(3) AS b2,
	   _hybridexec.hx_hist_bucket(1024) AS b11, _hybridexec.hx_hist_bucket(1e12) AS b31;
-- 10 durations in [4, 8) ms: the median is interpolated to 6
SELECT _hybridexec.hx_hist_percentile(_hybridexec.hx_hist(v), 0.5) AS p50
  FROM (SELECT 5.0::float8 AS v FROM generate_series(1, 10)) x;
SELECT _hybridexec.hx_hist_percentile(_hybridexec.hx_hist_merge(_hybridexec.hx_hist(1.5), _hybridexec.hx_hist(1.5)), 1.5);

-- live counts: three stream tasks of acct (no worker takes them) queued
-- ten minutes ago are a backlog older than hybridexec.alert_backlog_age (5 min)
BEGIN;
INSERT INTO hx_task (task_type, route, submitted_at)
SELECT 'acct', 'stream', now() - interval '10 minutes' FROM generate_series(1, 3);
SELECT queued, running, oldest_queued >= interval '10 minutes' AS ten_minutes_old
  FROM hx_stats WHERE task_type = 'acct' AND route = 'stream';
-- rates, error rate and percentiles are numbers rounded for reading, never
-- float arithmetic's 124.80000000000001: 999 done and 1 failed this minute,
-- queue waits of 5 ms (the bucket [4, 8) ms: median 6), run times 3, 5, 7 ms
INSERT INTO hx_stat_minute (minute, task_type, route, shard, done, failed, dead, wall_seconds, cost,
							wait_hist, run_hist)
SELECT date_trunc('minute', now()), 'acct', 'stream', 0, 999, 1, 0, 1.0, 0,
	   (SELECT _hybridexec.hx_hist(5.0) FROM generate_series(1, 10)),
	   (SELECT _hybridexec.hx_hist(v) FROM unnest(ARRAY[3.0, 5.0, 7.0]::float8[]) v);
SELECT done, error_rate, wait_p50_ms, run_p50_ms, run_p99_ms,
	   pg_typeof(per_min_1) AS rate_type, scale(per_min_1) AS s1, scale(per_min_5) AS s5,
	   scale(per_min_15) AS s15, per_min_15 BETWEEN 62 AND 67 AS per_min_15_ok
  FROM hx_stats WHERE task_type = 'acct' AND route = 'stream';
SELECT problem, severity, subject FROM hx_health() WHERE subject = 'acct';
ROLLBACK;

-- window runs against their prediction: on time, 1.5 times slower plus a
-- minute (overran), stopped at max_duration (overran)
BEGIN;
INSERT INTO hx_window (name, schedule) VALUES ('w_cost', '0 0 1 1 *');
INSERT INTO hx_window_run (window_name, status, started_at, finished_at, expected_duration)
VALUES ('w_cost', 'done', now() - interval '3 hours', now() - interval '2 hours 50 minutes', '10 minutes'),
	   ('w_cost', 'done', now() - interval '2 hours', now() - interval '1 hour 40 minutes', '10 minutes'),
	   ('w_cost', 'overran', now() - interval '1 hour', now() - interval '55 minutes', '10 minutes');
SELECT duration, expected_duration, ratio, overran,
	   ratio = round((extract(epoch FROM duration) / 600)::numeric, 2) AS ratio_ok
  FROM hx_window_history WHERE window_name = 'w_cost' ORDER BY run_id;
SELECT problem, subject FROM hx_health() WHERE subject = 'w_cost';
ROLLBACK;
SELECT period, rule_name, route, tasks FROM hx_rule_stats('2026-03-01', '2026-04-01', 'day')
 WHERE rule_name IS NULL;

-- leave no acct tasks for later tests
DELETE FROM hx_task WHERE task_type = 'acct';
