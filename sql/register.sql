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
