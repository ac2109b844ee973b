# 311_parallel_runs.pl - one window run shared by several batch workers.
#
# Proves that a window with parallel = 2 is run by two batch workers, each
# taking chunks in turn along the run order (chunks of both parts are
# committed, none overlaps another), that every
# task is done exactly once, that the run ends once, done, when its last
# worker finishes; and that after an immediate shutdown in the middle of a
# parallel run, the run resumes by itself with both workers and still
# does every task exactly once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('parallel', 'hybridexec.scheduler_naptime' => '100ms',
	'hybridexec.batch_workers' => 4);

$node->safe_psql('postgres', q{
	CREATE TABLE done_keys (k text, run bigint);
	-- slow enough (0.2 ms a task) that a shutdown lands mid-run
	CREATE FUNCTION keys_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO done_keys (k) SELECT p->>'k' FROM unnest(ps) p;
		PERFORM pg_sleep(0.0002 * cardinality(ps));
		RETURN ARRAY(SELECT jsonb_build_object('k', p->>'k') FROM unnest(ps) p);
	END $$;
	SELECT hx_register('par', batch_handler => 'keys_batch(jsonb[])');
	INSERT INTO hx_window (name, schedule, chunk_size, parallel) VALUES ('par', '0 0 1 1 *', 200, 2);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('par', 1, 'par', 'batch', 'par');
});

# --- a whole parallel run -------------------------------------------------
$node->safe_psql('postgres',
	q{SELECT count(*) FROM hx_submit_batch('par', ARRAY(SELECT jsonb_build_object('k', 'a' || i) FROM generate_series(1, 4000) i))});
my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('par')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
	'the parallel run ends done');
is($node->safe_psql('postgres', "SELECT parts FROM hx_window_run WHERE id = $run"),
	'2', 'it was handed to two batch workers');
is( $node->safe_psql('postgres',
		"SELECT count(DISTINCT part) FROM hx_checkpoint WHERE run_id = $run AND state = 'committed'"),
	'2', 'both workers committed chunks');
# one type, one priority, no deadline: run order is id order, and the
# workers took their chunks in turn along it - each chunk after the last
# one taken by either, so no two chunks overlap
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM (SELECT last_task_id, lag(last_task_id) OVER (ORDER BY started_at, part) AS prev "
		  . "FROM hx_checkpoint WHERE run_id = $run AND state = 'committed') c WHERE last_task_id <= prev"),
	'0', 'the workers took their chunks in turn along the run order');
is($node->safe_psql('postgres', "SELECT cursor_id = (SELECT max(id) FROM hx_task WHERE payload->>'k' LIKE 'a%') FROM hx_window_run WHERE id = $run"),
	't', 'the run\'s cursor ends at its last task');
is($node->safe_psql('postgres', "SELECT processed FROM hx_window_run WHERE id = $run"),
	'4000', 'the run counted every task once');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM done_keys WHERE k LIKE 'a%'"),
	'4000/4000', 'every task ran exactly once');

# --- an immediate shutdown in the middle of a parallel run ----------------
$node->safe_psql('postgres',
	q{SELECT count(*) FROM hx_submit_batch('par', ARRAY(SELECT jsonb_build_object('k', 'b' || i) FROM generate_series(1, 20000) i))});
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('par')});
ok( $node->poll_query_until('postgres',
		"SELECT count(DISTINCT part) = 2 AND count(*) >= 6 FROM hx_checkpoint "
		  . "WHERE run_id = $run AND state = 'committed'"),
	'both workers are under way');
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
	'the interrupted run resumed by itself and ended done');
is($node->safe_psql('postgres', "SELECT resumes >= 1 FROM hx_window_run WHERE id = $run"),
	't', 'as a resumed run');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE payload->>'k' LIKE 'b%'"),
	'20000/20000', 'every task of the interrupted run is done');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM done_keys WHERE k LIKE 'b%'"),
	'20000/20000', 'and ran exactly once');

$node->stop;
done_testing();
