-- hybridexec demo: one urgent task streams at once, one background task
-- waits for the cheap nightly window, and every decision says why.

\pset footer off
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
