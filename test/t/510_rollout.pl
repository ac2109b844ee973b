# 510_rollout.pl - a percentage rollout between the paths, end to end.
#
# A rule that streams background "score" tasks takes a sample of 0.3; the
# rest fall through to the nightly window.  With the stream workers and a
# window run doing the work, proves:
#   1. of 10,000 tasks (half with dedupe keys, half sampled by id), the
#      sampled rule took 30% +- 5%, and every task followed
#      hx_sample_point exactly;
#   2. a key submitted again after its first task finished takes the same
#      path (both rounds of 2,500 keys);
#   3. hx_rollout_report compares the two arms from the finished work:
#      counts that add up, the sampled arm streamed and booked at the
#      stream price, the other batched and cheaper per task, latencies of
#      both; and a rule whose sample is changed keeps its keys' choice for
#      the keys it still takes (a larger sample adds keys, never moves
#      one back).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('rollout', 'hybridexec.scheduler_naptime' => '100ms');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION score(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT jsonb_build_object(''score'', 1)';
	CREATE FUNCTION score_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql
		AS 'SELECT array_agg(jsonb_build_object(''score'', 1)) FROM unnest(ps)';
	SELECT hx_register('score', 'score(jsonb)', batch_handler => 'score_batch(jsonb[])');
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('score-night', '0 3 * * *', 1000);
	INSERT INTO hx_rule (name, position, task_type, route, sample, description)
	VALUES ('score-canary', 1, 'score', 'stream', 0.3, 'stream 30% of scoring to compare');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('score-night', 2, 'score', 'batch', 'score-night');
});

# one round: 2,500 keyed tasks and 2,500 without a key, then both paths drain
sub round
{
	my ($n) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(hx_submit('score', jsonb_build_object('k', g), dedupe_key => 'key-' || g))
		  FROM generate_series(1, 2500) g;
		SELECT count(*) FROM hx_submit_batch('score', ARRAY(SELECT jsonb_build_object('r', $n, 'g', g)
															  FROM generate_series(1, 2500) g));
	});
	my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('score-night')});
	ok( $node->poll_query_until('postgres',
			"SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
		"round $n: the window run is done");
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM hx_task WHERE task_type = 'score' AND status <> 'done'}),
		"round $n: every task is done");
	return;
}

round(1);
round(2);

# --- 1. the share and the hash ------------------------------------------------------
my ($tasks, $took, $disagree) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*), count(*) FILTER (WHERE rule_name = 'score-canary'),
		   count(*) FILTER (WHERE (rule_name = 'score-canary')
							<> (hx_sample_point('score-canary', coalesce(dedupe_key, id::text)) < 0.3))
	  FROM hx_task WHERE task_type = 'score'});
is($tasks, 10000, '10,000 tasks');
cmp_ok(abs($took / $tasks - 0.3), '<=', 0.05, "the sampled rule took 30% +- 5% ($took)");
is($disagree, 0, 'every task followed hx_sample_point (its dedupe key, else its id)');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE rule_name = 'score-canary' AND route <> 'stream')
			 + count(*) FILTER (WHERE rule_name = 'score-night' AND route <> 'batch')
			 + count(*) FILTER (WHERE sample_rule IS DISTINCT FROM 'score-canary')
		  FROM hx_task WHERE task_type = 'score'}),
	'0', 'the taken ones streamed, the rest waited for the window, all seen by the sampled rule');

# --- 2. the same key, the same path -----------------------------------------------
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE paths > 1) FROM (
			SELECT dedupe_key, count(*) AS n, count(DISTINCT route) AS paths
			  FROM hx_task WHERE task_type = 'score' AND dedupe_key IS NOT NULL
			 GROUP BY dedupe_key) k WHERE n = 2}),
	'2500 0', 'each of the 2,500 keys ran twice, on one path both times');

# --- 3. the report ------------------------------------------------------------------
my %arm;
for my $line (split /\n/, $node->safe_psql('postgres', q{
		SELECT arm, routes, tasks, done, share, cost_per_done, latency_p50 IS NOT NULL AND latency_p95 >= latency_p50,
			   failure_rate
		  FROM hx_rollout_report(now() - interval '1 hour', now() + interval '1 minute')
		 WHERE rule_name = 'score-canary'}))
{
	my @f = split /\|/, $line;
	$arm{ $f[0] } = \@f;
}
is(join(',', sort keys %arm), 'fell through,sampled', 'two arms for the sampled rule');
is($arm{sampled}[2] + $arm{'fell through'}[2], 10000, 'their tasks add up to all');
is($arm{sampled}[2], $took, 'the sampled arm has the tasks the rule took');
is("$arm{sampled}[1] / $arm{'fell through'}[1]", 'stream / batch', 'one streamed, the other batched');
cmp_ok($arm{sampled}[5], '>', $arm{'fell through'}[5], 'streaming cost more per task than the window');
is("$arm{sampled}[6] $arm{'fell through'}[6]", 't t', 'both arms have latencies (p95 >= p50)');
is("$arm{sampled}[7] $arm{'fell through'}[7]", '0.0000 0.0000', 'and no failures');

# a larger sample keeps every key the smaller one took
is( $node->safe_psql('postgres', q{
		UPDATE hx_rule SET sample = 0.5 WHERE name = 'score-canary';
		SELECT count(*) FROM generate_series(1, 2500) g,
			   hx_classify('score', dedupe_key => 'key-' || g) c
		 WHERE c.rule_name <> 'score-canary'
		   AND EXISTS (SELECT 1 FROM hx_task t WHERE t.dedupe_key = 'key-' || g AND t.rule_name = 'score-canary')}),
	'0', 'raising the sample to 0.5 moves none of the keys already streamed back to the window');

$node->stop;
done_testing();
