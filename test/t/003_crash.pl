# 003_crash.pl - crash safety of the stream path.  With a handler that
# writes a row keyed by its task, after
#   - kill -9 of a stream worker while handlers run,
#   - an immediate shutdown in the middle of a run, then a restart,
#   - SIGTERM (pg_terminate_backend) of a worker in the middle of a handler,
# every task is done and every key's effect exists exactly once: no task is
# lost and none runs twice.  A task whose attempt was interrupted is put
# back by the start-up sweep with the attempt counted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('crash', conf => ['restart_after_crash = on']);
HxTest::setup_keyed($node, max_attempts => 5);

# submit n tasks that each take a little while, in one transaction
sub submit_run
{
	my ($prefix, $n) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(hx_submit('keyed', jsonb_build_object('k', '$prefix' || g, 'sleep', 0.01),
							   origin => 'user'))
		  FROM generate_series(1, $n) g;
	});
	# wait until the run is under way: some done, some still to do
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done') >= 20 AND count(*) FILTER (WHERE status <> 'done') > 0 "
			  . "FROM hx_task WHERE payload->>'k' LIKE '$prefix%'"),
		"$prefix: the run is under way");
	return;
}

sub check_run
{
	my ($prefix, $n, $what) = @_;
	HxTest::wait_all_finished($node, $what);
	is( $node->safe_psql('postgres',
			"SELECT count(*) || '/' || count(DISTINCT k) FROM seen WHERE k LIKE '$prefix%'"),
		"$n/$n", "$what: every key's effect exactly once");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE payload->>'k' LIKE '$prefix%'"),
		"$n/$n", "$what: no task lost, all done");
	return;
}

# 1. kill -9 of a stream worker while handlers run
submit_run('k', 300);
my ($victim) = HxTest::worker_pids($node);
ok(kill('KILL', $victim), "killed stream worker $victim with SIGKILL");
check_run('k', 300, 'after SIGKILL of a worker');
ok(!grep({ $_ == $victim } HxTest::worker_pids($node)), 'the killed worker was replaced');

# 2. immediate shutdown in the middle of a run, then restart
submit_run('i', 300);
$node->stop('immediate');
$node->start;
check_run('i', 300, 'after an immediate shutdown and restart');

# 3. the sweep, deterministically: a task whose first attempt hangs, its
# claim made durable by a later synchronous commit, then the worker killed
my $id = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', '{"k": "swept", "sleep_first": 600}', origin => 'user')});
ok( $node->poll_query_until('postgres',
		"SELECT status = 'running' FROM hx_task WHERE id = $id"),
	'the hanging task is running');
$node->safe_psql('postgres', 'CREATE TABLE flush_wal (x int); INSERT INTO flush_wal VALUES (1)');
my $holder = $node->safe_psql('postgres', "SELECT worker_pid FROM hx_task WHERE id = $id");
ok(kill('KILL', $holder), "killed the worker $holder running it");
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'the interrupted task is done after the restart');
is($node->safe_psql('postgres', "SELECT attempts FROM hx_task WHERE id = $id"), '2',
	'its interrupted attempt was counted');
is( $node->safe_psql('postgres', "SELECT sqlstate || ' ' || (message LIKE 'worker % stopped while running attempt 1%') FROM hx_error WHERE task_id = $id"),
	'XX000 true', 'the sweep recorded the lost attempt');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'swept'"), '1',
	'the interrupted attempt left no effect, the retry one');
ok($node->log_contains(qr/put back 1 task\(s\) left running by a stopped worker/), 'the sweep is logged');

# 4. SIGTERM of a worker in the middle of a handler: a clean exit, no
# crash restart of the server; the task is put back and done once
$node->safe_psql('postgres', 'ALTER SEQUENCE first_run RESTART');
my @before = HxTest::worker_pids($node);
$id = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', '{"k": "termed", "sleep_first": 600}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'running' FROM hx_task WHERE id = $id"),
	'the hanging task is running again');
$holder = $node->safe_psql('postgres', "SELECT worker_pid FROM hx_task WHERE id = $id");
my ($other) = grep { $_ != $holder } @before;
my $log_offset = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($holder)"), 't', 'SIGTERM sent');
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'the task is done after the worker came back');
ok(grep({ $_ == $other } HxTest::worker_pids($node)), 'the other worker kept running: no crash restart');
ok(!$node->log_contains(qr/terminating any other active server processes/, $log_offset),
	'the server did not go through crash recovery');
ok($node->log_contains(qr/terminating background worker "hybridexec stream worker" due to administrator command/, $log_offset),
	'the worker stopped on SIGTERM');
is($node->safe_psql('postgres', "SELECT attempts || ' ' || (SELECT count(*) FROM seen WHERE k = 'termed') FROM hx_task WHERE id = $id"),
	'2 1', 'attempt counted, effect exactly once');

$node->stop;
done_testing();
