# 550_replay.pl - replay through a new handler (Kappa), end to end.
#
# "classify" v1 tasks are done by the stream workers; some of them are
# then retired by retention, their payloads and results kept in
# hx_archive. Proves:
#   1. retention keeps a done task's payload and result in hx_archive
#      (hybridexec.archive_retention);
#   2. hx_replay submits the payload of every done task of the period, in
#      the queue or archived, as a task of the new type in the window, and
#      records the replay;
#   3. after the window ran, hx_replay_diff finds exactly the results the
#      new handler changed, and hx_replay_summary counts them;
#   4. bad arguments are clear errors that queue nothing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('replay', 'hybridexec.scheduler_naptime' => '100ms');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	-- v1 calls everything under 10 "small"; v2 moves the line to 5
	CREATE FUNCTION classify_v1(p jsonb) RETURNS jsonb LANGUAGE sql
		AS $$SELECT jsonb_build_object('size', CASE WHEN (p->>'n')::int < 10 THEN 'small' ELSE 'large' END)$$;
	CREATE FUNCTION classify_v2(p jsonb) RETURNS jsonb LANGUAGE sql
		AS $$SELECT jsonb_build_object('size', CASE WHEN (p->>'n')::int < 5 THEN 'small' ELSE 'large' END)$$;
	SELECT hx_register('classify', 'classify_v1(jsonb)');
	SELECT hx_register('classify_v2', 'classify_v2(jsonb)');
	INSERT INTO hx_window (name, schedule) VALUES ('replays', '0 4 * * *');
});
my $from = $node->safe_psql('postgres', 'SELECT now()');
my $ids = $node->safe_psql('postgres', q{
	SELECT string_agg(hx_submit('classify', jsonb_build_object('n', g), origin => 'user')::text, ',')
	  FROM generate_series(1, 20) g});
is( $node->safe_psql('postgres', "SELECT string_agg(DISTINCT status, ',') FROM hx_await(ARRAY[$ids], '30 seconds')"),
	'done', 'the 20 v1 tasks are done');

# --- 1. retention archives the first ten ---------------------------------------------
$node->safe_psql('postgres', q{
	UPDATE hx_task SET finished_at = now() - interval '2 hours'
	 WHERE task_type = 'classify' AND (payload->>'n')::int <= 10;
	ALTER SYSTEM SET hybridexec.retention = '1h';
	SELECT pg_reload_conf();
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 10 FROM hx_task WHERE task_type = 'classify'}),
	'retention retired the ten older tasks');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE result->>'size' = CASE WHEN (payload->>'n')::int < 10 THEN 'small' ELSE 'large' END)
		  FROM hx_archive WHERE task_type = 'classify'}),
	'10 10', 'their payloads and results are in hx_archive');
$node->safe_psql('postgres', q{ALTER SYSTEM RESET hybridexec.retention; SELECT pg_reload_conf();});

# --- 2. the replay ------------------------------------------------------------------
my $rid = $node->safe_psql('postgres', qq{
	SELECT hx_replay('classify', '$from'::timestamptz - interval '3 hours', now() + interval '1 minute',
					 'classify_v2', 'replays')});
is( $node->safe_psql('postgres', qq{
		SELECT r.tasks || ' ' || count(*) FILTER (WHERE t.route = 'batch' AND t.window_name = 'replays'
												   AND t.origin = 'replay' AND t.task_type = 'classify_v2'
												   AND t.status = 'queued')
		  FROM hx_replay r JOIN hx_replay_item i ON i.replay_id = r.id JOIN hx_task t ON t.id = i.task_id
		 WHERE r.id = $rid GROUP BY r.tasks}),
	'20 20', 'all 20 originals, archived or not, replayed as classify_v2 tasks waiting for the window');
is($node->safe_psql('postgres', "SELECT status FROM hx_replay_summary($rid)"), 'running', 'the replay runs');
my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('replays')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran');

# --- 3. the differences -----------------------------------------------------------------
is( $node->safe_psql('postgres', qq{
		SELECT string_agg((original_result->>'size') || '>' || (replay_result->>'size'), ',' ORDER BY original_id)
		  FROM hx_replay_diff($rid) WHERE NOT same}),
	join(',', ('small>large') x 5), 'hx_replay_diff finds the five results v2 changed (n = 5 to 9)');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(o.payload->>'n', ',' ORDER BY (o.payload->>'n')::int)
		  FROM hx_replay_diff($rid) d
		  JOIN (SELECT id, payload FROM hx_task UNION ALL SELECT task_id, payload FROM hx_archive) o ON o.id = d.original_id
		 WHERE NOT d.same}),
	'5,6,7,8,9', 'exactly the payloads between the two lines');
is($node->safe_psql('postgres', "SELECT tasks || ' ' || done || ' ' || same || ' ' || different || ' ' || failed || ' ' || pending || ' ' || status FROM hx_replay_summary($rid)"),
	'20 20 15 5 0 0 finished', 'hx_replay_summary: 15 the same, 5 different, finished');
is($node->safe_psql('postgres', "SELECT task_type || ' ' || as_type || ' ' || same || ' ' || different || ' ' || status FROM hx_replay WHERE id = $rid"),
	'classify classify_v2 15 5 finished', 'and the view hx_replay shows the replay with its counts and status');

# --- 4. bad arguments ----------------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_replay('classify', now(), now() - interval '1 day', 'classify_v2')});
like($err, qr/a period with a start before its end/, 'a backwards period: an error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_replay('classify', now() - interval '1 day', now(), 'classify_v3')});
like($err, qr/unknown task type "classify_v3"/, 'an unknown new type: an error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_replay('classify', now() - interval '1 day', now(), 'classify_v2', 'no-such-window')});
like($err, qr/unknown window "no-such-window"/, 'an unknown window: an error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_replay}), '1', 'none of them recorded a replay');

$node->stop;
done_testing();
