-- hybridexec demo: one urgent task streams at once, one background task
-- waits for the cheap nightly window, and every decision says why; then
-- a batch window processes ten thousand tasks through a batch handler.

\pset footer off
CREATE EXTENSION pg_cron;   -- opens batch windows on their schedules
CREATE EXTENSION hybridexec;

-- 1. The policy is data.  First rule that matches wins.
SELECT position, name, coalesce(origin, '') AS origin, coalesce(max_sla::text, '') AS sla_below,
       route, coalesce(window_name, '') AS window_name
  FROM hx_rule ORDER BY position;

-- 2. A handler is an ordinary SQL function f(jsonb) RETURNS jsonb.  This
--    one stands in for a model call: it "summarises" a ticket and keeps a
--    row of what it did, in the same transaction as the task's result.
CREATE TABLE ticket_summary (ticket int, summary text, made_at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION summarize(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	s text := left(p->>'text', 24) || '...';
BEGIN
	INSERT INTO ticket_summary (ticket, summary) VALUES ((p->>'ticket')::int, s);
	RETURN jsonb_build_object('summary', s, 'words', array_length(regexp_split_to_array(p->>'text', '\s+'), 1));
END
$$;
SELECT hx_register('summarize', 'summarize(jsonb)', max_attempts => 3, timeout => '30 seconds');

-- 3. Ask before submitting: how would each task be classified, and why?
SELECT 'customer waiting' AS task, route, window_name, rule_name, reason, est_cost
  FROM hx_classify('summarize', origin => 'user')
UNION ALL
SELECT 'nightly re-score', route, window_name, rule_name, reason, est_cost
  FROM hx_classify('summarize', sla => '12 hours');

-- 4. Submit both.  The urgent one's COMMIT wakes a stream worker directly.
SELECT hx_submit('summarize', '{"ticket": 1, "text": "My card was charged twice for the same order"}',
                 origin => 'user', department => 'support') AS urgent \gset
SELECT hx_submit('summarize', '{"ticket": 2, "text": "Quarterly lead list needs new scores"}',
                 sla => '12 hours', department => 'sales') AS background \gset

-- 5. The urgent one is already done; the background one waits for 'nightly'.
SELECT hx_wait(:urgent) AS urgent_status;
SELECT id, status, route, coalesce(window_name, '') AS window_name, rule_name,
       round(extract(epoch FROM finished_at - submitted_at) * 1000, 1) AS ms_to_done,
       result
  FROM hx_task ORDER BY id;
SELECT * FROM ticket_summary;

-- The first task paid for warming caches (each worker prepares its plans on
-- its first tasks).  Five more urgent tickets, each in its own transaction,
-- as a help desk would send them:
SELECT hx_submit('summarize', '{"ticket": 11, "text": "Refund not received after ten days"}', origin => 'user');
SELECT hx_submit('summarize', '{"ticket": 12, "text": "Cannot log in since the update"}', origin => 'user');
SELECT hx_submit('summarize', '{"ticket": 13, "text": "Invoice shows the wrong address"}', origin => 'user');
SELECT hx_submit('summarize', '{"ticket": 14, "text": "App crashes when I upload a photo"}', origin => 'user');
SELECT hx_submit('summarize', '{"ticket": 15, "text": "Where is my parcel"}', origin => 'user') AS last \gset
SELECT hx_wait(:last) AS last_status;
SELECT (payload->>'ticket')::int AS ticket, status,
       round(extract(epoch FROM finished_at - submitted_at) * 1000, 2) AS ms_from_submit_to_done
  FROM hx_task WHERE (payload->>'ticket')::int > 10 ORDER BY id;

-- 6. The workers are ordinary background processes.
SELECT backend_type, state FROM pg_stat_activity WHERE backend_type LIKE 'hybridexec%';
SELECT slot, state, tasks_done, tasks_failed FROM hx_workers();

-- 7. Failures are retried, then dead, with every error kept.
CREATE FUNCTION flaky(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION 'model endpoint returned 503' USING HINT = 'try again later';
END
$$;
SELECT hx_register('flaky', 'flaky(jsonb)', max_attempts => 3);
SELECT hx_submit('flaky', '{}', origin => 'user') AS flaky \gset
SELECT hx_wait(:flaky) AS flaky_status;
SELECT task_id, attempt, sqlstate, message FROM hx_error ORDER BY id;

-- 8. Batch windows.  The background ticket above waits for 'nightly'; so
--    will ten thousand re-scoring tasks.  Windows are rows; each enabled
--    window has a pg_cron job that opens it on its schedule.
CREATE TABLE lead_score (lead int PRIMARY KEY, score int);
-- A batch handler takes the payloads of a whole chunk and returns one
-- result per payload, in order: one call (one "batch API request") per
-- chunk instead of one per task.
CREATE FUNCTION rescore(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
BEGIN
	INSERT INTO lead_score (lead, score)
	SELECT (p->>'lead')::int, length(p->>'name') * 7 % 100 FROM unnest(ps) p
	ON CONFLICT (lead) DO UPDATE SET score = excluded.score;
	RETURN ARRAY(SELECT jsonb_build_object('score', length(p->>'name') * 7 % 100) FROM unnest(ps) p);
END
$$;
SELECT hx_register('rescore', batch_handler => 'rescore(jsonb[])');
SELECT count(*) AS queued
  FROM hx_submit_batch('rescore', ARRAY(SELECT jsonb_build_object('lead', g, 'name', 'lead ' || g)
                                         FROM generate_series(1, 10000) g),
                       department => 'sales');
SELECT name, schedule, max_duration, chunk_size, enabled FROM hx_window ORDER BY name;
SELECT jobname, schedule, command FROM cron.job ORDER BY jobname;

-- What the planner expects of each window: next start, backlog, duration
-- (measured throughput once runs have been seen), expected finish.
SELECT window_name, next_start, backlog, expected_duration, expected_finish FROM hx_window_plan();

-- 9. Open 'nightly' now instead of waiting for 02:00.  hx_run_window()
--    returns at once: a batch worker does the work, chunk by chunk, each
--    chunk committed with its checkpoint.
SELECT hx_run_window('nightly') AS run \gset
SELECT hx_wait_run(:run) AS run_status;
SELECT id, window_name, status, started_by, processed, failed, chunks,
       round(extract(epoch FROM finished_at - started_at), 2) AS seconds,
       round(processed / greatest(extract(epoch FROM finished_at - started_at), 0.001)) AS tasks_per_s
  FROM hx_window_run WHERE id = :run;
SELECT chunk, task_type, processed, failed, state FROM hx_checkpoint WHERE run_id = :run ORDER BY chunk LIMIT 5;
SELECT count(*) AS scored, min(score), max(score) FROM lead_score;
SELECT id, status, route, window_name, result FROM hx_task WHERE id = :background;
-- The run's chunks are the history adaptive windows plan with: the next
-- plan for 'nightly' will use this measured throughput.
SELECT round(hx_type_throughput('rescore')) AS measured_rescore_tasks_per_s;

-- 9b. Tiered results: a quick draft streams now for the customer; the
--     authoritative answer is computed by the next window at the batch
--     price, and hx_result() moves from one to the other.
CREATE FUNCTION reply_draft(p jsonb) RETURNS jsonb LANGUAGE sql
	AS $$SELECT jsonb_build_object('reply', 'We are looking into: ' || (p->>'text'))$$;
CREATE FUNCTION reply_final(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql
	AS $$SELECT array_agg(jsonb_build_object('reply', 'Here is the full answer to: ' || (p->>'text')) ORDER BY o)
		   FROM unnest(ps) WITH ORDINALITY AS u (p, o)$$;
SELECT hx_register('reply_final', batch_handler => 'reply_final(jsonb[])');
SELECT hx_register('reply_draft', 'reply_draft(jsonb)', refine_with => 'reply_final');
SELECT hx_submit('reply_draft', '{"text": "Why was I charged twice?"}', origin => 'user') AS draft \gset
SELECT hx_wait(:draft) AS draft_status;
SELECT * FROM hx_result(:draft);
SELECT id, task_type, tier, parent_id, origin, route, window_name, status FROM hx_task WHERE parent_id = :draft;
SELECT hx_run_window('nightly') AS run2 \gset
SELECT hx_wait_run(:run2) AS run2_status;
SELECT * FROM hx_result(:draft);
