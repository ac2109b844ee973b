--
-- register: hx_register() and hx_unregister(), good and bad.
--
SELECT hx_register('echo', 'echo_handler(jsonb)', max_attempts => 2, timeout => '10 seconds');
SELECT hx_register('sleepy', 'sleepy_handler(jsonb)', max_attempts => 1, timeout => '200 ms');
SELECT hx_register('bulk', 'echo_handler(jsonb)', 'batch_ok(jsonb[])');
-- no handler: left to external executors
SELECT hx_register('external');
SELECT task_type, handler, batch_handler, max_attempts, timeout, run_as = current_user::regrole AS runs_as_me
  FROM hx_type ORDER BY task_type;

-- registering again changes the type in place
SELECT hx_register('external', max_attempts => 5, description => 'done by a program outside');
SELECT task_type, handler, max_attempts, description FROM hx_type WHERE task_type = 'external';

--
-- Re-registering changes only what is given (NULL = keep), says what
-- changed in a notice, and resets fields only when clear names them.
--
\set SHOW_CONTEXT never
SELECT hx_register('keeper', 'echo_handler(jsonb)', max_attempts => 2, timeout => '10 seconds',
				   description => 'kept');
-- a new timeout keeps the handler, the attempts and the description
SELECT hx_register('keeper', timeout => '30 seconds');
-- the same values again, or nothing at all: nothing changes
SELECT hx_register('keeper', 'echo_handler(jsonb)', max_attempts => 2);
SELECT hx_register('keeper');
SELECT task_type, handler, batch_handler, max_attempts, timeout, description,
	   micro_batch_size, micro_batch_wait FROM hx_type WHERE task_type = 'keeper';
-- a batch handler joins the handler; micro_batch_size alone keeps the wait
SELECT hx_register('keeper', batch_handler => 'batch_ok(jsonb[])', micro_batch_size => 8,
				   micro_batch_wait => '10 ms');
SELECT hx_register('keeper', micro_batch_size => 16);
-- clearing is explicit: the handler and the description go, the rest stays
SELECT hx_register('keeper', clear => ARRAY['handler', 'description']);
-- the batch handler cannot go while micro-batching needs it; with it, it can
SELECT hx_register('keeper', clear => ARRAY['batch_handler']);
SELECT hx_register('keeper', clear => ARRAY['batch_handler', 'micro_batch']);
SELECT task_type, handler, batch_handler, max_attempts, timeout, description,
	   micro_batch_size, micro_batch_wait FROM hx_type WHERE task_type = 'keeper';
-- a handler given back
SELECT hx_register('keeper', 'echo_handler(jsonb)');
-- what clear may name, and not together with a new value for the same field
SELECT hx_register('keeper', clear => ARRAY['timeout']);
SELECT hx_register('keeper', clear => ARRAY['handler', NULL, 'colour']);
SELECT hx_register('keeper', 'echo_handler(jsonb)', clear => ARRAY['handler']);
SELECT hx_register('keeper', micro_batch_size => 4, clear => ARRAY['micro_batch']);
SELECT task_type, handler, batch_handler, max_attempts, timeout, description
  FROM hx_type WHERE task_type = 'keeper';
-- a new type: whatever is not given takes its default; clearing is harmless
SELECT hx_register('fresh', description => 'new', clear => ARRAY['handler']);
SELECT task_type, handler, max_attempts, timeout, description FROM hx_type WHERE task_type = 'fresh';
-- a handler kept by a change must still exist
CREATE FUNCTION gone_handler(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT hx_register('ghost', 'gone_handler(jsonb)');
DROP FUNCTION gone_handler(jsonb);
SELECT hx_register('ghost', timeout => '5 seconds');
SELECT hx_register('ghost', clear => ARRAY['handler']);
SELECT task_type, handler FROM hx_type WHERE task_type = 'ghost';

--
-- Handlers are named with their argument types.  A name without them fails
-- in the cast to regprocedure, before hx_register runs; a signature that is
-- not a handler's gets a hint pointing at the right function or argument.
--
SELECT hx_register('w', 'wrongsig');
SELECT hx_register('w', 'echo_handler');
CREATE FUNCTION twin(p text) RETURNS text LANGUAGE sql AS $$ SELECT p $$;
CREATE FUNCTION twin(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT hx_register('w', 'twin(text)');
SELECT hx_register('w', 'batch_ok(jsonb[])');
SELECT hx_register('w', batch_handler => 'twin(jsonb)');
SELECT count(*) AS w_registered FROM hx_type WHERE task_type = 'w';
DROP FUNCTION twin(text);
DROP FUNCTION twin(jsonb);
SELECT hx_unregister('keeper'), hx_unregister('fresh'), hx_unregister('ghost');
\set SHOW_CONTEXT errors

-- bad registrations: nothing changes
SELECT hx_register(NULL, 'echo_handler(jsonb)');
SELECT hx_register('', 'echo_handler(jsonb)');
SELECT hx_register('x', 'no_such_handler(jsonb)');
SELECT hx_register('x', 'wrong_args(text)');
SELECT hx_register('x', 'wrong_result(jsonb)');
SELECT hx_register('x', 'set_result(jsonb)');
SELECT hx_register('x', 'two_args(jsonb,jsonb)');
SELECT hx_register('x', 'echo_handler(jsonb)', batch_handler => 'echo_handler(jsonb)');
SELECT hx_register('x', 'echo_handler(jsonb)', max_attempts => 0);
SELECT hx_register('x', 'echo_handler(jsonb)', timeout => '-1 second');
-- micro-batching needs a batch handler, both settings, and a sane size
SELECT hx_register('x', 'echo_handler(jsonb)', micro_batch_size => 8, micro_batch_wait => '10 ms');
SELECT hx_register('x', batch_handler => 'batch_ok(jsonb[])', micro_batch_size => 8);
SELECT hx_register('x', batch_handler => 'batch_ok(jsonb[])', micro_batch_size => 1, micro_batch_wait => '10 ms');
SELECT hx_register('x', batch_handler => 'batch_ok(jsonb[])', micro_batch_size => 8, micro_batch_wait => '-1 ms');
SELECT count(*) AS types_after_bad_registrations FROM hx_type;
-- a good one, and the columns it sets
SELECT hx_register('micro', batch_handler => 'batch_ok(jsonb[])', micro_batch_size => 8, micro_batch_wait => '10 ms');
SELECT task_type, handler, batch_handler, micro_batch_size, micro_batch_wait FROM hx_type WHERE task_type = 'micro';
SELECT hx_unregister('micro');

-- hx_unregister
SELECT hx_register('temporary', 'echo_handler(jsonb)');
SELECT hx_unregister('temporary');
SELECT hx_unregister('temporary');
SELECT count(*) AS temporary_left FROM hx_type WHERE task_type = 'temporary';

-- tiered results: refine_with names a registered type, never back into itself
SELECT hx_register('quick_answer', 'echo_handler(jsonb)');
SELECT hx_register('full_answer', 'echo_handler(jsonb)');
SELECT hx_register('quick_answer', refine_with => 'no_such_type');
SELECT hx_register('quick_answer', refine_with => 'full_answer');
SELECT hx_register('full_answer', refine_with => 'quick_answer');
SELECT hx_register('full_answer', refine_with => 'full_answer');
SELECT task_type, refine_with FROM hx_type WHERE task_type LIKE '%_answer' ORDER BY 1;
SELECT hx_unregister('full_answer');
SELECT hx_register('quick_answer', clear => ARRAY['refine_with']);
SELECT hx_unregister('full_answer');
SELECT hx_unregister('quick_answer');
