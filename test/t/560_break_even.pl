# 560_break_even.pl - the break-even verdict from real work: hx_advise's
# overall row flips between batch-first and streaming more as the share of
# work that needs real time crosses hybridexec.break_even_share, with the
# fixed costs of both paths counted.
#
# Proves, with the stream workers and a window run doing the work:
#   1. 10 urgent (user) tasks among 100: 10% real time, under the default
#      20%: batch-first, and the totals count the fixed costs of the period;
#   2. 50 among 140 (36%): over it: stream more;
#   3. the same work under a break-even share of 0.5: batch-first again.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('break_even', 'hybridexec.scheduler_naptime' => '100ms');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION answer(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
	SELECT hx_register('ticket', 'answer(jsonb)');
	INSERT INTO hx_fixed_cost (route, amount, period, valid_from, description) VALUES
		('stream', 24, '1 day', now() - interval '1 day', 'a GPU node kept warm'),
		('batch', 2.4, '1 day', now() - interval '1 day', 'a batch cluster');
});

# n user tasks (streamed) and m background ones (the nightly window)
sub work
{
	my ($users, $background) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(hx_submit('ticket', jsonb_build_object('u', g), origin => 'user')) FROM generate_series(1, $users) g;
		SELECT count(*) FROM hx_submit_batch('ticket', ARRAY(SELECT jsonb_build_object('b', g) FROM generate_series(1, $background) g));
	});
	my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly')});
	ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran');
	ok( $node->poll_query_until('postgres',
			q{SELECT count(*) = 0 FROM hx_task WHERE task_type = 'ticket' AND status <> 'done'}),
		"all $users + $background tasks are done");
	return;
}

sub verdict
{
	my ($setting) = @_;
	my $set = defined $setting ? "SET hybridexec.break_even_share = $setting;" : '';
	return $node->safe_psql('postgres', qq{$set
		SELECT urgent_share || ' ' || break_even_share || ' ' || round(fixed_cost, 1) || ' | ' || recommendation
		  FROM hx_advise(now() - interval '1 hour', now() + interval '1 minute') WHERE task_type = '(all)'});
}

# --- 1. 10% real time -----------------------------------------------------------------
work(10, 90);
my $v = verdict();
like($v, qr/^0\.100 0\.2 1\.1 \| overall: 10\.0% of the work needed real time, under the break-even share of 20\.0%: run batch-first/,
	'10% needed real time: batch-first, with the fixed costs of the 61 minutes (24 and 2.4 a day, prorated) counted');
like($v, qr/counting fixed costs of 1\.\d\d, batch-first would have cost [\d.]+ USD against [\d.]+ for all-stream/,
	'and the totals of both policies');

# --- 2. 36% -----------------------------------------------------------------------
work(40, 0);
like(verdict(), qr/^0\.357 0\.2 .* over the break-even share of 20\.0%: stream more/, '50 of 140 (36%): stream more');

# --- 3. a higher break-even share ------------------------------------------------
like(verdict('0.5'), qr/^0\.357 0\.5 .* under the break-even share of 50\.0%: run batch-first/,
	'under a break-even share of 0.5: batch-first again');

$node->stop;
done_testing();
