-- hybridexec cost demo (run by scripts/demo.sh after demo.sql, on the same
-- throwaway instance): a mixed workload, mostly background and some
-- interactive, and the books it leaves.  Who paid, what hybrid saved
-- against streaming everything, and how fast the urgent work was against
-- batching everything, all answered in SQL.

\pset footer off

-- 1. The price catalog is a table.  A model call costs 0.02 on the stream
--    path plus 0.001 per second of run time; batch attempts get the row's
--    batch_discount (50%, what LLM batch APIs give) unless a batch row says
--    otherwise.  Prices are effective-dated: a new price is a new row.
INSERT INTO hx_price (task_type, route, unit_cost, per_second, description)
VALUES ('summarize', 'stream', 0.02, 0.001, 'model call at list price');
SELECT coalesce(task_type, '(default)') AS task_type, route, unit_cost, per_second,
       batch_discount, currency, valid_from
  FROM hx_price ORDER BY id;
SELECT hx_price_at('summarize', 'stream') AS stream_price, hx_price_at('summarize', 'batch') AS batch_price;

-- 2. The workload: 600 leads to re-score in the background (sales and
--    marketing pay), 60 support tickets with a customer waiting.
SELECT count(*) AS background_tasks
  FROM (SELECT hx_submit('summarize',
                         jsonb_build_object('ticket', 1000 + i, 'text', 'Lead ' || i || ' needs a fresh score'),
                         department => CASE WHEN i % 3 = 0 THEN 'marketing' ELSE 'sales' END)
          FROM generate_series(1, 600) i) s;
SELECT count(*) AS interactive_tasks
  FROM (SELECT hx_submit('summarize',
                         jsonb_build_object('ticket', 5000 + i, 'text', 'Customer ' || i || ' cannot pay'),
                         origin => 'user', department => 'support')
          FROM generate_series(1, 60) i) s;

-- the interactive ones stream at once; the nightly window is opened now
-- instead of waiting for 02:00 (each wait a statement of its own: a window
-- run starts once the statement that opened it has committed)
CREATE FUNCTION demo_wait_stream() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 600 LOOP
		EXIT WHEN NOT EXISTS (SELECT 1 FROM hx_task WHERE route = 'stream' AND status IN ('queued', 'running', 'failed')
							   AND task_type = 'summarize');
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
CREATE FUNCTION demo_wait_runs() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	FOR i IN 1 .. 1200 LOOP
		EXIT WHEN NOT EXISTS (SELECT 1 FROM hx_window_run WHERE status IN ('starting', 'running'));
		PERFORM pg_sleep(0.05);
	END LOOP;
END
$$;
SELECT demo_wait_stream();
SELECT hx_run_window('nightly') AS run \gset
SELECT demo_wait_runs();
SELECT route, status, count(*) FROM hx_task WHERE task_type = 'summarize' GROUP BY 1, 2 ORDER BY 1, 2;

-- 3. The ledger: one row per finished attempt, written by a trigger in the
--    transaction that finished it.  Nobody has to remember to book it.
SELECT task_id, route, coalesce(window_name, '') AS window_name, department, origin,
       round(wall_seconds::numeric, 4) AS run_s, cost, baseline_cost, batch_cost
  FROM hx_cost ORDER BY id DESC LIMIT 5;

-- 4. Who paid, over the last hour.
SELECT * FROM hx_cost_report('department', now() - interval '1 hour', now() + interval '1 minute');
SELECT * FROM hx_cost_report('route', now() - interval '1 hour', now() + interval '1 minute');

-- 5. What hybrid saved against streaming everything (baseline) and what
--    batching everything would have cost, and the latency the customers
--    saw against what all-batch (the nightly window) would have given them.
SELECT actual_cost, all_stream_cost, all_batch_cost, saved, saved_pct, background_saved_pct
  FROM hx_savings(now() - interval '1 hour', now() + interval '1 minute');
SELECT interactive_tasks,
       round((interactive_p50_s * 1000)::numeric, 1) AS p50_ms,
       round((interactive_p95_s * 1000)::numeric, 1) AS p95_ms,
       round((all_batch_p50_s / 3600)::numeric, 1) AS all_batch_p50_hours,
       latency_cut_pct
  FROM hx_savings(now() - interval '1 hour', now() + interval '1 minute');

-- 6. Live statistics from per-minute aggregates (never from task history),
--    advice from what was observed, and health.
SELECT task_type, route, queued, running, done, dead, round(per_min_1::numeric) AS per_min,
       round(wait_p50_ms::numeric, 1) AS wait_p50_ms, round(run_p95_ms::numeric, 2) AS run_p95_ms
  FROM hx_stats;
SELECT task_type, tasks, streamed_share, urgent_share, recommendation FROM hx_advise();
SELECT problem, severity, subject, detail FROM hx_health();

-- 7. A percentage rollout: stream 30% of the background re-scoring (chosen
--    by a stable hash of each task's id) to see what real time would cost
--    and give, against the 70% that keep waiting for the window.
INSERT INTO hx_rule (name, position, task_type, origin, route, sample, description)
VALUES ('summarize-canary', 1, 'summarize', 'background', 'stream', 0.3, 'demo: stream 30% to compare');
SELECT count(*) AS canary_round
  FROM (SELECT hx_submit('summarize', jsonb_build_object('ticket', 9000 + i, 'text', 'Lead ' || i || ' rescore'),
                         department => 'sales')
          FROM generate_series(1, 300) i) s;
SELECT demo_wait_stream();
SELECT hx_run_window('nightly') AS run \gset
SELECT demo_wait_runs();
SELECT rule_name, sample, arm, routes, tasks, done, share, cost_per_done, latency_p50, latency_p95, failure_rate
  FROM hx_rollout_report(now() - interval '1 hour', now() + interval '1 minute');

