# 008_await.pl - telling callers that their tasks finished.
#
# Proves that: every task that finishes - done by a stream worker, dead
# after its last attempt, cancelled - is announced by NOTIFY hx_done with
# its id, type and status, exactly once, coalesced into JSON arrays of
# fewer notifications than tasks, each under 8,000 bytes; a finish rolled
# back (with its transaction or its savepoint) announces nothing;
# hybridexec.notify_done = off sends none; hx_await() is woken by the
# finishing commit: with the safety poll set to ten minutes it returns
# within a second of the tasks' finish, with their results, in the order
# given; 130 waiters, more than the 128 slots, all return in time, and a
# waiter terminated while it waits disturbs none of them.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('await', max_connections => 160);
HxTest::setup_keyed($node, max_attempts => 1);
ok(HxTest::wait_workers($node, 2), 'two stream workers');

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_done; LISTEN hx_test_sentinel');

# the hx_done notifications since the last call: [payload array, bytes]
sub done_notifications
{
	my ($tag) = @_;
	return map { [ decode_json($_->[1]), length($_->[1]) ] }
	  grep { $_->[0] eq 'hx_done' } HxTest::notifications($node, $listener, $tag);
}

# --- done, by the stream workers ---------------------------------------------
my $ids = $node->safe_psql('postgres', q{
	SELECT string_agg(hx_submit('keyed', jsonb_build_object('k', 'many-' || g), origin => 'user')::text, ',')
	  FROM generate_series(1, 400) g});
HxTest::wait_finished($node, 'many-', '400 stream tasks');
my @got = done_notifications('many');
my %seen;
for my $n (@got)
{
	$seen{ $_->{id} . ' ' . $_->{task_type} . ' ' . $_->{status} }++ for @{ $n->[0] };
}
my @want = map { "$_ keyed done" } split /,/, $ids;
is(scalar(grep { ($seen{$_} // 0) == 1 } @want), 400, 'each of the 400 done tasks announced once, with its type and status');
is(scalar(keys %seen), 400, 'and nothing else');
ok(@got > 0 && @got < 400, 'in fewer notifications than tasks (' . scalar(@got) . ')');
is(scalar(grep { $_->[1] >= 8000 } @got), 0, 'each payload under 8,000 bytes');

# --- dead, and cancelled -------------------------------------------------------
my $dead = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "dead-1", "fail": true}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($dead, '60 seconds')"), 'dead', 'a failing task with one attempt is dead');
my $waiting = $node->safe_psql('postgres', q{
	SELECT string_agg(hx_submit('keyed', jsonb_build_object('k', 'later-' || g))::text, ',') FROM generate_series(1, 3) g});
my ($w1, $w2, $w3) = split /,/, $waiting;
$node->safe_psql('postgres', "SELECT hx_cancel($w1)");
# rolled back: with the transaction, and with a savepoint
$node->safe_psql('postgres', "BEGIN; SELECT hx_cancel($w2); ROLLBACK;");
$node->safe_psql('postgres', "BEGIN; SAVEPOINT s; SELECT hx_cancel($w2); ROLLBACK TO SAVEPOINT s; SELECT hx_cancel($w3); COMMIT;");
@got = done_notifications('dead-cancel');
is( join(' ', map { map { "$_->{id}:$_->{status}" } @{ $_->[0] } } @got),
	"$dead:dead $w1:cancelled $w3:cancelled",
	'the dead and the cancelled tasks are announced, not the cancels rolled back');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $w2"), 'queued', 'the task whose cancel rolled back still waits');

# --- switched off ------------------------------------------------------------------
$node->safe_psql('postgres', "SET hybridexec.notify_done = off; SELECT hx_cancel($w2)");
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $w2"), 'cancelled', 'with hybridexec.notify_done off a task is cancelled');
is(scalar(done_notifications('off')), 0, 'but not announced');
$listener->quit;

# --- hx_await is woken by the finishing commit -----------------------------------
# With the safety look every ten minutes, only the wake-up can end the wait
# within the 60-second timeout.
$node->safe_psql('postgres', q{ALTER SYSTEM SET hybridexec.poll_interval = '10min'; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', 'SHOW hybridexec.poll_interval', '10min'), 'safety poll: ten minutes');

my $gate = HxTest::hold_gate($node, 81);
my $held = $node->safe_psql('postgres', q{
	SELECT string_agg(hx_submit('keyed', jsonb_build_object('k', 'gated-' || g, 'gate', 81), origin => 'user')::text, ',')
	  FROM generate_series(1, 2) g});
my $quick = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "quick-1"}', origin => 'user')});
my ($g1, $g2) = split /,/, $held;
my $waiter = $node->background_psql('postgres');
$waiter->query_until(qr/start/, qq{
	\\echo start
	SELECT string_agg(a.id || ':' || a.status || ':' || (a.result->>'k'), ' ' ORDER BY a.ord) AS got,
		   clock_timestamp() AS returned_at
	  FROM hx_await(ARRAY[$g2, $quick, $g1], '60 seconds') WITH ORDINALITY AS a (id, status, result, ord) \\gset
	SELECT :'got' || ' ' || (:'returned_at'::timestamptz - max(t.finished_at) < interval '1 second')
	  FROM hx_task t WHERE t.id IN ($g1, $g2);
});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE wait_event_type = 'Extension' AND query LIKE '%hx_await(ARRAY%' AND pid <> pg_backend_pid()}),
	'hx_await waits');
HxTest::release_gate($gate, 81);
my $out = $waiter->query_safe('SELECT 1');
like($out, qr/^\Q$g2:done:gated-2 $quick:done:quick-1 $g1:done:gated-1\E true$/m,
	'hx_await returns every task done with its result, in the order given, within a second of their finish');
$waiter->quit;

# --- more waiters than slots, one of them terminated ----------------------------
# A waiter terminated while it waits disturbs no one; then 130 waiters
# (more than the 128 slots: the last ones look every 5 ms) for one gated
# task all return it done when it finishes, well within the ten-minute
# safety poll and their timeout.
$gate = HxTest::hold_gate($node, 82);
my $one = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "gated-many", "gate": 82}', origin => 'user')});
my $victim = $node->background_psql('postgres', on_error_stop => 0);
$victim->query_until(qr/start/, "\\echo start\nSELECT * FROM hx_await(ARRAY[$one], '60 seconds');\n");
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%hx_await(ARRAY%'}),
	'a first waiter waits');
$node->safe_psql('postgres', q{
	SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%hx_await(ARRAY%'});
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM pg_stat_activity WHERE query LIKE '%hx_await(ARRAY%' AND pid <> pg_backend_pid()}),
	'and is terminated');
eval { $victim->quit };
my $n = 130;
my @waiters;
for my $i (1 .. $n)
{
	my $h = $node->background_psql('postgres');
	$h->query_until(qr/start/, "\\echo start\nSELECT 'w:' || status FROM hx_await(ARRAY[$one], '60 seconds');\n");
	push @waiters, $h;
}
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = $n FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%hx_await(ARRAY%'}),
	"$n waiters wait");
my $t0 = time();
HxTest::release_gate($gate, 82);
my $all_done = 0;
for my $h (@waiters)
{
	$all_done++ if $h->query_safe('SELECT 1') =~ /^w:done$/m;
	$h->quit;
}
is($all_done, $n, "all $n waiters saw the task done");
ok(time() - $t0 < 60, 'before their timeout (' . (time() - $t0) . ' s)');

$node->stop;
done_testing();
