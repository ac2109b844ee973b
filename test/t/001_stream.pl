# 001_stream.pl - the stream path with real background workers: workers
# show up in pg_stat_activity, urgent tasks run at once and exactly once,
# batch tasks wait, NOTIFY hx_stream is sent once per transaction (and not
# when switched off), and workers pick up a CREATE EXTENSION done after
# they started.
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

is( $node->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker' AND datname = 'postgres'"),
	'2', 'two stream workers in pg_stat_activity, connected to hybridexec.database_name');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_workers() WHERE pid IS NOT NULL"),
	'2', 'hx_workers() shows both');

# one urgent task
my $id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "one"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'an urgent task is done');
is($node->safe_psql('postgres', "SELECT result->>'k' || ' ' || attempts || ' ' || route FROM hx_task WHERE id = $id"),
	'one 1 stream', 'with its result, on the first attempt, on the stream route');

# many urgent tasks in one transaction, plus batch tasks that must wait
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'm' || g), origin => 'user')) FROM generate_series(1, 500) g;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'b' || g))) FROM generate_series(1, 5) g;
	COMMIT;
});
HxTest::wait_all_finished($node, '500 tasks');
is( $node->safe_psql('postgres', "SELECT count(*) || '/' || count(DISTINCT k) FROM seen WHERE k LIKE 'm%'"),
	'500/500', 'each of 500 tasks ran exactly once');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT status || ':' || route || ':' || window_name || ':' || attempts, ',') FROM hx_task WHERE payload->>'k' LIKE 'b%'"),
	'queued:batch:nightly:0', 'batch-routed tasks wait for their window, untouched');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k LIKE 'b%'"), '0', 'no batch task ran');
is($node->safe_psql('postgres', "SELECT sum(tasks_done) >= 501 FROM hx_workers()"), 't',
	'the workers counted what they did');

# a worker running a long handler reports it
$id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "slow", "sleep": 3}', origin => 'user')});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker' "
		  . "AND state = 'active' AND query LIKE 'hybridexec: task $id (keyed), attempt 1'"),
	'pg_stat_activity shows the task a worker is running');
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'the long task finishes');

# NOTIFY hx_stream: one per transaction, none when switched off
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_stream');
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'n' || g), origin => 'user')) FROM generate_series(1, 20) g;
	COMMIT;
});
$node->safe_psql('postgres', q{
	SET hybridexec.notify = off;
	SELECT hx_submit('keyed', '{"k": "silent"}', origin => 'user');
});
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "last"}', origin => 'user')});

# notifications arrive in commit order: once the third transaction's has
# arrived, all that were sent are here
my $seen_out = '';
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline)
{
	$seen_out .= $listener->query_safe('SELECT 1');
	my $count = () = $seen_out =~ /Asynchronous notification "hx_stream"/g;
	last if $count >= 2;
}
my $count = () = $seen_out =~ /Asynchronous notification "hx_stream"/g;
is($count, 2, 'one NOTIFY hx_stream per transaction, none with hybridexec.notify off');
$listener->quit;
HxTest::wait_all_finished($node, 'notified tasks');

# the timed poll is the safety net: a stream task inserted with the wake-up
# trigger disabled (so no latch is set at commit) still runs
$node->safe_psql('postgres', q{
	ALTER TABLE hx_task DISABLE TRIGGER hx_task_wake;
	INSERT INTO hx_task (task_type, payload, route, rule_name, origin)
	VALUES ('keyed', '{"k": "polled"}', 'stream', 'by hand', 'user');
	ALTER TABLE hx_task ENABLE TRIGGER hx_task_wake;
});
ok($node->poll_query_until('postgres', "SELECT count(*) = 1 FROM seen WHERE k = 'polled'"),
	'a task nobody woke a worker for is found by the timed poll');

# workers wait for the extension to be created
my $late = HxTest::new_node('late', extension => 0);
is( $late->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'"),
	'2', 'workers run before the extension exists');
$late->safe_psql('postgres', 'CREATE EXTENSION hybridexec');
HxTest::setup_keyed($late);
$id = $late->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "late"}', origin => 'user')});
ok($late->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'a task submitted after CREATE EXTENSION runs');

$late->stop;
$node->stop;
done_testing();
