# 006_burst_after_batch.pl - a stream burst right after the queue held only
# batch work.
#
# The stream workers keep their claim plan.  Planned while hx_task held
# 200,000 batch tasks and no stream task (statistics fresh from ANALYZE),
# then an emptied and re-analyzed table, that plan once cost so much that
# every claim was JIT-compiled and scanned the table: 20,000 stream tasks
# submitted then were not started a minute later.  The workers' own
# statements are now planned in index order with JIT off
# (hx_execute_plan), so the burst drains as usual.  The poll deadline is
# generous (this is not a timing test): the bug made it practically
# endless.
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
