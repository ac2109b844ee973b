--
-- bad_input: every bad argument is an error with an errcode and a hint, and
-- nothing already queued changes.
--
\set VERBOSITY default
CREATE TEMP TABLE before AS
	SELECT id, status, attempts, payload, route, window_name FROM hx_task;

SELECT hx_submit(NULL);
SELECT hx_submit('no-such-type', '{}');
SELECT hx_submit('echo', NULL);
SELECT hx_submit('echo', '{}', sla => '-1 second');
SELECT hx_submit('echo', '{}', origin => NULL);
SELECT hx_submit('echo', '{}', priority => NULL);
SELECT hx_submit('echo', 'not json');
SET hybridexec.max_payload_size = '1kB';
SELECT hx_submit('echo', jsonb_build_object('text', repeat('x', 2000)));
RESET hybridexec.max_payload_size;
SELECT * FROM hx_classify('echo', at => NULL);
SELECT * FROM hx_classify('no-such-type');
SELECT * FROM hx_classify('echo', sla => '-1 hour');
SET hybridexec.stream_workers = 5;

-- text that becomes a key has a maximum; SLAs, deadlines and priorities
-- stay in ranges every sum of times the scheduler makes can hold
SELECT hx_submit(repeat('t', 201));
SELECT hx_submit('echo', '{}', department => repeat('d', 201));
SELECT hx_submit('echo', '{}', origin => repeat('o', 201));
SELECT hx_submit('echo', '{}', dedupe_key => repeat('k', 201));
SELECT hx_submit('echo', '{}', sla => '1000000 years');
SELECT hx_submit('echo', '{}', deadline => 'infinity');
SELECT hx_submit('echo', '{}', deadline => now() + interval '101 years');
SELECT hx_submit('echo', '{}', priority => 2000000000);
SELECT hx_submit_batch('echo', ARRAY['{}']::jsonb[], department => repeat('d', 300));
SELECT * FROM hx_classify('echo', sla => '1000000 years');
SELECT hx_register(repeat('t', 201));
SELECT * FROM hx_claim(repeat('e', 201));
SELECT * FROM hx_claim('x', lease => '8 days');
SELECT hx_register('x', 'echo_handler(jsonb)', timeout => '2 days');
INSERT INTO hx_window (name, schedule, margin) VALUES ('w_margin', '0 2 * * *', '2 days');
INSERT INTO hx_window (name, schedule) VALUES (repeat('w', 201), '0 2 * * *');
INSERT INTO hx_rule (name, position, route) VALUES (repeat('r', 201), 1, 'stream');
INSERT INTO hx_rule (name, position, max_sla, route) VALUES ('r_far', 1, '1000 years', 'stream');
INSERT INTO hx_budget (department, period, amount) VALUES (repeat('d', 201), 'day', 1);
-- 200 characters is fine (and classifies like any other)
SELECT route FROM hx_classify('echo', department => repeat('d', 200), origin => repeat('o', 200));

-- the SQLSTATE of each error, so clients can tell them apart
CREATE FUNCTION pg_temp.sqlstate_of(stmt text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
	EXECUTE stmt;
	RETURN 'no error';
EXCEPTION WHEN others THEN
	RETURN SQLSTATE;
END
$$;
SELECT stmt, pg_temp.sqlstate_of(stmt) FROM (VALUES
	('SELECT hx_submit(NULL)'),
	('SELECT hx_submit(''no-such-type'')'),
	('SELECT hx_submit(''echo'', NULL)'),
	('SELECT hx_submit(''echo'', ''{}'', sla => ''-1 second'')'),
	('SELECT hx_submit(''echo'', ''{}'', origin => NULL)'),
	('SELECT hx_submit(''echo'', ''{}'', priority => NULL)'),
	('SELECT hx_submit(''echo'', jsonb_build_object(''t'', repeat(''x'', 2000000)))'),
	('SELECT hx_register(''x'', ''wrong_args(text)'')'),
	('SELECT hx_cancel(-1)'),
	('SELECT hx_submit(''echo'', ''{}'', department => repeat(''d'', 201))'),
	('SELECT hx_submit(''echo'', ''{}'', sla => ''1000000 years'')'),
	('SELECT hx_submit(''echo'', ''{}'', deadline => ''infinity'')'),
	('INSERT INTO hx_rule (name, position, route) VALUES (''r'', 1, ''sometimes'')'),
	('SELECT hx_quality(NULL, ''thumbs_up'', 1)'),
	('SELECT hx_quality(1, ''thumbs_up'', ''NaN'')'),
	('SELECT hx_quality(-1, ''thumbs_up'', 1)'),
	('SELECT hx_precompute(''echo'', ''{}'', NULL, now() + interval ''1 day'')'),
	('SELECT hx_precompute(''echo'', ''{}'', ''k'', now() - interval ''1 day'')'),
	('SELECT hx_precompute(''echo'', ''{}'', ''k'', now() + interval ''1 day'', ttl => ''0 seconds'')'),
	('SELECT hx_predict(''0 days'')'),
	('SELECT hx_predict(''28 days'', 1)'),
	('SELECT hx_result(NULL)'),
	('SELECT hx_result(-1)'),
	('SELECT hx_replay(''echo'', now(), now(), ''echo'')'),
	('SELECT hx_precompute_stats(now(), now() - interval ''1 day'')'),
	('SELECT hx_fixed_costs(now(), now() - interval ''1 day'')')
) AS t(stmt);

-- nothing changed
SELECT count(*) AS changed_or_lost
  FROM (SELECT * FROM before EXCEPT SELECT id, status, attempts, payload, route, window_name FROM hx_task) x;
SELECT (SELECT count(*) FROM hx_task) - (SELECT count(*) FROM before) AS new_rows;
