# 001_stream.pl - the stream path with real background workers.
#
# Proves that: the configured number of stream workers run, visible in
# pg_stat_activity and hx_workers(); an urgent task runs at once with its
# result; 500 tasks queued by one transaction all run, each exactly once,
# and move, done, out of the queue into hx_task_history, each booked once;
# batch-routed tasks are left queued; a worker running a handler shows the
# task in pg_stat_activity; NOTIFY hx_stream is sent once per transaction
# that queues stream tasks, however many, and not at all with
# hybridexec.notify off; a task no worker was woken for is found by the
# timed poll; on a server started before CREATE EXTENSION, the workers
# start with it and run tasks; slow tasks are claimed a few at a time, so both workers share
# them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('stream');
HxTest::setup_keyed($node);

# --- the workers -----------------------------------------------------------
ok(HxTest::wait_workers($node, 2), 'two stream workers in pg_stat_activity');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker' AND datname = 'postgres'"),
	'2', 'connected to hybridexec.database_name');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 2 AND count(DISTINCT w.pid) = 2
		  FROM hx_workers() w
		  JOIN pg_stat_activity a ON a.pid = w.pid AND a.backend_type = 'hybridexec stream worker'
		 WHERE w.kind = 'stream' AND w.state IN ('idle', 'busy')}),
	'hx_workers() shows both, with the pids of pg_stat_activity');

# --- one urgent task ---------------------------------------------------------
my $id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "one"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'an urgent task is done');
is( $node->safe_psql('postgres',
		"SELECT result::text || ' ' || attempts || ' ' || route || ' ' || (finished_at IS NOT NULL) FROM hx_task WHERE id = $id"),
	'{"k": "one"} 1 stream true', 'with its result, on the first attempt, on the stream route');
is($node->safe_psql('postgres', "SELECT count(*) || ' ' || min(task_id) FROM seen WHERE k = 'one'"),
	"1 $id", 'its handler ran once, for that task');

# --- 500 urgent tasks in one transaction, plus batch tasks that must wait ----
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'many-' || g), origin => 'user'))
	  FROM generate_series(1, 500) g;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'later-' || g)))
	  FROM generate_series(1, 5) g;
	COMMIT;
});
HxTest::wait_finished($node, 'many-', '500 tasks');
HxTest::check_exactly_once($node, 'many-', 500, '500 tasks in one transaction');
is($node->safe_psql('postgres', "SELECT max(attempts) FROM hx_task WHERE payload->>'k' LIKE 'many-%'"),
	'1', 'none needed a second attempt');
# done, they left the queue's own heap for hx_task_history, each booked once
is( $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM ONLY hx_task WHERE payload->>'k' LIKE 'many-%') || ' ' ||
			   (SELECT count(DISTINCT id) || '/' || count(*) FROM hx_task_history
				 WHERE payload->>'k' LIKE 'many-%' AND status = 'done')}),
	'0 500/500', 'done stream tasks moved out of the queue, each once');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT c.task_id) || ' ' ||
			   count(*) FILTER (WHERE c.route = 'stream' AND c.outcome = 'done' AND c.attempt = 1
								AND c.at = h.finished_at AND c.executor IS NULL AND c.wall_seconds > 0)
		  FROM hx_cost c JOIN hx_task_history h ON h.id = c.task_id
		 WHERE h.payload->>'k' LIKE 'many-%'}),
	'500 500 500', 'each booked once, as the stream attempt it was, at its finish');

# the batch tasks were committed with the 500, so the workers have had every
# chance to (wrongly) take them by now
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT status || ':' || route || ':' || window_name || ':' || attempts || ':' || coalesce(worker_pid::text, '-'), ',') "
		  . "FROM hx_task WHERE payload->>'k' LIKE 'later-%'"),
	'queued:batch:nightly:0:-', 'batch-routed tasks stay queued for their window, untouched');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k LIKE 'later-%'"), '0',
	'no batch-routed task ran');
is($node->safe_psql('postgres', "SELECT sum(tasks_done) >= 501 FROM hx_workers()"), 't',
	'hx_workers() counted the tasks done');

# --- slow tasks are claimed a few at a time ---------------------------------
# a worker claims about 10 ms of the run time it measured (one task before
# it has measured): ten 50 ms tasks queued together, right after the
# workers start, are shared between them (a fixed claim of 64 gave all ten
# to whichever worker woke first)
$node->restart;
ok(HxTest::wait_workers($node, 2), 'two fresh stream workers');
$node->safe_psql('postgres', q{
	SELECT hx_submit('keyed', jsonb_build_object('k', 'slow-' || i, 'sleep', 0.05), origin => 'user')
	  FROM generate_series(1, 10) i});
HxTest::wait_finished($node, 'slow-', '10 slow tasks');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE n >= 2) FROM (SELECT worker, count(*) n FROM seen WHERE k LIKE 'slow-%' GROUP BY worker) w}),
	'2', 'ten slow tasks queued together ran on both workers, at least two each');
HxTest::check_exactly_once($node, 'slow-', 10, '10 slow tasks');

# --- pg_stat_activity shows the task a worker is running -------------------
# the handler waits for an advisory lock the test holds, so it is surely
# running while we look
my $gate = HxTest::hold_gate($node, 1001);
$id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "slow", "gate": 1001}', origin => 'user')});
my $pid = HxTest::wait_at_gate($node, $id);
ok(defined $pid, 'a worker is running the gated task');
is( $node->safe_psql('postgres',
		"SELECT state || ' | ' || query FROM pg_stat_activity WHERE pid = $pid"),
	"active | hybridexec: task $id (keyed), attempt 1",
	'pg_stat_activity shows the task, its type and attempt');
is($node->safe_psql('postgres', "SELECT status || ' ' || worker_pid FROM hx_task WHERE id = $id"),
	"running $pid", 'the task is running for that worker');
is($node->safe_psql('postgres', "SELECT state FROM hx_workers() WHERE pid = $pid"), 'busy',
	'hx_workers() shows that worker busy');
HxTest::release_gate($gate, 1001);
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'the task finishes once released');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker' AND query LIKE 'hybridexec: task $id %' AND state = 'active'"),
	'and the worker no longer shows it as active');

# --- NOTIFY hx_stream --------------------------------------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_stream; LISTEN hx_test_sentinel;');

sub count_stream
{
	my ($tag) = @_;
	my @got = HxTest::notifications($node, $listener, $tag);
	return scalar grep { $_->[0] eq 'hx_stream' } @got;
}

is(count_stream('start'), 0, 'no hx_stream notification before any submit');

$node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'notify-a' || g), origin => 'user'))
	  FROM generate_series(1, 50) g;
	SELECT hx_submit('keyed', '{"k": "notify-a-single"}', origin => 'user');
	SELECT count(*) FROM hx_submit_batch('keyed',
		(SELECT array_agg(jsonb_build_object('k', 'notify-a-batch' || g)) FROM generate_series(1, 10) g),
		origin => 'user');
	COMMIT;
});
is(count_stream('one-xact'), 1, 'one transaction queuing 61 stream tasks: exactly one notification');

$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "notify-b1"}', origin => 'user')});
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "notify-b2"}', origin => 'user')});
is(count_stream('two-xacts'), 2, 'two transactions: two notifications');

# a submit rolled back with its savepoint takes its notification along; the
# next submit of the transaction must send one again
$node->safe_psql('postgres', q{
	BEGIN;
	SAVEPOINT s;
	SELECT hx_submit('keyed', '{"k": "notify-rolled-back"}', origin => 'user');
	ROLLBACK TO SAVEPOINT s;
	SELECT hx_submit('keyed', '{"k": "notify-c"}', origin => 'user');
	COMMIT;
});
is(count_stream('savepoint'), 1, 'a rolled-back savepoint does not swallow the notification of a later submit');

$node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', '{"k": "notify-d"}');
	COMMIT;
});
is(count_stream('batch-only'), 0, 'a transaction queuing only batch-routed tasks: no notification');

$node->safe_psql('postgres', q{
	SET hybridexec.notify = off;
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'notify-off' || g), origin => 'user'))
	  FROM generate_series(1, 5) g;
	COMMIT;
	SELECT hx_submit('keyed', '{"k": "notify-off-single"}', origin => 'user');
});
is(count_stream('notify-off'), 0, 'hybridexec.notify = off: no notification');

$node->safe_psql('postgres', q{
	ALTER SYSTEM SET hybridexec.notify = off;
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres', 'SHOW hybridexec.notify', 'off'),
	'hybridexec.notify = off in postgresql.auto.conf, reloaded');
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "notify-off-system"}', origin => 'user')});
is(count_stream('notify-off-system'), 0, 'hybridexec.notify off server-wide: no notification');
$node->safe_psql('postgres', q{
	ALTER SYSTEM RESET hybridexec.notify;
	SELECT pg_reload_conf();
});
ok($node->poll_query_until('postgres', 'SHOW hybridexec.notify', 'on'), 'hybridexec.notify back on');
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "notify-on-again"}', origin => 'user')});
is(count_stream('notify-on-again'), 1, 'and notifications are back');
$listener->quit;

# the notifications are only a signal: every notified (or not) task ran
HxTest::wait_finished($node, 'notify-', 'notification tasks');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE payload->>'k' LIKE 'notify-%' AND route = 'stream'"),
	'72/72', 'all stream tasks of the notification tests are done');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE payload->>'k' = 'notify-rolled-back'"),
	'0', 'the rolled-back submit queued nothing');

# --- the timed poll is the safety net ----------------------------------------
# a stream task inserted with the wake-up trigger disabled (so no latch is
# set at commit) still runs
$node->safe_psql('postgres', q{
	ALTER TABLE hx_task DISABLE TRIGGER hx_task_wake;
	INSERT INTO hx_task (task_type, payload, route, rule_name, origin)
	VALUES ('keyed', '{"k": "polled"}', 'stream', 'by hand', 'user');
	ALTER TABLE hx_task ENABLE TRIGGER hx_task_wake;
});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE payload->>'k' = 'polled'"),
	'a task no worker was woken for is found by the timed poll');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'polled'"), '1', 'and ran once');

# --- a server started before the extension exists: CREATE EXTENSION starts
# the workers, without a restart --------------------------------------------
my $late = HxTest::new_node('late', create_extension => 0);
ok( $late->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'hybridexec launcher'"),
	'the launcher runs before the extension exists');
ok($late->wait_for_log(qr/extension hybridexec \S+ is not in database "postgres"/),
	'its scheduler looked in postgres, found no extension and left');
ok( $late->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type IN ('hybridexec stream worker', 'hybridexec scheduler')"),
	'no stream worker or scheduler stays without the extension');
$late->safe_psql('postgres', 'CREATE EXTENSION hybridexec');
ok(HxTest::wait_workers($late, 2), 'CREATE EXTENSION: the two stream workers start');
HxTest::setup_keyed($late);
$id = $late->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "late"}', origin => 'user')});
ok($late->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'a task submitted after CREATE EXTENSION runs');
HxTest::check_exactly_once($late, 'late', 1, 'late extension');

$late->stop;
$node->stop;
done_testing();
