# 007_claim_floor.pl - stream claims during a backlog.
#
# While a backlog drains, a stream worker's claim starts after the last
# task a full claim took (the claim floor), not at the head of the claim
# index, whose head is all dead entries of tasks claimed since the last
# vacuum.  Proves that nothing is left behind the floor: a task of higher
# priority queued during the backlog is claimed next, ahead of the
# backlog; a task that failed and waits out its backoff behind the floor
# gets its next attempts while the backlog lasts (the periodic rescan); a
# priority-0 task queued by a transaction that began before the backlog's
# claims but committed after them still runs; and every task ends done
# exactly once.  Orders of events only: no timing is asserted.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('floor', 'hybridexec.retry_backoff' => '100ms');
HxTest::setup_keyed($node, max_attempts => 3);
ok(HxTest::wait_workers($node, 2), 'two stream workers');

my $n = 3000;

# a transaction that will queue a task with a low id, committed late
my $late = $node->background_psql('postgres');
$late->query_safe('BEGIN');
$late->query_safe(q{SELECT hx_submit('keyed', '{"k": "late"}', origin => 'user')});

# a backlog of tasks of 2 ms each: two workers take a few seconds over it
sub backlog
{
	my ($prefix, $first) = @_;
	$node->safe_psql('postgres', qq{
		BEGIN;
		$first
		SELECT count(hx_submit('keyed', jsonb_build_object('k', '$prefix' || g, 'sleep', 0.002), origin => 'user'))
		  FROM generate_series(1, $n) g;
		COMMIT;
	});
	return;
}

backlog('back-', '');

# the backlog is under way: a higher priority and the late commit arrive
ok($node->poll_query_until('postgres', "SELECT count(*) >= 200 FROM seen WHERE k LIKE 'back-%'"),
	'the backlog is being worked off');
$late->query_safe('COMMIT');
my $late_at = $late->query_safe('SELECT clock_timestamp()');
$late->quit;
chomp $late_at;
my $urgent = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', '{"k": "urgent"}', origin => 'user', priority => 10)});

HxTest::wait_finished($node, 'back-', "$n backlog tasks");
HxTest::check_exactly_once($node, 'back-', $n, "$n backlog tasks");
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE payload->>'k' = 'late'"),
	'the task committed late is done');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'late'"), '1', 'once');

# Backlog tasks claimed after "since" but before task id: claims that read
# the floor before a new task lowered it may still start after the task -
# one claim per worker, plus the next one each took with its previous
# batch's commit, a few tasks each (10 ms of work).  Had nothing lowered
# the floor, the task would have waited for the rescan, half a second of
# backlog.
sub overtook
{
	my ($since, $id) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FROM hx_task b, hx_task u
		 WHERE u.id = $id AND b.payload->>'k' LIKE 'back-%'
		   AND b.started_at > $since AND b.started_at < u.started_at});
}
my $overtook = overtook('u.submitted_at', $urgent);
cmp_ok($overtook, '<', 100,
	"the urgent task was claimed next: $overtook backlog tasks were claimed between its submit and its claim");
my $late_id = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE payload->>'k' = 'late'");
$overtook = overtook("'$late_at'", $late_id);
cmp_ok($overtook, '<', 100,
	"the task committed late was claimed next: $overtook backlog tasks were claimed between its commit and its claim");
is($node->safe_psql('postgres', "SELECT status || ' ' || attempts FROM hx_task WHERE id = $urgent"),
	'done 1', 'the urgent task is done');
ok( $node->safe_psql('postgres', qq{
		SELECT u.finished_at < max(b.finished_at) FROM hx_task b, hx_task u
		 WHERE u.id = $urgent AND b.payload->>'k' LIKE 'back-%' GROUP BY u.finished_at}) eq 't',
	'before the backlog was done');

# --- a retry behind the floor ----------------------------------------------
# the failing task first (lowest id), then a backlog that nothing else
# lowers the floor during: the retries, due 100 and 200 ms after each
# failure, are found by the rescan
backlog('again-', q{SELECT hx_submit('keyed', '{"k": "flaky", "fail": true}', origin => 'user');});
HxTest::wait_finished($node, 'again-', "another $n backlog tasks");
HxTest::check_exactly_once($node, 'again-', $n, "another $n backlog tasks");
ok($node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE payload->>'k' = 'flaky'"),
	'the failing task ran out of attempts');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(attempt::text, ',' ORDER BY attempt) FROM hx_error e
		  JOIN hx_task t ON t.id = e.task_id WHERE t.payload->>'k' = 'flaky'}),
	'1,2,3', 'each of its three attempts failed once');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(e.attempt::text, ',' ORDER BY e.attempt) FROM hx_error e JOIN hx_task t ON t.id = e.task_id
		 WHERE t.payload->>'k' = 'flaky'
		   AND e.at < (SELECT max(finished_at) FROM hx_task WHERE payload->>'k' LIKE 'again-%')}),
	'1,2,3', 'its retries, due behind the floor, ran while the backlog lasted');

$node->stop;
done_testing();
