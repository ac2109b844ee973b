# 302_window_crash.pl - batch runs survive crashes without losing or
# repeating work.
#
#   1. An immediate shutdown in the middle of a run (a batch-handler type
#      and a per-task-handler type in the same window): after the restart
#      the run resumes by itself (nobody calls hx_run_window again), does
#      not redo committed chunks, and ends done; every key's effect exists
#      exactly once, written by its task's last attempt.
#   2. A task whose batch handler call crashes the whole server (SIGKILL of
#      its backend) in the middle of a chunk: the resumed run isolates the
#      interrupted chunk's tasks, so the crasher costs only its own
#      attempts and ends dead after max_attempts, while its chunk's other
#      tasks are done exactly once.
#   3. Tasks left isolated by a run whose worker was lost before it ran
#      them alone (hx_task.isolated still set, nothing running): the next
#      run runs each of them alone before its chunks.
#   4. The crasher of 2 in a run shared by two workers: the same outcome
#      (the workers take turns at running isolated tasks, so the crash
#      costs no other task an attempt), and no isolated task ever runs in
#      a chunk (of either worker).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('wcrash',
	'hybridexec.scheduler_naptime' => '100ms',
	restart_after_crash => 'on');
HxTest::setup_keyed($node);
HxBatch::setup_batch_keyed($node, max_attempts => 2);
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('crashy', '0 0 1 1 *', 100);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bk-crashy', 1, 'bk', 'batch', 'crashy'),
		   ('keyed-crashy', 2, 'keyed', 'batch', 'crashy');
});

# --- 1. immediate shutdown mid-run ----------------------------------------
# 3,000 batch-handler tasks (each chunk call sleeps 20 ms, so the run takes
# a while) and 300 per-task-handler tasks, in one window
HxBatch::submit_keys($node, 'c', 3000, extra => { map { $_ => '{"sleep": 0.02}' } 1 .. 3000 });
HxBatch::submit_keys($node, 'w', 300, type => 'keyed');
my $run = HxBatch::run_window($node, 'crashy');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) >= 5 FROM hx_checkpoint WHERE run_id = $run AND state = 'committed'"),
	'the run committed some chunks');
my ($before, $done_before) = split /\|/, $node->safe_psql('postgres', qq{
	SELECT (SELECT count(*) FROM hx_checkpoint WHERE run_id = $run AND state = 'committed')
		   || '|' || (SELECT count(*) FROM hx_task WHERE run_id = $run AND status = 'done')});
$node->stop('immediate');
cmp_ok($done_before, '<', 3300, "the shutdown came in the middle of the run ($done_before of 3300 done)");
$node->start;

HxBatch::wait_run($node, $run, 'interrupted run');
is(HxBatch::run_row($node, $run, 'status, processed, failed'), 'done|3300|0',
	'it resumed by itself and ended done, every task counted once');
cmp_ok(HxBatch::run_row($node, $run, 'resumes'), '>=', 1, 'as a resumed run');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(state || ':' || n, ' ' ORDER BY state)
		  FROM (SELECT state, count(*) AS n FROM hx_checkpoint WHERE run_id = $run
				 GROUP BY state HAVING state <> 'committed') s}),
	'recovered:1', 'the chunk in flight at the shutdown is marked recovered, no chunk is left started');
cmp_ok($node->safe_psql('postgres',
		"SELECT count(*) FROM hx_checkpoint WHERE run_id = $run AND state = 'committed'"),
	'>', $before, 'the resumed run went on after the chunks committed before the shutdown');
HxBatch::check_batch_exactly_once($node, 'c', 3000, 'batch handler across the shutdown');
HxTest::check_exactly_once($node, 'w', 300, 'per-task handler across the shutdown');

# --- 2. a task that crashes the server from inside a chunk -----------------
HxBatch::submit_keys($node, 'p', 50, extra => { 17 => '{"crash": true}' });
my $crasher = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE payload->>'k' = 'p17'");
$run = HxBatch::run_window($node, 'crashy');
HxBatch::wait_run($node, $run, 'run with a crashing task');
is(HxBatch::run_row($node, $run, 'status, processed, failed, resumes'), 'done|49|2|3',
	'the run ended done with the 49 other tasks processed and two failed attempts, after three resumes');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || (finished_at IS NOT NULL)::text FROM hx_task WHERE id = $crasher"),
	'dead 2 true', 'the crasher is dead after max_attempts = 2 crashes');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_error WHERE task_id = $crasher"),
	'2', 'each of its lost attempts is booked in hx_error');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'p%' AND id <> $crasher AND status = 'done'"),
	'49', 'the other tasks of its chunk are done');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM bseen WHERE k LIKE 'p%' AND k <> 'p17'"),
	'49/49', 'each of their effects exists exactly once');
is($node->safe_psql('postgres', "SELECT count(*) FROM bseen WHERE k = 'p17'"),
	'0', 'no effect of the crasher survived');

# --- 3. isolated tasks a lost worker did not get to ---------------------------
HxBatch::submit_keys($node, 'i', 20);
is( $node->safe_psql('postgres', q{
		SELECT cardinality(_hybridexec.hx_isolate(array_agg(id)))
		  FROM hx_task WHERE payload->>'k' IN ('i3', 'i11')}),
	'2', 'two waiting tasks are marked isolated, as a lost run leaves them');
$run = HxBatch::run_window($node, 'crashy');
HxBatch::wait_run($node, $run, 'run with isolated tasks');
is(HxBatch::run_row($node, $run, 'status, processed, failed'), 'done|20|0',
	'the run ended done with all 20 tasks');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(b.k || ':' || (SELECT count(*) FROM bseen o WHERE o.xid = b.xid), ' ' ORDER BY b.k)
		  FROM bseen b WHERE b.k IN ('i3', 'i11')}),
	'i11:1 i3:1', 'each isolated task ran alone, in a transaction of its own');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM bseen b WHERE b.k LIKE 'i%'
		   AND (SELECT count(*) FROM bseen o WHERE o.xid = b.xid) = 18}),
	'18', 'the 18 others ran together in one chunk');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'i%' AND (isolated OR status <> 'done')"),
	'0', 'all are done, none is left isolated');

# --- 4. a crashing task in a run shared by two workers ----------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, chunk_size, parallel) VALUES ('crashy2', '0 0 1 1 *', 20, 2);
	UPDATE hx_rule SET window_name = 'crashy2' WHERE name IN ('bk-crashy', 'keyed-crashy');
});
HxBatch::submit_keys($node, 'q', 200, extra => { 77 => '{"crash": true}' });
$crasher = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE payload->>'k' = 'q77'");
$run = HxBatch::run_window($node, 'crashy2');
HxBatch::wait_run($node, $run, 'parallel run with a crashing task');
is(HxBatch::run_row($node, $run, 'status, processed, parts'), 'done|199|2',
	'the parallel run ended done with the 199 other tasks');
is($node->safe_psql('postgres', "SELECT status || ' ' || attempts FROM hx_task WHERE id = $crasher"),
	'dead 2', 'the crasher is dead after max_attempts = 2 crashes');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM bseen WHERE k LIKE 'q%' AND k <> 'q77'"),
	'199/199', 'each other task\'s effect exists exactly once');
# the tasks of the interrupted chunks: their checkpoints, recovered
my $isolated = q{(SELECT i FROM hx_checkpoint c, unnest(c.task_ids) i WHERE c.run_id = } . $run
  . q{ AND c.state = 'recovered' AND i <> } . $crasher . q{)};
ok($node->safe_psql('postgres', "SELECT count(*) FROM $isolated s") > 0,
	'the crashed chunks\' other tasks were isolated');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM hx_task t JOIN bseen b ON b.k = t.payload->>'k'
		 WHERE t.id IN $isolated
		   AND (SELECT count(*) FROM bseen o WHERE o.xid = b.xid) <> 1}),
	'0', 'each of them ran alone, none in a chunk');

$node->stop;
done_testing();
