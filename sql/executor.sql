--
-- executor: the external executor protocol by hand: hx_claim leases,
-- hx_complete, hx_fail, hx_heartbeat, lease reclaim, hx_batch_report, and
-- every bad argument as an error with an errcode and a hint.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
-- errors that name a task id: shown with the digits blanked out
CREATE FUNCTION pg_temp.try(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
	st text; msg text; det text; hnt text;
BEGIN
	EXECUTE stmt;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT,
		det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
	RETURN st || ': ' || regexp_replace(msg, '[0-9]+', 'N', 'g')
		   || CASE WHEN det LIKE 'It expired%' THEN '' ELSE coalesce(' / ' || nullif(det, ''), '') END
		   || coalesce(' / ' || hnt, '');
END
$$;
SELECT hx_register('ext_sum', max_attempts => 2);
SELECT count(hx_submit('ext_sum', jsonb_build_object('n', g), origin => 'user'))
  FROM generate_series(1, 3) g;

-- a claim: running, attempt counted, executor and lease recorded
CREATE TEMP TABLE c AS SELECT * FROM hx_claim('regress', ARRAY['ext_sum'], max => 2);
SELECT payload, attempt, max_attempts, route, window_name,
	   lease_token IS NOT NULL AS has_token,
	   lease_expires_at > now() + interval '4 minutes' AS five_minutes
  FROM c ORDER BY id;
SELECT payload, status, attempts, executor FROM hx_task
 WHERE task_type = 'ext_sum' ORDER BY id;

-- complete with a cost, fail with retry: in the same update as the status
SELECT hx_complete(id, lease_token, '{"sum": 1}', 0.25) FROM c WHERE payload->>'n' = '1';
SELECT hx_fail(id, lease_token, 'model overloaded') FROM c WHERE payload->>'n' = '2';
-- (the retry waits after the failure: compared with the failure's moment,
-- not with the clock of a later statement, which a 10 ms backoff may pass)
SELECT payload, status, result, reported_cost, last_error,
	   coalesce(run_after > (SELECT max(e.at) FROM hx_error e WHERE e.task_id = t.id), false) AS backoff
  FROM hx_task t WHERE task_type = 'ext_sum' ORDER BY id;
SELECT e.attempt, e.sqlstate, e.message, e.hint FROM hx_error e
  JOIN hx_task t ON t.id = e.task_id WHERE t.task_type = 'ext_sum';
-- done, it left the queue's own heap for hx_task_history (lease token
-- kept), and its reported cost is booked
SELECT t.tableoid::regclass AS stored_in, t.lease_token = c.lease_token AS same_token,
	   t.lease_expires_at
  FROM hx_task t JOIN c ON c.id = t.id WHERE c.payload->>'n' = '1';
SELECT k.attempt, k.outcome, k.cost, k.reported, k.executor FROM hx_cost k
  JOIN c ON c.id = k.task_id WHERE c.payload->>'n' = '1';

-- the same token again: refused, nothing changes
SELECT pg_temp.try(format('SELECT hx_complete(%s, %L, ''{}'')', id, lease_token)) FROM c WHERE payload->>'n' = '1';
SELECT pg_temp.try(format('SELECT hx_fail(%s, %L, ''again'')', id, lease_token)) FROM c WHERE payload->>'n' = '2';
SELECT pg_temp.try(format('SELECT hx_complete(%s, gen_random_uuid(), ''{}'')', id)) FROM c WHERE payload->>'n' = '1';

-- heartbeat extends; a stale token in the list extends none
SELECT pg_sleep(0.1);
TRUNCATE c;
INSERT INTO c SELECT * FROM hx_claim('regress', max => 1, lease => '1 minute');
SELECT payload, attempt FROM c;
SELECT h.lease_expires_at > now() + interval '50 minutes' AS extended
  FROM c, hx_heartbeat(ARRAY[c.id], ARRAY[c.lease_token], '1 hour') h;
SELECT pg_temp.try(format('SELECT hx_heartbeat(ARRAY[%s], ARRAY[gen_random_uuid()])', id)) FROM c;
SELECT * FROM hx_heartbeat(ARRAY[1, 2]::bigint[], ARRAY[gen_random_uuid()]);

-- an expired lease: refused, then reclaimed as a failed attempt
-- (in one transaction, so that the scheduler does not reclaim it first)
BEGIN;
UPDATE hx_task t SET lease_expires_at = now() - interval '1 second' FROM c WHERE t.id = c.id;
SELECT pg_temp.try(format('SELECT hx_complete(%s, %L, ''{}'')', id, lease_token)) FROM c;
SELECT hx_reclaim_leases() >= 1 AS reclaimed;
COMMIT;
SELECT t.status, t.last_error, e.sqlstate FROM hx_task t, c, hx_error e
 WHERE t.id = c.id AND e.task_id = t.id AND e.message = 'lease expired';

-- no retry: dead at once
TRUNCATE c;
INSERT INTO c SELECT * FROM hx_claim('regress', max => 10);
SELECT payload, attempt FROM c ORDER BY id;
SELECT hx_fail(id, lease_token, 'invalid input', retry => false) FROM c WHERE payload->>'n' = '3';

-- types with an in-database handler are never claimable
SELECT count(*) FROM hx_claim('regress', max => 10000);

-- hx_batch_report: results, errors, missing and unknown ids, bad lines
SELECT hx_register('ext_batch');
SELECT count(hx_submit('ext_batch', jsonb_build_object('n', g), origin => 'user'))
  FROM generate_series(1, 4) g;
TRUNCATE c;
INSERT INTO c SELECT * FROM hx_claim('regress', ARRAY['ext_batch'], max => 10);
SELECT (SELECT payload FROM hx_task WHERE id = r.id), r.status, r.error
  FROM hx_batch_report((SELECT array_agg(id ORDER BY id) FROM c),
					   (SELECT array_agg(lease_token ORDER BY id) FROM c),
					   (SELECT string_agg(l, E'\n') FROM (VALUES
						 (format('{"custom_id": "%s", "result": {"ok": true, "usd": 0.5}}', (SELECT min(id) FROM c))),
						 (format('{"custom_id": "%s", "error": "rate limited"}', (SELECT min(id) + 1 FROM c))),
						 ('this is not json'),
						 ('{"custom_id": "0", "result": 1}'),
						 (format('{"custom_id": "%s", "result": {"usd": "lots"}}', (SELECT min(id) + 2 FROM c)))) v(l)),
					   'usd') r
 ORDER BY r.id;
SELECT payload, status, result, reported_cost FROM hx_task
 WHERE task_type = 'ext_batch' ORDER BY id;

-- hx_complete_many: one statement, a stale token refused alone
-- (the failed tasks above, waiting for a retry, are out of the way)
SELECT count(hx_cancel(id)) FROM hx_task WHERE task_type = 'ext_batch' AND status = 'failed';
SELECT count(hx_submit('ext_batch', jsonb_build_object('n', g), origin => 'user'))
  FROM generate_series(5, 7) g;
TRUNCATE c;
INSERT INTO c SELECT * FROM hx_claim('regress', ARRAY['ext_batch'], route => 'stream', max => 10);
SELECT (SELECT payload FROM hx_task WHERE id = r.id), r.status
  FROM hx_complete_many((SELECT array_agg(id ORDER BY id) FROM c),
						(SELECT array_agg(CASE WHEN payload->>'n' = '6' THEN gen_random_uuid()
											   ELSE lease_token END ORDER BY id) FROM c),
						(SELECT array_agg(jsonb_build_object('m', payload->'n') ORDER BY id) FROM c),
						ARRAY[1.5]) r
 ORDER BY 1;
SELECT payload, status, result, reported_cost FROM hx_task
 WHERE task_type = 'ext_batch' AND (payload->>'n')::int >= 5 ORDER BY id;

-- a window run's tasks, claimed and reported by an external executor,
-- count in the run: processed and failed, once each, with the report
SELECT hx_register('ext_run');
INSERT INTO hx_window (name, schedule, max_duration) VALUES ('w_ext', '0 0 1 1 *', '5 minutes');
INSERT INTO hx_rule (name, position, task_type, route, window_name)
VALUES ('ext-run-batch', 0, 'ext_run', 'batch', 'w_ext');
SELECT count(hx_submit('ext_run', jsonb_build_object('n', g))) FROM generate_series(1, 6) g;
SELECT hx_run_window('w_ext') AS ext_run \gset
TRUNCATE c;
INSERT INTO c SELECT * FROM hx_claim('regress', ARRAY['ext_run'], 'batch', max => 10);
SELECT count(*) AS claimed, count(*) FILTER (WHERE run_id = :ext_run) AS in_the_run FROM c;
-- n1: hx_complete; n2, n3: hx_complete_many; n4 (a result) and n5 (an
-- error): hx_batch_report, as hx_worker --batch reports a batch file
SELECT hx_complete(id, lease_token, '{"ok": 1}') FROM c WHERE payload->>'n' = '1';
SELECT r.status
  FROM hx_complete_many((SELECT array_agg(id ORDER BY id) FROM c WHERE payload->>'n' IN ('2', '3')),
						(SELECT array_agg(lease_token ORDER BY id) FROM c WHERE payload->>'n' IN ('2', '3'))) r;
SELECT (SELECT payload FROM hx_task WHERE id = r.id), r.status, r.error
  FROM hx_batch_report((SELECT array_agg(id ORDER BY id) FROM c WHERE payload->>'n' IN ('4', '5')),
					   (SELECT array_agg(lease_token ORDER BY id) FROM c WHERE payload->>'n' IN ('4', '5')),
					   (SELECT string_agg(CASE WHEN payload->>'n' = '4'
											   THEN format('{"custom_id": "%s", "result": {"ok": 4}}', id)
											   ELSE format('{"custom_id": "%s", "error": "model refused"}', id) END,
										  E'\n')
						  FROM c WHERE payload->>'n' IN ('4', '5'))) r
 ORDER BY r.id;
-- n6: its lease expires and the reclaim books a failed attempt
BEGIN;
UPDATE hx_task t SET lease_expires_at = now() - interval '1 second'
  FROM c WHERE t.id = c.id AND c.payload->>'n' = '6';
SELECT hx_reclaim_leases() >= 1 AS reclaimed;
COMMIT;
-- a late or repeated report is refused and counts nothing
SELECT pg_temp.try(format('SELECT hx_complete(%s, %L, ''{}'')', id, lease_token)) FROM c WHERE payload->>'n' = '1';
SELECT r.status FROM c, hx_complete_many(ARRAY[c.id], ARRAY[c.lease_token]) r WHERE c.payload->>'n' = '2';
SELECT processed, failed FROM hx_window_run WHERE id = :ext_run;
SELECT status, count(*) FROM hx_task WHERE task_type = 'ext_run' GROUP BY status ORDER BY status;
-- the run ends once nothing is left for the executors; its history agrees
SELECT hx_wait_run(:ext_run, '1 minute') AS run_status;
SELECT processed, failed FROM hx_window_history WHERE run_id = :ext_run;
SELECT count(hx_cancel(id)) AS cancelled FROM hx_task WHERE task_type = 'ext_run' AND status = 'failed';
DELETE FROM hx_rule WHERE name = 'ext-run-batch';
DELETE FROM hx_window WHERE name = 'w_ext';

-- a provider's 429: retry_after says when, and the attempt does not count
-- against max_attempts (a type of one attempt is not dead); a real failure
-- after it is
SELECT hx_register('ext_429', max_attempts => 1);
SELECT hx_submit('ext_429', '{"n": 1}', origin => 'user') AS t429 \gset
CREATE TEMP TABLE c429 AS SELECT * FROM hx_claim('regress', ARRAY['ext_429']);
SELECT hx_fail(id, lease_token, 'HTTP 429 Too Many Requests', retry_after => '1 hour') FROM c429;
SELECT status, attempts, throttled, run_after - e.at AS retry_in
  FROM hx_task t JOIN hx_error e ON e.task_id = t.id WHERE t.id = :t429;
SELECT count(*) AS not_due_yet FROM hx_claim('regress', ARRAY['ext_429']);
UPDATE hx_task SET run_after = now() WHERE id = :t429;
TRUNCATE c429;
INSERT INTO c429 SELECT * FROM hx_claim('regress', ARRAY['ext_429']);
SELECT attempt, max_attempts FROM c429;
SELECT hx_fail(id, lease_token, 'invalid input') FROM c429;
SELECT status, attempts, throttled FROM hx_task WHERE id = :t429;
SELECT attempt, outcome FROM hx_cost WHERE task_id = :t429 ORDER BY attempt;
-- bad retry_after: an error, nothing changes
SELECT hx_submit('ext_429', '{"n": 2}', origin => 'user') AS t429b \gset
TRUNCATE c429;
INSERT INTO c429 SELECT * FROM hx_claim('regress', ARRAY['ext_429']);
SELECT hx_fail(id, lease_token, '429', retry_after => '-1 second') FROM c429;
SELECT hx_fail(id, lease_token, '429', retry_after => '2 days') FROM c429;
SELECT hx_fail(id, lease_token, '429', retry => false, retry_after => '1 minute') FROM c429;
SELECT status, attempts, throttled FROM hx_task WHERE id = :t429b;

-- a type's own backoff: 2 seconds, doubling, at most 3
SELECT hx_register('ext_backoff', max_attempts => 5, retry_backoff => '2 seconds', max_backoff => '3 seconds');
SELECT hx_submit('ext_backoff', '{"n": 1}', origin => 'user') AS tb \gset
TRUNCATE c429;
INSERT INTO c429 SELECT * FROM hx_claim('regress', ARRAY['ext_backoff']);
SELECT hx_fail(id, lease_token, 'overloaded') FROM c429;
SELECT e.attempt, t.run_after - e.at AS retry_in
  FROM hx_task t JOIN hx_error e ON e.task_id = t.id WHERE t.id = :tb;
UPDATE hx_task SET run_after = now() WHERE id = :tb RETURNING run_after IS NOT NULL AS moved;
SELECT max(e.at) AS first_at FROM hx_error e WHERE e.task_id = :tb \gset
TRUNCATE c429;
INSERT INTO c429 SELECT * FROM hx_claim('regress', ARRAY['ext_backoff']);
SELECT hx_fail(id, lease_token, 'overloaded') FROM c429;
SELECT e.attempt, t.run_after - e.at AS retry_in
  FROM hx_task t JOIN hx_error e ON e.task_id = t.id AND e.at > :'first_at' WHERE t.id = :tb;
SELECT hx_register('ext_backoff', retry_backoff => '2 hours');
SELECT hx_register('ext_backoff', retry_backoff => '1 second', clear => ARRAY['backoff']);
SELECT hx_register('ext_backoff', clear => ARRAY['backoff']);
SELECT retry_backoff, max_backoff FROM hx_type WHERE task_type = 'ext_backoff';
DELETE FROM hx_error WHERE task_type IN ('ext_429', 'ext_backoff');

-- the claim hands tasks over in claim order, higher priority first, then
-- the older, wherever their rows are in the table
SELECT hx_register('ext_order');
SELECT count(hx_submit('ext_order', jsonb_build_object('n', g), origin => 'user',
					   priority => CASE WHEN g = 3 THEN 5 ELSE 0 END))
  FROM generate_series(1, 4) g;
CREATE TEMP TABLE co AS SELECT * FROM hx_claim('regress', ARRAY['ext_order'], max => 10);
SELECT string_agg(payload->>'n', ',') AS claim_order FROM co;
SELECT count(hx_complete(id, lease_token, '{}')) FROM co;
DELETE FROM hx_task WHERE task_type IN ('ext_429', 'ext_backoff');
SELECT hx_unregister('ext_429');
SELECT hx_unregister('ext_backoff');

-- bad arguments
SELECT * FROM hx_claim(NULL);
SELECT * FROM hx_claim('');
SELECT * FROM hx_claim('x', max => 0);
SELECT * FROM hx_claim('x', max => 10001);
SELECT * FROM hx_claim('x', lease => '0');
SELECT * FROM hx_claim('x', lease => NULL);
SELECT * FROM hx_claim('x', route => 'later');
SELECT * FROM hx_claim('x', ARRAY['no-such-type', 'ext_sum']);
SELECT * FROM hx_claim('x', ARRAY['echo']);
SELECT hx_complete(NULL, NULL, '{}');
SELECT hx_complete(-1, gen_random_uuid(), '{}');
SELECT hx_fail(-1, gen_random_uuid(), 'x');
SELECT hx_heartbeat(NULL, NULL);
SELECT hx_heartbeat('{}', '{}', lease => '-1 second');

DELETE FROM hx_error WHERE task_type IN ('ext_sum', 'ext_batch', 'ext_run');
DELETE FROM hx_task WHERE task_type IN ('ext_sum', 'ext_batch', 'ext_run');
SELECT hx_unregister('ext_sum');
SELECT hx_unregister('ext_batch');
SELECT hx_unregister('ext_run');
