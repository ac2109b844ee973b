# 540_precompute.pl - predictive pre-execution end to end, with a real
# window run and real reuse.
#
# Proves:
#   1. hx_precompute sends the task to the window that finishes before
#      ready_by (whatever the rules would have done), with ready_by as its
#      deadline; a ready_by no window can meet is a clear error that
#      queues nothing;
#   2. after the window ran, a user's hx_submit with the dedupe key and
#      reuse_within gets the precomputed result at once, booked as a reuse
#      at zero cost, and hx_precompute_stats counts it used, with what it
#      saved; a precomputation nobody used within its ttl counts as wasted;
#      only roles that may see the precomputed task (its department) are
#      served from it, and only a member may precompute for a department;
#   3. hx_predict finds a key users asked for at the same weekday and hour
#      in three weeks, with the next such moment as ready_by, also once
#      retention moved those tasks to the archive, and hx_predict_apply
#      precomputes it once however often it runs.
#
# Whatever the date and time it runs at: the windows, ready_by and the
# asks are all placed relative to now.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

# A yearly schedule at 03:00 about six months from now (a day of the month
# that every month has): always far too late for what this test asks.
my @far = gmtime(time + 182 * 86400);
my $far_schedule = sprintf('0 3 %d %d *', $far[3] > 28 ? 28 : $far[3], $far[4] + 1);

my $node = HxTest::new_node('precompute', 'hybridexec.scheduler_naptime' => '100ms');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION report(p jsonb) RETURNS jsonb LANGUAGE sql AS $$SELECT jsonb_build_object('report', p->'week')$$;
	SELECT hx_register('report', 'report(jsonb)');
	-- two windows: one once a year, about six months from now (too late), one
	-- every day at 03:00 (within a day: in time for a ready_by two days ahead)
	INSERT INTO hx_window (name, schedule) VALUES ('yearly', '} . $far_schedule . q{');
	INSERT INTO hx_window (name, schedule) VALUES ('nightly-reports', '0 3 * * *');
	UPDATE hx_window SET enabled = false WHERE name IN ('fast', 'nightly');
});

# --- 1. the window that finishes in time -------------------------------------------
my $t1 = $node->safe_psql('postgres', q{
	SELECT hx_precompute('report', '{"week": 48}', 'report:w48', now() + interval '2 days', '1 day')});
is( $node->safe_psql('postgres', qq{
		SELECT route || ' ' || window_name || ' ' || origin || ' ' || (deadline > now() + interval '47 hours')
			   || ' ' || (reason LIKE 'precomputed for % in window nightly-reports%')
		  FROM hx_task WHERE id = $t1}),
	'batch nightly-reports precompute true true', 'queued for the window that finishes before ready_by, ready_by its deadline');
# a millisecond before the first window would finish (in the future: every
# window's next start is)
my ($rc, $out, $err) = $node->psql('postgres', q{
	SELECT hx_precompute('report', '{"week": 49}', 'report:w49',
						 (SELECT min(coalesce(expected_finish, next_start)) FROM hx_window_plan(now()))
						 - interval '1 millisecond', '1 day')});
like($err, qr/no enabled window finishes before/, 'a ready_by no window meets: a clear error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_task WHERE dedupe_key = 'report:w49'}), '0', 'that queued nothing');

# --- 2. served from the precomputation ----------------------------------------------
my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly-reports')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'the window ran');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $t1"), 'done', 'the report was computed at the batch price');
my $got = $node->safe_psql('postgres', q{
	SELECT hx_submit('report', '{"week": 48}', origin => 'user', dedupe_key => 'report:w48', reuse_within => '1 day')});
is($got, $t1, 'a user asking for it gets the precomputed task at once');
is( $node->safe_psql('postgres', qq{SELECT count(*) || ' ' || (sum(cost) = 0) FROM hx_cost WHERE task_id = $t1 AND outcome = 'reused'}),
	'1 true', 'booked as a reuse at zero cost');
$node->safe_psql('postgres', q{
	SELECT hx_precompute('report', '{"week": 50}', 'report:w50', now() + interval '2 days', '1 second')});
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly-reports')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'a second precomputation ran');
ok( $node->poll_query_until('postgres', q{
		SELECT precomputed = 2 AND used = 1 AND wasted = 1 AND pending = 0 AND uses = 1
		   AND saved > 0 AND wasted_cost > 0 AND cost > wasted_cost
		  FROM hx_precompute_stats() WHERE task_type = 'report'}),
	'hx_precompute_stats: two precomputed, one used (saving more than it cost), one wasted past its ttl');

# --- 2b. who may use a precomputation ----------------------------------------------
$node->safe_psql('postgres', q{
	CREATE ROLE analyst LOGIN;  GRANT hybridexec_submitter TO analyst;
	CREATE ROLE seller LOGIN;   GRANT hybridexec_submitter TO seller;
	CREATE ROLE outsider LOGIN; GRANT hybridexec_submitter TO outsider;
	INSERT INTO hx_department_member (role, department) VALUES ('analyst', 'sales'), ('seller', 'sales');
});
sub as_role
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $role ]);
	return ($out, $err);
}
my (undef, $perr) = as_role('outsider',
	q{SELECT hx_precompute('report', '{"week": 51}', 'report:w51', now() + interval '2 days', '1 day', department => 'sales')});
like($perr, qr/department/, 'a role outside a department may not precompute for it');
my ($t51) = as_role('analyst',
	q{SELECT hx_precompute('report', '{"week": 51}', 'report:w51', now() + interval '2 days', '1 day', department => 'sales')});
like($t51, qr/^\d+$/, 'a member of sales precomputes for sales');
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly-reports')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"), 'it ran');
my ($got_seller) = as_role('seller', q{
	SELECT hx_submit('report', '{"week": 51}', origin => 'user', department => 'sales', dedupe_key => 'report:w51', reuse_within => '1 day')});
is($got_seller, $t51, 'another member of sales is served the precomputed result');
my ($got_outsider) = as_role('outsider', q{
	SELECT hx_submit('report', '{"week": 51}', origin => 'user', dedupe_key => 'report:w51', reuse_within => '1 day')});
isnt($got_outsider, $t51, 'a role outside sales is not: its own task is queued, the result is not leaked');

# --- 3. predictions -----------------------------------------------------------------
# The weekly slot: the local hour (hybridexec.time_zone) 35 to 36 hours from
# now, so that the next run of nightly-reports (03:00, within a day) always
# comes before it, whatever the weekday and hour the test runs at.
my ($slot, $slot_dow, $slot_hour) = split /\|/, $node->safe_psql('postgres', q{
	SELECT m, extract(isodow FROM m)::integer, extract(hour FROM m)::integer
	  FROM (SELECT date_trunc('hour', (now() + interval '36 hours') AT TIME ZONE _hybridexec.hx_local_zone()) AS m) s});
# a user asked for the weekly report at that weekday and hour (xx:12) in
# three past weeks
$node->safe_psql('postgres', qq{
	INSERT INTO hx_task (task_type, payload, status, route, origin, dedupe_key, submitted_at, finished_at)
	SELECT 'report', '{"week": "current"}', 'done', 'stream', 'user', 'report:weekly',
		   ('$slot'::timestamp - w * interval '7 days' + interval '12 minutes') AT TIME ZONE _hybridexec.hx_local_zone(),
		   ('$slot'::timestamp - w * interval '7 days' + interval '13 minutes') AT TIME ZONE _hybridexec.hx_local_zone()
	  FROM generate_series(1, 3) w;
	-- and another key, an hour later, only twice
	INSERT INTO hx_task (task_type, payload, status, route, origin, dedupe_key, submitted_at, finished_at)
	SELECT 'report', '{}', 'done', 'stream', 'user', 'report:rare',
		   ('$slot'::timestamp - w * interval '7 days' + interval '1 hour') AT TIME ZONE _hybridexec.hx_local_zone(),
		   ('$slot'::timestamp - w * interval '7 days' + interval '1 hour 1 minute') AT TIME ZONE _hybridexec.hx_local_zone()
	  FROM generate_series(1, 2) w;
});
is( $node->safe_psql('postgres', qq{
		SELECT dedupe_key || ' ' || weekday || ' ' || hour || ' ' || weeks || ' '
			   || (ready_by = '$slot'::timestamp AT TIME ZONE _hybridexec.hx_local_zone())
		  FROM hx_predict('28 days', 3)}),
	"report:weekly $slot_dow $slot_hour 3 true",
	"hx_predict finds the weekly report (three weeks, weekday $slot_dow, $slot_hour:00, next at $slot), not the one asked twice");
is($node->safe_psql('postgres', q{SELECT hx_predict_apply('1 day')}), '1', 'hx_predict_apply precomputes it');
is($node->safe_psql('postgres', q{SELECT hx_predict_apply('1 day')}), '0', 'and not twice');
is( $node->safe_psql('postgres', qq{
		SELECT p.predicted || ' ' || t.window_name || ' ' || t.status || ' '
			   || (p.ready_by = '$slot'::timestamp AT TIME ZONE _hybridexec.hx_local_zone())
		  FROM hx_precompute p JOIN hx_task t ON t.id = p.task_id
		 WHERE p.dedupe_key = 'report:weekly'}),
	'true nightly-reports queued true', 'for that moment, in the nightly window before it');

# the asks outlive retention: archived, they are still counted
$node->safe_psql('postgres', q{ALTER SYSTEM SET hybridexec.retention = '1h'; SELECT pg_reload_conf();});
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 0 FROM hx_task WHERE dedupe_key = 'report:weekly' AND origin = 'user'}),
	'retention retired the users\' weekly tasks');
is( $node->safe_psql('postgres', q{SELECT dedupe_key || ' ' || weeks FROM hx_predict('28 days', 3)}),
	'report:weekly 3', 'hx_predict still finds the rhythm, from hx_archive');

$node->stop;
done_testing();
