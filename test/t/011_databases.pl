# 011_databases.pl - one server, many databases: the launcher serves every
# database that has the extension.
#
#   1. Three databases with the extension (postgres, db_a, db_b) each get a
#      scheduler and their share of hybridexec.stream_workers (6: two
#      each); hx_databases() shows them.
#   2. Each database's stream tasks and a window run of its batch tasks
#      end done exactly once, by workers connected to that database (task
#      ids overlap between databases: wake-ups, claims and runs are kept
#      apart).
#   3. A database created after start, with the extension, is served, and
#      the shares are redrawn within the six workers (2, 2, 1, 1).
#   4. DROP DATABASE, RENAME or TEMPLATE by a role that does not own the
#      database is refused and stops none of its workers; DROP DATABASE by
#      its owner succeeds at once (its workers make way) and the launcher
#      forgets it; DROP EXTENSION stops a
#      database's workers and gives its share to the others; CREATE
#      EXTENSION brings them back; hybridexec.database_name pins one.
#   5. Batch workers are shared fairly: a run of db_a alone takes all three
#      it asks for; runs of db_b and postgres that asked meanwhile wait, and
#      then get one each (their share), not every free worker.
#   6. kill -9 of a stream worker of db_b in the middle of a task: after
#      the server's crash restart the launcher serves all three databases
#      again, the task ends done exactly once, and each database's new
#      tasks run.
#   7. A flood of stream tasks in db_a does not hold back postgres's:
#      its tasks finish while db_a's backlog is still there.  Their
#      latency (submit -> finished_at), p50, with and without the flood, is
#      printed (no threshold: timing is the benchmark's).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('databases',
	'hybridexec.stream_workers' => 6,
	'hybridexec.batch_workers' => 3,
	'max_worker_processes' => 24,
	'restart_after_crash' => 'on');

# the same handlers in every database: keyed(jsonb) for stream tasks,
# bkeyed(jsonb[]) for window runs; both write their key and task id
sub setup_db
{
	my ($db) = @_;
	$node->safe_psql($db, q{
		CREATE EXTENSION IF NOT EXISTS hybridexec;
		CREATE TABLE IF NOT EXISTS seen (k text, task_id bigint, db text DEFAULT current_database());
		CREATE OR REPLACE FUNCTION keyed(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO seen (k, task_id)
			SELECT p->>'k', t.id FROM hx_task t
			 WHERE t.worker_pid = pg_backend_pid() AND t.status = 'running'
			   AND t.payload->>'k' = p->>'k';
			IF p ? 'sleep' THEN
				PERFORM pg_sleep((p->>'sleep')::float8);
			END IF;
			IF p ? 'gate' THEN
				PERFORM pg_advisory_xact_lock_shared((p->>'gate')::bigint);	-- held by the test
			END IF;
			RETURN jsonb_build_object('k', p->>'k', 'db', current_database());
		END
		$$;
		CREATE OR REPLACE FUNCTION bkeyed(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
		DECLARE
			g bigint := (SELECT max((x->>'gate')::bigint) FROM unnest(ps) x);
		BEGIN
			IF g IS NOT NULL THEN
				PERFORM pg_advisory_xact_lock_shared(g);	-- held by the test
			END IF;
			INSERT INTO seen (k, task_id)
			SELECT x->>'k', t.id FROM unnest(ps) x
			  JOIN hx_task t ON t.payload->>'k' = x->>'k' AND t.status IN ('queued', 'failed');
			RETURN (SELECT array_agg(jsonb_build_object('k', x->>'k', 'db', current_database()) ORDER BY o)
					  FROM unnest(ps) WITH ORDINALITY u(x, o));
		END
		$$;
		SELECT hx_register('keyed', 'keyed(jsonb)');
		SELECT hx_register('bk', batch_handler => 'bkeyed(jsonb[])');
	});
	return;
}

# polls until the launcher's view of database $db is $want (a row of
# hx_databases(): state share workers)
sub wait_db
{
	my ($db, $want, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $q = "SELECT coalesce((SELECT state || ' ' || stream_share || ' ' || stream_workers "
	  . "FROM hx_databases() WHERE database = '$db'), 'none')";
	ok($node->poll_query_until('postgres', $q, $want), $what)
	  or diag('hx_databases(): ' . $node->safe_psql('postgres', 'SELECT * FROM hx_databases()'));
	return;
}

# every task of prefix in $db done once, its effect there once, written
# by a worker of that database
sub check_db
{
	my ($db, $prefix, $n, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $node->poll_query_until($db,
			"SELECT count(*) = 0 FROM hx_task WHERE payload->>'k' LIKE '$prefix%' AND status <> 'done'"),
		"$what: every task finished");
	is( $node->safe_psql($db, qq{
			SELECT count(*) FILTER (WHERE t.result->>'db' = '$db'
									  AND (SELECT count(*) FROM seen s WHERE s.k = t.payload->>'k' AND s.task_id = t.id) = 1)
				   || '/' || count(*) || '/' || (SELECT count(*) FROM seen WHERE k LIKE '$prefix%')
			  FROM hx_task t WHERE t.payload->>'k' LIKE '$prefix%' AND t.status = 'done'}),
		"$n/$n/$n", "$what: done exactly once, in $db");
	return;
}

# --- 1. three databases ------------------------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db_a');
$node->safe_psql('postgres', 'CREATE DATABASE db_b');
setup_db($_) for qw(postgres db_a db_b);
wait_db($_, 'served 2 2', "$_ is served by two stream workers") for qw(postgres db_a db_b);
is( $node->safe_psql('postgres', q{
		SELECT string_agg(datname || ':' || n, ' ' ORDER BY datname) FROM (
			SELECT datname, count(*) AS n FROM pg_stat_activity
			 WHERE backend_type = 'hybridexec scheduler' GROUP BY datname) s}),
	'db_a:1 db_b:1 postgres:1', 'one scheduler per database');
is($node->safe_psql('db_a', 'SELECT count(*) FROM hx_workers()'), '2',
	"hx_workers() in db_a lists db_a's two workers");

# --- 2. stream tasks and a window run in each --------------------------------
for my $db (qw(postgres db_a db_b))
{
	$node->safe_psql($db, qq{
		SELECT count(hx_submit('keyed', jsonb_build_object('k', 's' || g), origin => 'user'))
		  FROM generate_series(1, 300) g;
		SELECT count(hx_submit('bk', jsonb_build_object('k', 'b' || g)))
		  FROM generate_series(1, 2000) g;});
}
# ids overlap: the same ids name different tasks in each database
is( $node->safe_psql('db_b', q{SELECT min(id) FROM hx_task}),
	$node->safe_psql('db_a', q{SELECT min(id) FROM hx_task}), 'task ids overlap between databases');
my %run;
$run{$_} = $node->safe_psql($_, "SELECT hx_run_window('nightly')") for qw(postgres db_a db_b);
for my $db (qw(postgres db_a db_b))
{
	check_db($db, 's', 300, "stream tasks of $db");
	ok( $node->poll_query_until($db,
			"SELECT status NOT IN ('starting', 'running') FROM hx_window_run WHERE id = $run{$db}"),
		"the window run of $db ended");
	is($node->safe_psql($db, "SELECT status FROM hx_window_run WHERE id = $run{$db}"), 'done',
		"the window run of $db is done");
	check_db($db, 'b', 2000, "window tasks of $db");
}

# --- 3. a database created after start ---------------------------------------
$node->safe_psql('postgres', 'CREATE DATABASE db_c');
setup_db('db_c');
wait_db('db_c', 'served 1 1', 'a database created after start is served (one worker)');
wait_db('postgres', 'served 2 2', 'the oldest databases keep two (6 workers, 4 databases)');
wait_db('db_a', 'served 2 2', 'db_a keeps two');
wait_db('db_b', 'served 1 1', 'db_b gives one back');
$node->safe_psql('db_c', q{SELECT hx_submit('keyed', '{"k": "c1"}', origin => 'user')});
check_db('db_c', 'c', 1, 'the new database');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) <= 6 FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'"),
	'never more than hybridexec.stream_workers in all');

# --- 4. DROP DATABASE, DROP and CREATE EXTENSION ------------------------------
# a role that does not own db_c cannot stop its workers by asking to drop it
$node->safe_psql('postgres', 'CREATE ROLE mallory LOGIN CREATEDB');
my $pids_c = $node->safe_psql('postgres',
	"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE datname = 'db_c' AND backend_type LIKE 'hybridexec%'");
for my $stmt ('DROP DATABASE db_c', 'ALTER DATABASE db_c RENAME TO db_x',
	'CREATE DATABASE copy_c TEMPLATE db_c')
{
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE mallory; $stmt");
	like($err, qr/must be owner|permission denied/, "$stmt by a role that does not own db_c is refused");
}
is( $node->safe_psql('db_c', q{SELECT state FROM hx_databases() WHERE database = 'db_c'}),
	'served', '... and db_c stays served, not paused');
is( $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity WHERE datname = 'db_c' AND backend_type LIKE 'hybridexec%'"),
	$pids_c, '... with the same workers (none was stopped)');
$node->safe_psql('postgres', 'DROP DATABASE db_c');
pass('DROP DATABASE of a served database succeeds');
wait_db('db_c', 'none', 'the launcher forgets a dropped database');
wait_db('db_b', 'served 2 2', 'its share goes back to the others');

$node->safe_psql('db_b', 'DROP EXTENSION hybridexec CASCADE');
wait_db('db_b', 'absent 0 0', 'DROP EXTENSION: db_b is no longer served, its workers gone');
wait_db('postgres', 'served 3 3', 'the others get its share');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = 'db_b' AND backend_type LIKE 'hybridexec%'"),
	'no hybridexec worker is connected to db_b');
setup_db('db_b');
wait_db('db_b', 'served 2 2', 'CREATE EXTENSION again: db_b is served again');
$node->safe_psql('db_b', q{SELECT hx_submit('keyed', '{"k": "again"}', origin => 'user')});
check_db('db_b', 'again', 1, 'db_b after CREATE EXTENSION');

# --- 5. batch workers shared fairly ---------------------------------------------
# runs whose handler waits at a gate (an advisory lock of that database
# the test holds) keep their batch workers until the test lets them go
sub gated_run
{
	my ($db, $prefix, $n, $gate) = @_;
	$node->safe_psql($db, qq{
		SELECT count(hx_submit('bk', jsonb_build_object('k', '$prefix' || g, 'gate', $gate)))
		  FROM generate_series(1, $n) g});
	my $run = $node->safe_psql($db, "SELECT hx_run_window('nightly')");
	ok( $node->poll_query_until($db,
			"SELECT count(*) >= 1 FROM hx_batch_workers() WHERE run_id = $run AND pid IS NOT NULL"),
		"$db: run $run has started its batch workers");
	return $run;
}
sub finish_run
{
	my ($db, $run, $prefix, $n) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $node->poll_query_until($db,
			"SELECT status = 'done' FROM hx_window_run WHERE id = $run"), "$db: run $run done");
	check_db($db, $prefix, $n, "$db: gated run $run");
	return;
}
$node->safe_psql($_, q{UPDATE hx_window SET parallel = 3, chunk_size = 10 WHERE name = 'nightly'})
  for qw(postgres db_a db_b);
my %gate;
for my $db (qw(postgres db_a db_b))
{
	$gate{$db} = $node->background_psql($db);
	$gate{$db}->query_safe('SELECT pg_advisory_lock(77)');
}
sub workers_of
{
	my ($db, $run) = @_;
	return $node->safe_psql($db, "SELECT count(*) FROM hx_batch_workers() WHERE run_id = $run");
}
# db_a alone: its run takes all three, though it is one of three databases
my %brun;
$brun{db_a} = gated_run('db_a', 'g-', 60, 77);
is(workers_of('db_a', $brun{db_a}), '3', 'with no other database waiting, a run takes every batch worker');
# db_b and postgres ask while db_a holds them all: their runs wait
for my $db (qw(db_b postgres))
{
	$node->safe_psql($db, q{
		SELECT count(hx_submit('bk', jsonb_build_object('k', 'g-' || g, 'gate', 77))) FROM generate_series(1, 30) g});
	$brun{$db} = $node->safe_psql($db, q{SELECT hx_run_window('nightly')});
	is(workers_of($db, $brun{$db}), '0', "$db: its run waits while every batch worker is busy");
}
# db_a's run ends: its schedulers relaunch the waiting runs, and each of
# the two takes its share (one of three), not every free worker
$gate{db_a}->query_safe('SELECT pg_advisory_unlock(77)');
finish_run('db_a', $brun{db_a}, 'g-', 60);
ok( $node->poll_query_until('postgres', qq{
		SELECT (SELECT count(*) FROM hx_databases() WHERE database IN ('db_b', 'postgres') AND batch_workers >= 1) = 2}),
	'both waiting runs got batch workers');
is(workers_of($_, $brun{$_}), '1', "$_: its run has one batch worker, its share, while the other database waits too")
  for qw(db_b postgres);
for my $db (qw(db_b postgres))
{
	$gate{$db}->query_safe('SELECT pg_advisory_unlock(77)');
	finish_run($db, $brun{$db}, 'g-', 30);
}
$_->quit for values %gate;

# --- 6. a stream worker of db_b killed in the middle of a task ---------------
my $gate = $node->background_psql('db_b', on_error_stop => 0);
$gate->query_safe('SELECT pg_advisory_lock(91)');
$node->safe_psql('db_b', q{SELECT hx_submit('keyed', '{"k": "kill-1", "gate": 91}', origin => 'user')});
ok( $node->poll_query_until('db_b',
		q{SELECT status = 'running' FROM hx_task WHERE payload->>'k' = 'kill-1'}),
	"db_b's worker is running the gated task");
my $victim = $node->safe_psql('db_b', q{SELECT worker_pid FROM hx_task WHERE payload->>'k' = 'kill-1'});
kill 'KILL', $victim;
eval { $gate->quit };	# the crash restart ended its session
ok( $node->poll_query_until('postgres',
		q{SELECT count(*) = 3 FROM hx_databases() WHERE state = 'served' AND stream_workers = 2}),
	'after the crash restart the launcher serves the three databases again, two workers each')
  or diag($node->safe_psql('postgres', 'SELECT * FROM hx_databases()'));
check_db('db_b', 'kill-', 1, 'the task whose worker was killed');
for my $db (qw(postgres db_a db_b))
{
	$node->safe_psql($db, q{
		SELECT count(hx_submit('keyed', jsonb_build_object('k', 'after-' || g), origin => 'user'))
		  FROM generate_series(1, 100) g});
}
check_db($_, 'after-', 100, "after the crash, $_") for qw(postgres db_a db_b);

# --- 7. a flood in db_a, latency in postgres ----------------------------------
# p50 of submit -> finished_at of n single tasks in postgres, one at a time
sub latency_p50
{
	my ($prefix, $n) = @_;
	my $s = $node->background_psql('postgres');
	for my $i (1 .. $n)
	{
		$s->query_safe(qq{SELECT hx_submit('keyed', '{"k": "$prefix$i"}', origin => 'user')});
		$s->query_safe(qq{SELECT hx_wait((SELECT id FROM hx_task WHERE payload->>'k' = '$prefix$i'), '30 seconds')});
	}
	$s->quit;
	return $node->safe_psql('postgres', qq{
		SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - submitted_at)) * 1000)::numeric, 2)
		  FROM hx_task WHERE payload->>'k' LIKE '$prefix%'});
}
my $quiet = latency_p50('q', 50);

# 6,000 tasks of about 1 ms each: db_a's two workers need seconds
$node->safe_psql('db_a', q{
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'f' || g, 'sleep', 0.001), origin => 'user'))
	  FROM generate_series(1, 6000) g});
my $busy = latency_p50('l', 50);
my $left = $node->safe_psql('db_a',
	"SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'f%' AND status <> 'done'");
cmp_ok($left, '>', 0, "postgres's 50 tasks finished while db_a still had $left of its flood to run");
note("stream latency p50 in postgres: $quiet ms quiet, $busy ms during db_a's flood");
diag("stream latency p50 in postgres: $quiet ms quiet, $busy ms during db_a's flood of 6,000 tasks");
check_db('db_a', 'f', 6000, "db_a's flood");

# --- pinned: hybridexec.database_name serves one database only -------------------
$node->append_conf('postgresql.conf', "hybridexec.database_name = 'db_a'");
$node->restart;
wait_db('db_a', 'served 6 6', 'hybridexec.database_name pins the workers to db_a');
wait_db('postgres', 'none', 'postgres is not watched then');
like( $node->safe_psql('postgres', q{SELECT string_agg(problem || ': ' || detail, '; ') FROM hx_health()}),
	qr/pins the workers to that database/, "hx_health() in postgres says why nothing runs there");

done_testing();
