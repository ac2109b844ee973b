# 530_quality.pl - quality, freshness and dead letters for people, with
# real workers.
#
# Proves:
#   1. hx_quality records evaluations of done tasks (and refuses what it
#      must: unknown, unfinished, not the caller's), hx_stats averages them
#      per type and route;
#   2. hx_health alerts when the last hour's average is under the type's
#      min_quality, and when it fell by more than
#      hybridexec.alert_quality_drop from the week's average;
#   3. a watched table whose rows wait longer than its max_lag for their
#      result raises an alert naming the table;
#   4. a task that dies goes to its type's dead_letter_type: a task of that
#      type (a review queue) with the dead task's id, payload and errors.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('quality');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION answer(p jsonb) RETURNS jsonb LANGUAGE sql AS $$SELECT jsonb_build_object('a', p->'q')$$;
	CREATE FUNCTION broken(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		RAISE EXCEPTION 'model unavailable' USING ERRCODE = 'P0001';
	END $$;
	SELECT hx_register('answer', 'answer(jsonb)');
	SELECT hx_register('review');                   -- people, through an external queue
	SELECT hx_register('scoring', 'broken(jsonb)', max_attempts => 2);
	UPDATE hx_type SET dead_letter_type = 'review' WHERE task_type = 'scoring';
	CREATE ROLE app LOGIN;
	GRANT hybridexec_submitter TO app;
	CREATE ROLE other LOGIN;
	GRANT hybridexec_submitter TO other;
});

sub as_role
{
	my ($role, $sql) = @_;
	return $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
}

# --- 1. evaluations -----------------------------------------------------------------
my ($rc, $ids, $err) = as_role('app', q{
	SELECT string_agg(hx_submit('answer', jsonb_build_object('q', g), origin => 'user')::text, ' ')
	  FROM generate_series(1, 6) g});
my @ids = split / /, $ids;
is(scalar @ids, 6, 'six answers submitted');
($rc, my $st) = as_role('app', "SELECT string_agg(status, ',') FROM hx_await(ARRAY[" . join(',', @ids) . "], '30 seconds')");
is($st, join(',', ('done') x 6), 'all done');
($rc, my $out) = as_role('app', "SELECT count(hx_quality(id, 'thumbs_up', CASE WHEN id % 2 = 0 THEN 1 ELSE 0.5 END)) FROM unnest(ARRAY[" . join(',', @ids) . "]::bigint[]) id");
is($out, '6', 'the submitter records an evaluation of each');
($rc, $out, $err) = as_role('other', "SELECT hx_quality($ids[0], 'thumbs_up', 0)");
like($err, qr/task $ids[0] does not exist or is not yours/, 'another role may not evaluate them');
($rc, $out, $err) = as_role('app', "SELECT hx_quality($ids[0], '', 1)");
like($err, qr/metric must be 1 to 200 characters/, 'an empty metric is refused');
my $queued = $node->safe_psql('postgres', q{SELECT hx_submit('review', '{}')});
($rc, $out, $err) = $node->psql('postgres', "SELECT hx_quality($queued, 'thumbs_up', 1)");
like($err, qr/task $queued is queued, not done/, 'an unfinished task has nothing to evaluate');
$node->safe_psql('postgres', "SELECT hx_cancel($queued)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_quality}), '6', 'only the six were recorded');
is( $node->safe_psql('postgres', q{SELECT quality || ' ' || evaluations FROM hx_stats WHERE task_type = 'answer' AND route = 'stream'}),
	'0.750 6', 'hx_stats averages them per type and route');

# --- 2. quality alerts ---------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_health() WHERE problem LIKE 'quality%'}),
	'0', 'no alert without a minimum or a history');
$node->safe_psql('postgres', q{UPDATE hx_type SET min_quality = 0.8 WHERE task_type = 'answer'});
is( $node->safe_psql('postgres', q{SELECT problem || ': ' || detail FROM hx_health() WHERE problem LIKE 'quality%'}),
	'quality below minimum: type answer: thumbs_up averaged 0.750 over the last hour (6 evaluations), under its min_quality of 0.8',
	'under min_quality: an alert with the figures');
$node->safe_psql('postgres', q{
	UPDATE hx_type SET min_quality = NULL WHERE task_type = 'answer';
	-- a week at 0.95 before this hour
	INSERT INTO hx_quality (task_id, task_type, route, metric, value, at, recorded_by)
	SELECT 0, 'answer', 'stream', 'thumbs_up', 0.95, now() - g * interval '1 hour', 'app'::regrole
	  FROM generate_series(2, 150) g});
like( $node->safe_psql('postgres', q{SELECT problem || ': ' || detail FROM hx_health() WHERE problem LIKE 'quality%'}),
	qr/^quality drop: type answer: thumbs_up averaged 0.750 over the last hour \(6 evaluations\) against 0.9\d\d over 7 days$/,
	'a drop of more than 0.1 from the week: an alert');
$node->safe_psql('postgres', q{ALTER SYSTEM SET hybridexec.alert_quality_drop = 0.5; SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 0 FROM hx_health() WHERE problem LIKE 'quality%'}),
	'with hybridexec.alert_quality_drop at 0.5 it is not one');

# --- 3. freshness of a watched table ------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule) VALUES ('later', '0 3 1 1 *');
	INSERT INTO hx_rule (name, position, task_type, route, window_name) VALUES ('answers later', 1, 'answer', 'batch', 'later');
	CREATE TABLE tickets (id int PRIMARY KEY, q text, a jsonb);
	SELECT hx_attach('tickets', 'answer', columns => ARRAY['q'], result_column => 'a');
	UPDATE hx_attachment SET max_lag = '1 second' WHERE source = 'tickets'::regclass;
	INSERT INTO tickets VALUES (1, 'x'), (2, 'y');
});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 1 FROM hx_health() WHERE problem = 'watched rows waiting' AND subject = 'tickets'
		    AND detail LIKE '2 rows of tickets wait for their result longer than its max_lag of 00:00:01%'}),
	'rows waiting longer than max_lag: an alert naming the table');
$node->safe_psql('postgres', q{UPDATE hx_attachment SET max_lag = NULL WHERE source = 'tickets'::regclass});
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_health() WHERE problem = 'watched rows waiting'}),
	'0', 'no alert without max_lag');

# --- 4. dead letters for people ------------------------------------------------------
my $s = $node->safe_psql('postgres', q{SELECT hx_submit('scoring', '{"customer": 7}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($s, '30 seconds')"), 'dead', 'a scoring task dies');
is( $node->safe_psql('postgres', qq{
		SELECT status || ' ' || origin || ' ' || (payload->>'task_id') || ' ' || (payload->>'task_type') || ' '
			   || (payload->'payload') || ' ' || jsonb_array_length(payload->'errors') || ' '
			   || (payload->'errors'->0->>'message') || ' ' || (reason LIKE 'dead letter of task $s:%')
		  FROM hx_task WHERE task_type = 'review' AND payload->>'task_id' = '$s'}),
	qq{queued dead_letter $s scoring {"customer": 7} 2 model unavailable true},
	'a review task holds the dead task, its payload and both errors');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $s"), 'dead', 'and the task stays dead');

$node->stop;
done_testing();
