# 003_crash.pl - crash safety of the stream path.
#
# With a handler that writes a row per task (table seen) and sleeps a
# little, while a few hundred tasks run:
#   1. kill -9 of a stream worker in the middle of a handler: the postmaster
#      reinitialises, the workers come back;
#   2. an immediate shutdown, then a restart;
#   3. SIGTERM (pg_terminate_backend) of a worker in the middle of a
#      handler: that worker exits cleanly (no crash restart, the other
#      worker keeps running) and a new one takes its place;
# and after each: every task is done, every key's effect exists exactly once
# (written by the task's last attempt), and the start-up sweep put the
# interrupted tasks back in the queue with their attempt counted and an
# hx_error row (XX000) naming the worker that was stopped, as the server
# log says.
#
# To know for sure that a handler is running when the worker is stopped,
# one task of each run waits for an advisory lock the test holds ("gate").
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

# the test framework turns restart_after_crash off; the workers' crash
# recovery is what we test
my $node = HxTest::new_node('crash', restart_after_crash => 'on');
HxTest::setup_keyed($node, max_attempts => 5);
$node->safe_psql('postgres', 'CREATE TABLE flush_wal (x int)');
ok(HxTest::wait_workers($node, 2), 'two stream workers');

# start_run(prefix, n, gate): queues, in one transaction, a gated task (the
# first to be claimed) and n tasks that each sleep 20 ms; returns once the
# gated task's handler is running and the run is under way (some tasks
# done, some not).  Returns the gate session, the gated task's id and the
# pid of the worker running it.
sub start_run
{
	my ($prefix, $n, $gate) = @_;
	my $holder = HxTest::hold_gate($node, $gate);
	my $gate_id = $node->safe_psql('postgres', qq{
		BEGIN;
		SELECT hx_submit('keyed', jsonb_build_object('k', '$prefix-gate', 'gate', $gate),
						 origin => 'user', priority => 1);
		SELECT count(hx_submit('keyed', jsonb_build_object('k', '$prefix-' || g, 'sleep', 0.02),
							   origin => 'user'))
		  FROM generate_series(1, $n) g \\g /dev/null
		COMMIT;
	});
	my $pid = HxTest::wait_at_gate($node, $gate_id);
	ok(defined $pid, "$prefix: the gated task's handler is running");
	ok( $node->poll_query_until('postgres', qq{
			SELECT count(*) FILTER (WHERE status = 'done') >= 20
			   AND count(*) FILTER (WHERE status = 'running') > 0
			   AND count(*) FILTER (WHERE status <> 'done') > 20
			  FROM hx_task WHERE payload->>'k' LIKE '$prefix-%'}),
		"$prefix: the run is under way, some tasks done, some running");

	# The claim that marked the tasks running is committed asynchronously
	# (by design: lost, the tasks are simply still queued).  Flush the WAL
	# with a synchronous commit, so the claims we saw survive the crash and
	# the sweep has something to put back.
	$node->safe_psql('postgres', 'INSERT INTO flush_wal VALUES (1)');
	return ($holder, $gate_id, $pid);
}

# check_run(prefix, n, what, gate_id, stopped_pid): after the workers came
# back, everything ran exactly once and the sweep put the interrupted tasks
# back.
sub check_run
{
	my ($prefix, $n, $what, $gate_id, $stopped) = @_;

	HxTest::wait_finished($node, "$prefix-", $what);
	HxTest::check_exactly_once($node, "$prefix-", $n + 1, $what);
	ok( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM hx_error e JOIN hx_task t ON t.id = e.task_id
			 WHERE t.payload->>'k' LIKE '$prefix-%' AND e.sqlstate = 'XX000'}) >= 1,
		"$what: the sweep put back at least one task (hx_error XX000)");
	is( $node->safe_psql('postgres',
			"SELECT attempts FROM hx_task WHERE id = $gate_id"),
		'2', "$what: the interrupted attempt of the gated task stayed counted");
	is( $node->safe_psql('postgres',
			"SELECT string_agg(attempt || ':' || sqlstate || ':' || message, ',') FROM hx_error WHERE task_id = $gate_id"),
		"1:XX000:worker $stopped stopped while running attempt 1 (crash or shutdown)",
		"$what: its lost attempt is in hx_error, naming the stopped worker");
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM hx_task t
			 WHERE t.payload->>'k' LIKE '$prefix-%'
			   AND t.attempts <> 1 + (SELECT count(*) FROM hx_error e WHERE e.task_id = t.id)}),
		'0', "$what: every task's attempts = 1 + its lost attempts");
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM hx_error e JOIN hx_task t ON t.id = e.task_id
			 WHERE t.payload->>'k' LIKE '$prefix-%'
			   AND (e.sqlstate <> 'XX000' OR e.hint <> 'The attempt was rolled back with its worker; its effects did not happen.')}),
		'0', "$what: no other kind of failure");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FROM seen s JOIN hx_error e ON e.task_id = s.task_id AND e.attempt = s.attempt"),
		'0', "$what: no effect of a lost attempt survived");
	return;
}

# --- 1. kill -9 of a stream worker while handlers run -----------------------
my @before = HxTest::worker_pids($node);
my ($holder, $gate_id, $victim) = start_run('kill', 300, 3001);
my $offset = -s $node->logfile;
ok(kill('KILL', $victim), "kill -9 of stream worker $victim");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
ok(HxTest::wait_workers($node, 2), 'after the crash restart, two stream workers again');
$holder->quit;    # its backend went down with the crash
check_run('kill', 300, 'after kill -9 of a worker', $gate_id, $victim);
ok($node->log_contains(qr/\(PID $victim\) was terminated by signal 9/, $offset),
	'the log shows the worker killed');
ok($node->log_contains(qr/all server processes terminated; reinitializing/, $offset),
	'the postmaster reinitialised (crash restart)');
ok($node->log_contains(qr/put back \d+ task\(s\) left running by a stopped worker/, $offset),
	'the log shows the sweep putting tasks back');
my @after = HxTest::worker_pids($node);
is(scalar(grep { my $p = $_; grep { $_ == $p } @before } @after), 0,
	'both workers are new processes');

# --- 2. immediate shutdown in the middle of a run, then restart --------------
($holder, $gate_id, $victim) = start_run('imm', 300, 3002);
$offset = -s $node->logfile;
$node->stop('immediate');
$holder->quit;
$node->start;
ok(HxTest::wait_workers($node, 2), 'after the restart, two stream workers');
check_run('imm', 300, 'after an immediate shutdown', $gate_id, $victim);
ok($node->log_contains(qr/put back \d+ task\(s\) left running by a stopped worker/, $offset),
	'the log shows the sweep putting tasks back');

# --- 3. SIGTERM of a worker in the middle of a handler -----------------------
($holder, $gate_id, $victim) = start_run('term', 100, 3003);
my ($other) = grep { $_ != $victim } HxTest::worker_pids($node);
ok(defined $other, "the other worker is $other");
$offset = -s $node->logfile;
is($node->safe_psql('postgres', "SELECT pg_terminate_backend($victim)"), 't',
	"pg_terminate_backend($victim)");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $victim"),
	'the terminated worker is gone');
HxTest::release_gate($holder, 3003);
{
	# a stopped worker is restarted 5 s after it exited
	local $PostgreSQL::Test::Utils::timeout_default = 30;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 2 AND bool_and(pid <> $victim) FROM pg_stat_activity "
			  . "WHERE backend_type = 'hybridexec stream worker'"),
		'a new worker took its place within 30 s');
}
ok(grep({ $_ == $other } HxTest::worker_pids($node)),
	'the other worker kept running: no crash restart');
check_run('term', 100, 'after SIGTERM of a worker', $gate_id, $victim);
ok($node->log_contains(qr/terminating background worker "hybridexec stream worker" due to administrator command/, $offset),
	'the worker stopped on SIGTERM');
ok($node->log_contains(qr/background worker "hybridexec stream worker" \(PID $victim\) exited with exit code 1/, $offset),
	'with an ordinary exit');
ok(!$node->log_contains(qr/terminating any other active server processes|reinitializing/, $offset),
	'the server did not go through crash recovery');
ok($node->log_contains(qr/put back \d+ task\(s\) left running by a stopped worker/, $offset),
	'the new worker swept the interrupted tasks back');

$node->stop;
done_testing();
