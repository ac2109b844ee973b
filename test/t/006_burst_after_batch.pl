# 006_burst_after_batch.pl - a stream burst right after the queue held only
# batch work, then nothing.
#
# The stream workers keep their claim and booking plans.  Plans cached
# while the statistics described another queue (200,000 batch tasks, then
# an empty table) must still claim in index order and book by primary key
# when a burst of stream tasks arrives.  hx_execute_plan (worker_common.c)
# plans the workers' own statements that way whatever the statistics say.
# Before it, bursts of 50,000 tasks drained at 1,700 tasks/s instead of
# 13,000 on the development machine, and once 20,000 tasks were not started
# after a minute; this test could not make that happen on demand, so it is
# a functional check of the sequence (every task done once, at its first
# attempt), with a generous deadline, not a timing test.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('burst', 'hybridexec.poll_interval' => '100ms');
$node->safe_psql('postgres', q{
	CREATE FUNCTION nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
	CREATE FUNCTION nop_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS 'SELECT ps';
	SELECT hx_register('nop', 'nop(jsonb)');
	SELECT hx_register('bnop', batch_handler => 'nop_batch(jsonb[])');
});
ok(HxTest::wait_workers($node, 2), 'two stream workers');

sub idle_claims
{
	my ($what) = @_;
	# the workers claim (and find nothing) every 100 ms: wait for enough
	# claims that their plan cache switched to a generic plan
	my $t0 = $node->safe_psql('postgres', 'SELECT clock_timestamp()');
	ok( $node->poll_query_until('postgres',
			"SELECT clock_timestamp() > '$t0'::timestamptz + interval '1.5 seconds'"),
		"$what: the workers claimed (nothing) a dozen times");
	return;
}

$node->safe_psql('postgres', q{
	SELECT count(*) FROM hx_submit_batch('bnop', ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, 200000) g));
	VACUUM ANALYZE hx_task;
});
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE route = 'batch'"),
	'200000', 'the queue holds 200,000 batch tasks and no stream task');
idle_claims('with only batch work queued');
$node->safe_psql('postgres', 'DELETE FROM hx_task; VACUUM ANALYZE hx_task;');
idle_claims('with an empty queue');

$node->safe_psql('postgres', q{
	SELECT count(hx_submit('nop', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 20000) g});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 20000 FROM hx_task WHERE task_type = 'nop' AND status = 'done'"),
	'the burst of 20,000 stream tasks drained');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM hx_task WHERE task_type = 'nop' AND attempts = 1 AND result = payload"),
	'20000', 'each at its first attempt, with its result');

$node->stop;
done_testing();
