# 004_no_preload.pl - running without the stream workers.
#
# Proves that: without shared_preload_libraries the extension can still be
# created and hx_classify works, but hx_submit, hx_submit_batch,
# hx_run_window and hx_workers fail with SQLSTATE 55000
# (object_not_in_prerequisite_state), a message saying the library must be
# loaded via shared_preload_libraries and a hint naming it, queuing (and
# recording) nothing; hx_health() reports that no worker runs, with the
# same advice; with hybridexec.stream_workers = 0
# no stream worker runs and stream tasks stay queued.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

# --- no preload --------------------------------------------------------------
my $node = HxTest::new_node('nopreload', shared_preload_libraries => '', create_extension => 0);
is($node->safe_psql('postgres', 'SHOW shared_preload_libraries'), '', 'the library is not preloaded');
my ($ret, $stdout, $stderr) = $node->psql('postgres', 'CREATE EXTENSION hybridexec');
is($ret, 0, 'CREATE EXTENSION works without the preload');
is($stderr, '', 'without a complaint');
is( $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'hybridexec%'"),
	'0', 'no stream worker runs');

$node->safe_psql('postgres', q{
	CREATE FUNCTION noop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
	SELECT hx_register('noop', 'noop(jsonb)');
});
is( $node->safe_psql('postgres',
		q{SELECT route || ' ' || rule_name || ' ' || est_cost FROM hx_classify('noop', origin => 'user')}),
	'stream user-initiated 1.0', 'hx_classify works without the preload');
is( $node->safe_psql('postgres',
		q{SELECT route || ' ' || window_name || ' ' || rule_name FROM hx_classify('noop', sla => '30 minutes')}),
	'batch fast fast-batch', 'for batch routes too');

# each function that needs the workers: SQLSTATE, message and hint
for my $call (
	[ 'hx_submit()', q{SELECT hx_submit('noop', '{}', origin => 'user')} ],
	[ 'hx_submit()', q{SELECT hx_submit('noop', '{}')} ],
	[ 'hx_submit_batch()', q{SELECT hx_submit_batch('noop', ARRAY['{}'::jsonb], origin => 'user')} ],
	[ 'hx_run_window()', q{SELECT hx_run_window('nightly')} ],
	[ 'hx_workers()', q{SELECT * FROM hx_workers()} ])
{
	my ($what, $sql) = @$call;
	($ret, $stdout, $stderr) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, "$sql: fails without the preload");
	like($stderr,
		qr/ERROR:  55000: \Q$what\E needs hybridexec to be loaded via shared_preload_libraries/,
		"$sql: SQLSTATE 55000, message naming shared_preload_libraries");
	like($stderr,
		qr/HINT:  Add hybridexec to shared_preload_libraries in postgresql.conf and restart the server\./,
		"$sql: hint naming shared_preload_libraries");
}

# the condition name, as a PL/pgSQL handler would catch it
is( $node->safe_psql('postgres', q{
		DO $$
		BEGIN
			PERFORM hx_submit('noop', '{}', origin => 'user');
			RAISE NOTICE 'no error';
		EXCEPTION WHEN object_not_in_prerequisite_state THEN
			CREATE TEMP TABLE caught AS SELECT SQLSTATE AS state;
		END $$;
		SELECT state FROM caught}),
	'55000', 'catchable as object_not_in_prerequisite_state');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_task'), '0', 'no task row was created');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_window_run'), '0', 'no window run was recorded');
is( $node->safe_psql('postgres', q{
		SELECT problem || ' | ' || severity || ' | ' || subject FROM hx_health()
		 WHERE problem = 'workers not running'}),
	'workers not running | critical | shared_preload_libraries',
	'hx_health() reports that no worker runs without the preload');
like( $node->safe_psql('postgres', q{SELECT hint FROM hx_health() WHERE problem = 'workers not running'}),
	qr/^Add hybridexec to shared_preload_libraries in postgresql\.conf .*restart the server\.$/,
	'... and says what to do');
$node->stop;

# --- hybridexec.stream_workers = 0 --------------------------------------------
my $none = HxTest::new_node('noworkers', 'hybridexec.stream_workers' => 0);
is($none->safe_psql('postgres', 'SHOW hybridexec.stream_workers'), '0', 'hybridexec.stream_workers = 0');
is( $none->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'"),
	'0', 'no stream worker in pg_stat_activity');
is($none->safe_psql('postgres', 'SELECT count(*) FROM hx_workers()'), '0', 'hx_workers() lists no worker');

$none->safe_psql('postgres', q{
	CREATE FUNCTION noop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
	SELECT hx_register('noop', 'noop(jsonb)');
});
my $id = $none->safe_psql('postgres', q{SELECT hx_submit('noop', '{"x": 1}', origin => 'user')});
is($none->safe_psql('postgres', "SELECT route FROM hx_task WHERE id = $id"), 'stream',
	'hx_submit queues a stream task');
# hx_wait returns the status when its timeout passes; a worker, had there
# been one, would have run the task at once (well within the poll interval)
is($none->safe_psql('postgres', "SELECT hx_wait($id, '1.5 seconds')"), 'queued',
	'the stream task stays queued');
is( $none->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || coalesce(worker_pid::text, '-') || ' ' || (started_at IS NULL) FROM hx_task WHERE id = $id"),
	'queued 0 - true', 'never claimed');
$none->stop;
done_testing();
