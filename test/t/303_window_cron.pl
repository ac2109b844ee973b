# 303_window_cron.pl - pg_cron opens a window on its schedule.
#
# With pg_cron preloaded and installed, a window row gets its pg_cron job
# (the job calls hx_run_window(name, 'cron')); pg_cron fires it at the next
# minute; the run happens in a batch worker and is recorded as started by
# cron; the job's own run succeeded quickly (the window runs in a batch
# worker, not in pg_cron's session).  A disabled window has no job:
# enabling it creates the job, disabling it removes it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('cron',
	shared_preload_libraries => 'hybridexec,pg_cron',
	'cron.database_name' => 'postgres',
	'cron.use_background_workers' => 'on',
	create_extension => 0);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_cron; CREATE EXTENSION hybridexec');
HxBatch::setup_batch_keyed($node);

# every minute: the test waits at most a little over one.  The window is
# created disabled and enabled only once its 120 tasks are queued, so that
# pg_cron cannot open it on a queue still empty, whatever the second.
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, chunk_size, enabled) VALUES ('minutely', '* * * * *', 50, false);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bk-minutely', 1, 'bk', 'batch', 'minutely');
});
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM cron.job WHERE jobname = 'hybridexec window minutely'}),
	'0', 'a disabled window has no pg_cron job');
HxBatch::submit_keys($node, 'k', 120);
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM hx_task WHERE route = 'batch' AND window_name = 'minutely' AND status = 'queued'}),
	'120', 'its 120 tasks wait for it');
$node->safe_psql('postgres', q{UPDATE hx_window SET enabled = true WHERE name = 'minutely'});
is( $node->safe_psql('postgres', q{
		SELECT schedule || ' | ' || command || ' | ' || active FROM cron.job
		 WHERE jobname = 'hybridexec window minutely'}),
	q{* * * * * | SELECT public.hx_run_window('minutely', 'cron') | true},
	'enabled, the window has its pg_cron job');

ok( $node->poll_query_until('postgres', q{
		SELECT EXISTS (SELECT 1 FROM hx_window_run
						WHERE window_name = 'minutely' AND started_by = 'cron' AND status = 'done')}),
	'pg_cron fired the window and its run ended');
my $run = $node->safe_psql('postgres',
	q{SELECT min(id) FROM hx_window_run WHERE window_name = 'minutely' AND started_by = 'cron'});
is(HxBatch::run_row($node, $run, 'status, processed, failed, chunks'), 'done|120|0|3',
	'the cron-started run processed the 120 tasks in 3 chunks');
HxBatch::check_batch_exactly_once($node, 'k', 120, 'cron-started run');
is( $node->safe_psql('postgres', q{
		SELECT d.status || ' ' || d.return_message FROM cron.job_run_details d JOIN cron.job j USING (jobid)
		 WHERE j.jobname = 'hybridexec window minutely'
		 ORDER BY d.start_time LIMIT 1}),
	'succeeded SELECT 1', "pg_cron's (first) job run succeeded, its SELECT returned a row (the run id)");
is( $node->safe_psql('postgres', qq{
		SELECT (d.end_time <= r.finished_at)::text FROM cron.job_run_details d JOIN cron.job j USING (jobid),
			   hx_window_run r
		 WHERE j.jobname = 'hybridexec window minutely' AND r.id = $run AND d.status = 'succeeded'
		 ORDER BY d.start_time LIMIT 1}),
	'true', "pg_cron's session was done before the run finished (the run is in a batch worker)");

$node->safe_psql('postgres', q{UPDATE hx_window SET enabled = false WHERE name = 'minutely'});
is( $node->safe_psql('postgres',
		q{SELECT count(*) FROM cron.job WHERE jobname = 'hybridexec window minutely'}),
	'0', 'disabling the window removes its job');

$node->stop;
done_testing();
