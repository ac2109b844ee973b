--
-- submit: hx_submit() queues classified tasks; the stream workers of this
-- instance run the stream ones; hx_wait(), hx_cancel(), dedupe, failures.
--

-- a batch task waits for its window
SELECT hx_submit('echo', '{"key": "b1"}', sla => '30 minutes', department => 'sales') AS b1 \gset
SELECT task_type, payload, status, route, window_name, rule_name, reason, origin,
	   priority, sla, department, attempts
  FROM hx_task WHERE id = :b1;

-- a stream task runs at once: its effect and its result commit together
SELECT hx_submit('echo', '{"key": "s1"}', origin => 'user') AS s1 \gset
SELECT hx_wait(:s1, '60 seconds');
SELECT status, route, rule_name, attempts, result, last_error,
	   started_at >= submitted_at AND finished_at >= started_at AS times_in_order,
	   worker_pid IN (SELECT pid FROM hx_workers()) AS run_by_a_stream_worker
  FROM hx_task WHERE id = :s1;
SELECT task_key, note FROM effects WHERE task_key = 's1';

-- many stream tasks in one transaction: all run, each exactly once
BEGIN;
SELECT count(hx_submit('echo', jsonb_build_object('key', 'm' || g), origin => 'user'))
  FROM generate_series(1, 50) g;
COMMIT;
SELECT count(*) FILTER (WHERE hx_wait(id, '60 seconds') = 'done') AS done
  FROM hx_task WHERE payload->>'key' LIKE 'm%';
SELECT count(*) AS effects, count(DISTINCT task_key) AS distinct_keys
  FROM effects WHERE task_key LIKE 'm%';

-- a failing task is retried, then dead with its errors kept; the good task
-- submitted beside it is not undone
BEGIN;
SELECT hx_submit('echo', '{"key": "f1", "fail": true}', origin => 'user') AS f1 \gset
SELECT hx_submit('echo', '{"key": "g1"}', origin => 'user') AS g1 \gset
COMMIT;
SELECT hx_wait(:f1, '60 seconds') AS f1_status, hx_wait(:g1, '60 seconds') AS g1_status;
SELECT status, attempts, last_error, result FROM hx_task WHERE id = :f1;
SELECT attempt, sqlstate, message, hint FROM hx_error WHERE task_id = :f1 ORDER BY attempt;
SELECT task_key, count(*) FROM effects WHERE task_key IN ('f1', 'g1') GROUP BY 1 ORDER BY 1;

-- a handler that hangs is stopped by the type's timeout (200 ms)
SELECT hx_submit('sleepy', '{"seconds": 30}', origin => 'user') AS h1 \gset
SELECT hx_wait(:h1, '60 seconds');
SELECT status, attempts, last_error LIKE 'handler timed out after % ms (type timeout 200 ms)' AS timed_out
  FROM hx_task WHERE id = :h1;
SELECT sqlstate FROM hx_error WHERE task_id = :h1;

-- dedupe: while a task with the key is unfinished, its id comes back
SELECT hx_submit('echo', '{"key": "d1"}', dedupe_key => 'lead-42') AS d1 \gset
SELECT hx_submit('echo', '{"key": "d1-again"}', dedupe_key => 'lead-42') = :d1 AS same_task;
SELECT count(*) FROM hx_task WHERE dedupe_key = 'lead-42';
-- once it is finished (here: cancelled) the key is free again
SELECT hx_cancel(:d1);
SELECT hx_submit('echo', '{"key": "d1-new"}', dedupe_key => 'lead-42') <> :d1 AS new_task;
-- a duplicate that asks for more upgrades the waiting task: a higher
-- priority and an earlier deadline; then an urgent one streams it at once
SELECT hx_submit('echo', '{"key": "u1"}', sla => '2 days', dedupe_key => 'upgrade-me') AS u1 \gset
SELECT hx_submit('echo', '{"key": "u1-again"}', sla => '2 days', dedupe_key => 'upgrade-me') = :u1 AS same_task;
SELECT hx_submit('echo', '{"key": "u1-more"}', sla => '2 days', priority => 5, deadline => '2100-01-01 00:00+00',
				 dedupe_key => 'upgrade-me') = :u1 AS same_task;
SELECT route, window_name, priority, deadline = '2100-01-01 00:00+00' AS earlier_deadline,
	   reason LIKE '%; upgraded by a duplicate submission: priority 5, deadline %' AS says_so
  FROM hx_task WHERE id = :u1;
SELECT hx_submit('echo', '{"key": "u1-urgent"}', origin => 'user', dedupe_key => 'upgrade-me') = :u1 AS same_task;
SELECT hx_wait(:u1, '60 seconds');
SELECT route, window_name, result, reason LIKE '%; upgraded by a duplicate submission: stream (rule "user-initiated"%' AS says_so
  FROM hx_task WHERE id = :u1;

-- reuse_within: a done task with the key that finished within it is the
-- answer (no new task), booked as a reuse at no cost and counted in
-- hx_stats; an older one is not
SELECT hx_submit('echo', '{"key": "ru1"}', origin => 'user', dedupe_key => 'reuse-me') AS ru1 \gset
SELECT hx_wait(:ru1, '60 seconds');
SELECT hx_submit('echo', '{"key": "ru1-again"}', origin => 'user', dedupe_key => 'reuse-me',
				 reuse_within => '1 hour') = :ru1 AS reused;
SELECT count(*) AS tasks_with_the_key FROM hx_task WHERE dedupe_key = 'reuse-me';
SELECT outcome, attempt, cost, baseline_cost >= cost AS saved_something FROM hx_cost
 WHERE task_id = :ru1 ORDER BY id;
SELECT reused FROM hx_stats WHERE task_type = 'echo' AND route = 'stream';
UPDATE hx_task SET finished_at = now() - interval '2 hours' WHERE id = :ru1;
SELECT hx_submit('echo', '{"key": "ru1-late"}', origin => 'user', dedupe_key => 'reuse-me',
				 reuse_within => '1 hour') <> :ru1 AS new_task;
SELECT hx_submit('echo', '{"key": "ru2"}', reuse_within => '1 hour');
SELECT hx_submit('echo', '{"key": "ru3"}', dedupe_key => 'x', reuse_within => '-1 hour');

-- cancel
SELECT hx_cancel(:b1);
SELECT status, finished_at IS NOT NULL AS finished FROM hx_task WHERE id = :b1;
SELECT hx_cancel(:b1);
SELECT hx_cancel(:s1);
SELECT hx_cancel(-1);
SELECT hx_cancel(NULL);

-- hx_wait on a task this transaction queued would wait forever: refused
BEGIN;
SELECT hx_submit('echo', '{"key": "w1"}', origin => 'user') AS w1 \gset
SELECT hx_wait(:w1);
ROLLBACK;
-- also in a subtransaction of it (the row's xmin is the savepoint's)
BEGIN;
SAVEPOINT before_submit;
SELECT hx_submit('echo', '{"key": "w2"}', origin => 'user') AS w2 \gset
\set VERBOSITY sqlstate
SELECT hx_wait(:w2);
\set VERBOSITY default
ROLLBACK;
SELECT hx_wait(-1);

-- hx_await: several tasks at once, one row per distinct id in the order
-- given, with the result of the done ones; the waiting batch task b2 is
-- shown as it is when the timeout passes
SELECT hx_submit('echo', '{"key": "a1"}', origin => 'user') AS a1 \gset
SELECT hx_submit('echo', '{"key": "a2"}', origin => 'user') AS a2 \gset
SELECT hx_submit('echo', '{"key": "b2"}', sla => '30 minutes') AS b2 \gset
SELECT id = :a2 AS is_a2, status, result FROM hx_await(ARRAY[:a2, :a1, :a2], '60 seconds') WHERE id = :a2;
SELECT array_agg(id ORDER BY ord) = ARRAY[:b2, :a1, :a2]::bigint[] AS in_given_order,
	   array_agg(status ORDER BY ord) AS statuses,
	   array_agg(result IS NULL ORDER BY ord) AS no_result
  FROM hx_await(ARRAY[:b2, :a1, :a2, :b2], '0.2 seconds') WITH ORDINALITY AS a (id, status, result, ord);
SELECT count(*) AS no_rows FROM hx_await('{}');
-- bad input: a clear error
SELECT * FROM hx_await(NULL);
SELECT * FROM hx_await(ARRAY[:a1, NULL]);
SELECT * FROM hx_await(ARRAY[:a1], NULL);
SELECT * FROM hx_await(ARRAY[[:a1], [:a2]]);
SELECT * FROM hx_await(ARRAY[:a1, -1]);
BEGIN;
SELECT hx_submit('echo', '{"key": "w3"}', origin => 'user') AS w3 \gset
\set VERBOSITY sqlstate
SELECT * FROM hx_await(ARRAY[:a1, :w3]);
\set VERBOSITY default
ROLLBACK;
SELECT hx_cancel(:b2);
SELECT status FROM hx_await(ARRAY[:b2]);
-- run_at: classified at submit, not due before it
SELECT hx_submit('echo', '{"key": "r1"}', origin => 'user', run_at => clock_timestamp() + interval '1 second') AS r1 \gset
SELECT status, route, run_after > submitted_at + interval '0.5 seconds' AS delayed FROM hx_task WHERE id = :r1;
SELECT hx_wait(:r1, '60 seconds');
SELECT started_at >= run_after AS not_before_run_at FROM hx_task WHERE id = :r1;
SELECT * FROM hx_submit_batch('echo', ARRAY['{"key": "r5"}']::jsonb[], run_at => '2100-01-01') AS r5 \gset
SELECT run_after = '2100-01-01' AS batch_run_at FROM hx_task WHERE id = :r5;
-- bad run_at: a clear error, nothing queued
\set VERBOSITY terse
SELECT hx_submit('echo', '{"key": "r2"}', origin => 'user', run_at => 'infinity');
SELECT hx_submit('echo', '{"key": "r3"}', sla => '1 hour', run_at => now() + interval '2 hours');
SELECT hx_submit('echo', '{"key": "r4"}', deadline => now() + interval '1 hour', run_at => now() + interval '2 hours');
SELECT hx_submit_batch('echo', ARRAY['{"key": "r6"}']::jsonb[], deadline => now() + interval '1 hour', run_at => now() + interval '2 hours');
\set VERBOSITY default
SELECT count(*) AS none_queued FROM hx_task WHERE payload->>'key' IN ('r2', 'r3', 'r4', 'r6');

-- a task queued by a rolled-back transaction never runs
SELECT count(*) AS w1_effects FROM effects WHERE task_key = 'w1';

-- priority: higher first.  The tasks are uncommitted, so no worker sees
-- them; the worker-side claim function shows the order it takes them in.
BEGIN;
SELECT hx_submit('echo', '{"n": 1}', origin => 'user', priority => 0) IS NOT NULL;
SELECT hx_submit('echo', '{"n": 2}', origin => 'user', priority => 5) IS NOT NULL;
SELECT hx_submit('echo', '{"n": 3}', origin => 'user', priority => 5) IS NOT NULL;
SELECT payload, attempts FROM _hybridexec.hx_stream_claim(0, 1);
SELECT payload, attempts FROM _hybridexec.hx_stream_claim(0, 5) ORDER BY payload->>'n';
ROLLBACK;

-- the stream workers are visible in pg_stat_activity
SELECT backend_type, count(*) FROM pg_stat_activity
 WHERE backend_type LIKE 'hybridexec%' GROUP BY 1 ORDER BY 1;

-- hx_submit_batch: one task per payload, each classified on its own, ids in
-- payload order
INSERT INTO hx_rule (name, position, payload_match, route) VALUES ('urgent-flag', 5, '{"urgent": true}', 'stream');
CREATE TEMP TABLE xb AS
	SELECT * FROM hx_submit_batch('echo', ARRAY['{"key": "x1"}', '{"key": "x2", "urgent": true}', '{"key": "x3"}']::jsonb[],
								  sla => '10 minutes') WITH ORDINALITY AS b(id, ord);
SELECT array_agg(t.payload->>'key' ORDER BY b.ord) AS keys_in_order,
	   array_agg(t.route ORDER BY b.ord) AS routes,
	   array_agg(t.rule_name ORDER BY b.ord) AS rules
  FROM xb b JOIN hx_task t ON t.id = b.id;
DELETE FROM hx_rule WHERE name = 'urgent-flag';
-- with no rule reading the payload, one decision serves all of them
CREATE TEMP TABLE yb AS
	SELECT * FROM hx_submit_batch('echo', ARRAY['{"key": "y1"}', '{"key": "y2", "urgent": true}']::jsonb[],
								  sla => '10 minutes', department => 'ops') WITH ORDINALITY AS b(id, ord);
SELECT array_agg(t.payload->>'key' ORDER BY b.ord) AS keys_in_order,
	   array_agg(t.route || '/' || t.window_name || '/' || t.rule_name || '/' || t.department ORDER BY b.ord) AS decisions
  FROM yb b JOIN hx_task t ON t.id = b.id;
SELECT count(*) FROM hx_submit_batch('echo', '{}'::jsonb[]);
SELECT hx_submit_batch('echo', NULL);
SELECT hx_submit_batch('echo', ARRAY['{}', NULL]::jsonb[]);
SELECT hx_submit_batch('nope', ARRAY['{}']::jsonb[]);
SELECT count(*) AS x_tasks FROM hx_task WHERE payload->>'key' LIKE 'x%';
SELECT hx_wait(id, '60 seconds') FROM hx_task WHERE payload->>'key' = 'x2';
