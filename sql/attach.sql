--
-- attach: watched tables by hand: rows become tasks (filter, chosen
-- columns, updates), results are written back, hx_backfill resumes by
-- primary key, hx_detach and DROP TABLE clean up, bad arguments are errors
-- with an errcode and a hint.
--
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT hx_register('ext_ticket');
CREATE TABLE tickets (id int PRIMARY KEY, subject text, priority text, summary text, seen int DEFAULT 0);
INSERT INTO tickets (id, subject, priority) VALUES (1, 'old one', 'low'), (2, 'older', 'low'), (3, 'skip me', 'spam');

SELECT hx_attach('tickets', 'ext_ticket', columns => '{id,subject,priority}', on_update => true,
				 filter => $$priority <> 'spam'$$, result_column => 'summary', origin => 'user');
SELECT source, task_type, columns, on_update, filter, result_column, key_columns
  FROM hx_attachment;

-- inserted rows become tasks (not the filtered one), remembering their key
INSERT INTO tickets (id, subject, priority) VALUES (10, 'printer on fire', 'urgent'), (11, 'spam!', 'spam');
SELECT t.payload, t.origin, s.source, s.source_key
  FROM hx_task t JOIN hx_task_source s ON s.task_id = t.id ORDER BY t.id;

-- an update of a payload column is a new task, of any other column not
UPDATE tickets SET seen = seen + 1 WHERE id = 10;
SELECT count(*) FROM hx_task WHERE task_type = 'ext_ticket';
UPDATE tickets SET subject = 'printer still on fire' WHERE id = 10;
SELECT count(*) FROM hx_task WHERE task_type = 'ext_ticket';

-- backfill: a chunk at a time, in key order, skipping rows with a task
SELECT hx_backfill('tickets', chunk => 2);
SELECT backfill_after, backfill_done FROM hx_attachment;
SELECT hx_backfill('tickets', chunk => 2);
SELECT hx_backfill('tickets', chunk => 2);
SELECT hx_backfill('tickets', chunk => 2);
SELECT backfill_after, backfill_done FROM hx_attachment;
SELECT t.payload->>'id' AS row_id, t.origin FROM hx_task t WHERE t.task_type = 'ext_ticket' ORDER BY t.id;

-- a done task writes its result into its row, in the same transaction
-- (the rows inserted since hx_attach stream: origin user)
BEGIN;
SELECT count(hx_complete(c.id, c.lease_token, to_jsonb('summary of ' || (c.payload->>'subject'))))
  FROM hx_claim('regress', ARRAY['ext_ticket'], max => 100) c;
SELECT id, subject, summary FROM tickets ORDER BY id;
ROLLBACK;
SELECT id, summary FROM tickets WHERE summary IS NOT NULL;
-- a row that cannot take the result: a warning, the completion stands
BEGIN;
ALTER TABLE tickets RENAME summary TO summary_v2;
\set VERBOSITY terse
SELECT count(hx_complete(c.id, c.lease_token, '"s"'))
  FROM hx_claim('regress', ARRAY['ext_ticket'], max => 1) c;
\set VERBOSITY default
SELECT status, count(*) FROM hx_task WHERE task_type = 'ext_ticket' GROUP BY 1 ORDER BY 1;
ROLLBACK;

-- errors
SELECT hx_attach('tickets', 'ext_ticket');
SELECT hx_attach(NULL, 'ext_ticket');
CREATE TABLE nokey (a int);
SELECT hx_attach('nokey', 'ext_ticket');
CREATE TABLE keyed (id int PRIMARY KEY, body text, out jsonb);
CREATE VIEW keyed_view AS SELECT * FROM keyed;
SELECT hx_attach('keyed_view', 'ext_ticket');
SELECT hx_attach('keyed', 'no-such-type');
-- what the rows would be submitted with passes hx_submit's checks
SELECT hx_attach('keyed', 'ext_ticket', origin => repeat('o', 201));
SELECT hx_attach('keyed', 'ext_ticket', sla => '-1 second');
SELECT hx_attach('keyed', 'ext_ticket', sla => '101 years');
SELECT hx_attach('keyed', 'ext_ticket', columns => '{body,nope}');
SELECT hx_attach('keyed', 'ext_ticket', result_column => 'missing');
SELECT hx_attach('keyed', 'ext_ticket', result_column => 'id');
SELECT hx_attach('keyed', 'ext_ticket', columns => '{body}', result_column => 'body');
SELECT hx_attach('keyed', 'ext_ticket', filter => 'nope > 1');
SELECT hx_attach('keyed', 'ext_ticket', filter => 'body = ');
-- a filter is one expression: it cannot close a parenthesis and go on,
-- list two expressions or bring clauses of its own
SELECT hx_attach('keyed', 'ext_ticket', filter => $$true) UNION SELECT 1 FROM pg_authid WHERE (true$$);
SELECT hx_attach('keyed', 'ext_ticket', filter => 'true, false');
SELECT hx_attach('keyed', 'ext_ticket', filter => 'true FROM pg_class');
SELECT hx_attach('keyed', 'ext_ticket', filter => 'true; DROP TABLE keyed');
-- and it is checked, not run, when the table is attached
CREATE TABLE filter_calls (at timestamptz DEFAULT now());
CREATE FUNCTION filter_spy(b text) RETURNS boolean LANGUAGE sql VOLATILE
	AS $$ INSERT INTO public.filter_calls DEFAULT VALUES RETURNING true $$;
SELECT hx_attach('keyed', 'ext_ticket', filter => 'public.filter_spy(body) AND id > 0');
SELECT count(*) AS filter_calls_at_attach FROM filter_calls;
-- it runs once per row, as the table's owner with search_path pg_catalog:
-- unqualified functions of other schemas are not found
INSERT INTO keyed (id, body) VALUES (1, 'one');
SELECT count(*) AS filter_calls_after_insert FROM filter_calls;
SELECT hx_detach('keyed');
SELECT hx_attach('keyed', 'ext_ticket', filter => 'filter_spy(body)');
DELETE FROM keyed;
DROP FUNCTION filter_spy(text);
DROP TABLE filter_calls;
SELECT hx_detach('keyed');
SELECT hx_backfill('keyed');
SELECT hx_backfill('tickets', chunk => 0);
SELECT hx_attach('no_such_table', 'ext_ticket');

-- the write-back trigger on hx_task exists only while it is needed
SELECT hx_attach('keyed', 'ext_ticket', result_column => 'out');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'hx_task'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT hx_detach('keyed');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'keyed'::regclass;
-- a dropped table takes its attachment along
DROP TABLE tickets;
SELECT count(*) AS attachments FROM hx_attachment;
SELECT count(*) AS sources FROM hx_task_source;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'hx_task'::regclass AND NOT tgisinternal ORDER BY 1;

-- any role may still drop its own tables (the event trigger needs no rights)
CREATE ROLE regress_hx_app;
CREATE SCHEMA regress_hx_app AUTHORIZATION regress_hx_app;
SET ROLE regress_hx_app;
CREATE TABLE regress_hx_app.own (id int PRIMARY KEY);
DROP TABLE regress_hx_app.own;
RESET ROLE;
DROP SCHEMA regress_hx_app;
DROP ROLE regress_hx_app;

DROP VIEW keyed_view;
DROP TABLE keyed, nokey;
DELETE FROM hx_task WHERE task_type = 'ext_ticket';
SELECT hx_unregister('ext_ticket');
