# 305_schedules.pl - recurring tasks submitted by pg_cron.
#
# With pg_cron preloaded and installed: hx_schedule() gives a schedule its
# pg_cron job; pg_cron fires it at the next minute and the task is
# submitted for the role that scheduled it, classified by the rules (an
# urgent one streams) and done; a tick submits once however often its job
# runs; another role neither sees the schedule nor can replace or remove
# it; bad input is a clear error that changes nothing; hx_unschedule()
# removes the schedule and its job, and DROP EXTENSION the jobs of the
# schedules left.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('schedules',
	shared_preload_libraries => 'hybridexec,pg_cron',
	'cron.database_name' => 'postgres',
	'cron.use_background_workers' => 'on',
	create_extension => 0);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron; CREATE EXTENSION hybridexec');
HxTest::setup_keyed($node);
$node->safe_psql('postgres', q{
	CREATE ROLE alice IN ROLE hybridexec_submitter;
	CREATE ROLE bob IN ROLE hybridexec_submitter;
	GRANT INSERT ON seen TO PUBLIC;
});

# --- a schedule and its job ------------------------------------------------------
is( $node->safe_psql('postgres', q{
		SET ROLE alice;
		SELECT hx_schedule('minutely', '* * * * *', 'keyed', '{"k": "tick"}', origin => 'user')}),
	'minutely', 'alice schedules a task every minute');
is( $node->safe_psql('postgres', q{
		SELECT schedule || ' | ' || command FROM cron.job WHERE jobname = 'hybridexec schedule minutely'}),
	q{* * * * * | SELECT _hybridexec.hx_schedule_fire('minutely')}, 'it has its pg_cron job');

# --- pg_cron fires it ----------------------------------------------------------------
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM hx_task WHERE dedupe_key LIKE 'schedule minutely %' AND status = 'done'}),
	'at the next minute its task is submitted and done');
is( $node->safe_psql('postgres', q{
		SELECT t.submitted_by || ' ' || t.route || ' ' || t.rule_name || ' ' || (t.result->>'k') || ' '
			   || (s.last_task_id = t.id)
		  FROM hx_task t JOIN hx_schedule s ON s.name = 'minutely'
		 WHERE t.dedupe_key LIKE 'schedule minutely %'}),
	'alice stream user-initiated tick true', 'for alice, classified by the rules like any task, recorded as the last tick');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) >= 1 FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
		 WHERE j.jobname = 'hybridexec schedule minutely' AND d.status = 'succeeded'}),
	'the job run succeeded');

# --- a tick submits once -------------------------------------------------------------
$node->safe_psql('postgres', q{SET ROLE alice; SELECT hx_schedule('yearly', '0 0 1 1 *', 'keyed', '{"k": "year"}')});
my $first = $node->safe_psql('postgres', q{SELECT _hybridexec.hx_schedule_fire('yearly')});
like($first, qr/^\d+$/, 'a job run submits the tick\'s task');
is($node->safe_psql('postgres', q{SELECT _hybridexec.hx_schedule_fire('yearly') IS NULL}), 't', 'the same tick again submits nothing');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_task WHERE dedupe_key LIKE 'schedule yearly %'}), '1', 'one task for the tick');

# --- other roles ---------------------------------------------------------------------
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) FROM hx_schedule}), '0', 'bob sees none of alice\'s schedules');
my ($rc, $out, $err) = $node->psql('postgres',
	q{SET ROLE bob; SELECT hx_schedule('yearly', '* * * * *', 'keyed', '{"k": "bob"}')});
like($err, qr/schedule "yearly" belongs to another role/, 'bob cannot replace it');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT hx_unschedule('yearly')}), 'f', 'nor remove it');
is($node->safe_psql('postgres', q{SELECT schedule || ' ' || submitted_by FROM hx_schedule WHERE name = 'yearly'}),
	'0 0 1 1 * alice', 'it is unchanged');

# --- bad input ------------------------------------------------------------------------
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_schedule('bad', 'every tuesday', 'keyed')});
like($err, qr/ERROR: .*(cron|schedule)/i, 'a bad cron schedule: an error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_schedule('bad', '* * * * *', 'nope')});
like($err, qr/unknown task type "nope"/, 'an unknown type: an error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_schedule('bad', NULL, 'keyed')});
like($err, qr/must not be NULL.*\n.*HINT/, 'NULL: an error with a hint');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_schedule WHERE name = 'bad'}), '0', 'nothing was scheduled');

# --- removed ---------------------------------------------------------------------------
is($node->safe_psql('postgres', q{SET ROLE alice; SELECT hx_unschedule('minutely')}), 't', 'alice removes her schedule');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname = 'hybridexec schedule minutely'}), '0',
	'and its job is gone');
$node->safe_psql('postgres', 'DROP EXTENSION hybridexec CASCADE');
is($node->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'hybridexec %'}), '0',
	'DROP EXTENSION removes the jobs of the schedules left');

$node->stop;
done_testing();
