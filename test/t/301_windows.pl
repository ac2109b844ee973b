# 301_windows.pl - a batch window at work, with a batch handler.
#
#   1. A window processes 30,000 tasks of one type (and 2,000 of another)
#      in a dynamic batch worker: hx_run_window() returns at once, every
#      task ends done with its result, every key's effect exists exactly
#      once, one checkpoint per chunk, the two types each in their own
#      chunks, kept together; the run ends 'done' with its counters right.
#   2. Stream latency while that big window runs: stream tasks submitted
#      during the run all finish; their latency (submit -> finished_at),
#      p50 and max, is printed (no threshold: timing is the benchmark's).
#   3. One raising task in a chunk fails alone (the others are done once,
#      its effect is rolled back); it is retried in the next run only
#      (deferred retry), then dead after max_attempts, and not taken again.
#   4. A batch handler returning one result too few is a clear error, not
#      silent data loss: the call's effects roll back, the chunk is isolated,
#      the good tasks are done once and the short one fails with the counts.
#   5. max_duration: a slow window stops at a chunk boundary, 'overran',
#      with the rest of its tasks still queued and never claimed; the next
#      run processes them.
#   6. An external task that failed in a run does not keep the run open
#      until max_duration: it waits for the next run.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('windows');
HxTest::setup_keyed($node);
HxBatch::setup_batch_keyed($node, max_attempts => 2);
HxBatch::setup_batch_keyed($node, max_attempts => 2, type => 'bk2');
ok(HxTest::wait_workers($node, 2), 'two stream workers');

# --- 1 and 2. 32,000 tasks in one run, stream tasks beside it -------------
# interleave the two types' ids: 'bk' keys a1..a30000, 'bk2' keys b1..b2000
HxBatch::submit_keys($node, 'a', 15000);
HxBatch::submit_keys($node, 'b', 2000, type => 'bk2');
HxBatch::submit_keys($node, 'a', 15000, first => 15001);
is( $node->safe_psql('postgres',
		"SELECT count(*) || ' ' || string_agg(DISTINCT window_name || '/' || route || '/' || status, ',') FROM hx_task WHERE task_type IN ('bk', 'bk2')"),
	'32000 nightly/batch/queued', 'tasks with no SLA from the background wait in the nightly window');

my $run = HxBatch::run_window($node, 'nightly');
like($run, qr/^\d+$/, "hx_run_window('nightly') returned run $run at once");

# Stream traffic while the window runs: one task every 10 ms from its own
# session (each its own transaction), until the run has ended.
my $submitter = $node->background_psql('postgres');
my ($i, $during) = (0, 0);
while ($i < 3000)
{
	$i++;
	my $out = $submitter->query_safe(
		"SELECT hx_submit('keyed', jsonb_build_object('k', 'lat-$i'), origin => 'user') IS NOT NULL, "
		  . "(SELECT status FROM hx_window_run WHERE id = $run)");
	last unless $out =~ /\|(starting|running)$/;
	$during++;
	usleep(10_000);
}
$submitter->quit;
cmp_ok($during, '>=', 1, "$during stream tasks were submitted while the window ran");

HxBatch::wait_run($node, $run, 'big window');
is(HxBatch::run_row($node, $run, 'window_name, status, started_by, processed, failed, chunks, resumes, overran, last_error'),
	"nightly|done|manual|32000|0|32|0|false|-", 'the run is done: 32,000 processed in 32 chunks, no failure');
is( $node->safe_psql('postgres', qq{
		SELECT (r.worker_pid IS NOT NULL AND r.worker_pid <> pg_backend_pid())::text || ' '
			   || (r.started_at >= r.requested_at AND r.finished_at >= r.started_at)::text
		  FROM hx_window_run r WHERE r.id = $run}),
	'true true', 'a background worker ran it, times in order');
HxBatch::check_batch_exactly_once($node, 'a', 30000, 'big window, type bk');
HxBatch::check_batch_exactly_once($node, 'b', 2000, 'big window, type bk2');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE state = 'committed' AND task_ids IS NULL
											AND processed = 1000 AND failed = 0
											AND committed_at >= started_at)
			   || ' ' || min(chunk) || '-' || max(chunk)
		  FROM hx_checkpoint WHERE run_id = $run}),
	'32 32 1-32', 'one committed checkpoint per chunk of 1000, numbered 1-32');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(task_type || ':' || n, ' ' ORDER BY first_chunk)
		  FROM (SELECT task_type, count(*) AS n, min(chunk) AS first_chunk,
					   max(chunk) - min(chunk) + 1 AS span
				  FROM hx_checkpoint WHERE run_id = $run GROUP BY task_type
				HAVING max(chunk) - min(chunk) + 1 = count(*)) s}),
	'bk:30 bk2:2', 'each type in its own chunks, one type after the other (handlers stay warm)');
is( $node->safe_psql('postgres', qq{
		SELECT count(DISTINCT s.xid) || ' ' || count(DISTINCT (s.xid, t.task_type))
		  FROM bseen s JOIN hx_task t ON t.id = s.task_id WHERE t.run_id = $run}),
	'32 32', 'the handler ran in 32 transactions, each for one type only');

# the stream tasks: all finished while or after the window ran
HxTest::wait_finished($node, 'lat-', 'stream tasks during the window');
is( $node->safe_psql('postgres',
		"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE payload->>'k' LIKE 'lat-%'"),
	"$i/$i", 'every stream task submitted during the window is done');
my $lat = $node->safe_psql('postgres', qq{
	SELECT count(*) || ' tasks, p50 '
		   || round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms))::numeric, 1)
		   || ' ms, p95 ' || round((percentile_cont(0.95) WITHIN GROUP (ORDER BY ms))::numeric, 1)
		   || ' ms, max ' || round(max(ms)::numeric, 1) || ' ms'
	  FROM (SELECT extract(epoch FROM t.finished_at - t.submitted_at) * 1000 AS ms
			  FROM hx_task t, hx_window_run r
			 WHERE r.id = $run AND t.payload->>'k' LIKE 'lat-%'
			   AND t.submitted_at BETWEEN r.started_at AND r.finished_at) s});
diag("stream latency (submit -> finished_at) while 32,000 batch tasks ran: $lat");
diag('batch run: ' . $node->safe_psql('postgres', qq{
	SELECT processed || ' tasks in ' || round(extract(epoch FROM finished_at - started_at)::numeric, 2)
		   || ' s = ' || round(processed / extract(epoch FROM finished_at - started_at)) || ' tasks/s'
	  FROM hx_window_run WHERE id = $run}));

# --- 3. one raising task in a chunk --------------------------------------
HxBatch::submit_keys($node, 'f', 20, extra => { 5 => '{"fail": true}' });
my $bad = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE payload->>'k' = 'f5'");
$run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'window with a failing task');
is(HxBatch::run_row($node, $run, 'status, processed, failed, chunks'),
	'done|19|1|1', 'one chunk: 19 done, 1 failed, the run itself done');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || run_id || ' ' || last_error FROM hx_task WHERE id = $bad"),
	"failed 1 $run bkeyed failed for f5",
	'the raising task failed once in this run, and was not retried within it');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attempt || ':' || sqlstate || ':' || message, ',') FROM hx_error WHERE task_id = $bad"),
	'1:P0001:bkeyed failed for f5', 'its error is in hx_error');
is($node->safe_psql('postgres', "SELECT count(*) FROM bseen WHERE k = 'f5'"),
	'0', 'its effect was rolled back');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE t.status = 'done' AND t.attempts = 1) || '/' || count(*)
		  FROM hx_task t WHERE t.payload->>'k' LIKE 'f%' AND t.id <> $bad}),
	'19/19', 'the good tasks of its chunk are done, at their first attempt');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM bseen WHERE k LIKE 'f%'"),
	'19/19', 'their effects exist exactly once (the failed chunk call was undone)');

$run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'the next window');
is(HxBatch::run_row($node, $run, 'status, processed, failed'),
	'done|0|1', 'the next run retried it and it failed again');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts || ' ' || (finished_at IS NOT NULL)::text FROM hx_task WHERE id = $bad"),
	'dead 2 true', 'dead after max_attempts = 2');
$run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'a window after that');
is(HxBatch::run_row($node, $run, 'status, processed, failed, chunks'),
	'done|0|0|0', 'a dead task is not taken again');

# --- 4. a result array of the wrong length -------------------------------
# The short call raises inside the handler's subtransaction, so its effects
# roll back; then the chunk is isolated like any failing chunk: the nine
# good tasks are done, the short one fails alone with the counts named.
HxBatch::submit_keys($node, 's', 10, extra => { 3 => '{"short": true}' });
my $short = $node->safe_psql('postgres', "SELECT id FROM hx_task WHERE payload->>'k' = 's3'");
$run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'window with a short result');
is(HxBatch::run_row($node, $run, 'status, processed, failed'),
	'done|9|1', 'the chunk was isolated: nine done, the short one failed');
is( $node->safe_psql('postgres', qq{
		SELECT status || ' ' || attempts || ' ' || (result IS NULL)::text || ' ' || last_error
		  FROM hx_task WHERE id = $short}),
	'failed 1 true batch handler of "bk" returned no one-dimensional array of results for 1 payload(s)',
	'the short task (its call returned NULL) failed with a clear error, and no result');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || string_agg(DISTINCT sqlstate || ' ' || hint, ',')
		  FROM hx_error WHERE task_id = $short}),
	q{1 2202E A batch handler must return one result per payload, in the same order; the call's effects were rolled back.},
	'hx_error has its row, with a hint');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE status = 'done' AND attempts = 1 AND result->>'k' = payload->>'k')
		  FROM hx_task WHERE payload->>'k' LIKE 's%' AND id <> $short}),
	'9', 'the nine good tasks are done with their result, at their first attempt');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || '/' || count(DISTINCT k) || ' ' || count(*) FILTER (WHERE k = 's3')
		  FROM bseen WHERE k LIKE 's%'}),
	'9/9 0', 'the effects of the short calls were rolled back: each good key once, none for s3');

# --- 5. max_duration ------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, max_duration, chunk_size)
	VALUES ('slow', '0 3 * * *', '500 milliseconds', 5);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bk2-to-slow', 1, 'bk2', 'batch', 'slow');
});
# 50 tasks, chunks of 5 that each sleep 0.2 s: 2 s of work for 0.5 s
HxBatch::submit_keys($node, 'm', 50, type => 'bk2',
	extra => { map { $_ => '{"sleep": 0.2}' } 1 .. 50 });
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'm%' AND window_name = 'slow'"),
	'50', 'the rule routes them to window slow');
$run = HxBatch::run_window($node, 'slow');
HxBatch::wait_run($node, $run, 'slow window');
my ($status, $overran, $processed, $chunks) =
  split /\|/, HxBatch::run_row($node, $run, 'status, overran, processed, chunks');
is("$status $overran", 'overran true', 'the run stopped at max_duration: overran');
ok($chunks >= 1 && $chunks < 10, "it stopped at a chunk boundary after $chunks of 10 chunks");
is($processed, 5 * $chunks, 'it processed whole chunks only');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE status = 'done') || ' '
			   || count(*) FILTER (WHERE status = 'queued' AND attempts = 0 AND run_id IS NULL)
		  FROM hx_task WHERE payload->>'k' LIKE 'm%'}),
	$processed . ' ' . (50 - $processed), 'the rest is still queued, never claimed');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM hx_checkpoint WHERE run_id = $run AND state <> 'committed'}),
	'0', 'no chunk was left half done');
$node->safe_psql('postgres', "UPDATE hx_window SET max_duration = '1 hour' WHERE name = 'slow'");
$run = HxBatch::run_window($node, 'slow');
HxBatch::wait_run($node, $run, 'slow window again');
is(HxBatch::run_row($node, $run, 'status, overran, processed'),
	'done|false|' . (50 - $processed), 'the next run took the leftovers');
HxBatch::check_batch_exactly_once($node, 'm', 50, 'slow window over two runs');

# --- 6. an external task that fails in the run does not hold it open --------
# A failed batch task waits for the next run (deferred retry), so once the
# only external task of the window has failed, the run has nothing left to
# wait for and ends, long before its max_duration of an hour.
$node->safe_psql('postgres', q{
	SELECT hx_register('ext', max_attempts => 3);
	INSERT INTO hx_window (name, schedule, max_duration, chunk_size)
	VALUES ('extwin', '0 4 * * *', '1 hour', 10);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('ext-to-extwin', 1, 'ext', 'batch', 'extwin');
});
my $ext = $node->safe_psql('postgres', q{SELECT hx_submit('ext', '{"k": "x1"}')});
$run = HxBatch::run_window($node, 'extwin');
ok( $node->poll_query_until('postgres', qq{SELECT status = 'running' FROM hx_window_run WHERE id = $run}),
	'the window with an external task is open');
my ($claimed, $token) = split /\|/, $node->safe_psql('postgres',
	q{SELECT id || '|' || lease_token FROM hx_claim('tap-executor', route => 'batch')});
is($claimed, $ext, 'an executor claimed the external task while the window was open');
is($node->safe_psql('postgres', "SELECT hx_fail($ext, '$token', 'model refused')"),
	'failed', 'and failed it (to be retried in the next run)');
HxBatch::wait_run($node, $run, 'window whose external task failed');
is(HxBatch::run_row($node, $run, 'status, overran'), 'done|false',
	'the run ended done without waiting for max_duration');
is( $node->safe_psql('postgres', "SELECT status || ' ' || attempts || ' ' || run_id FROM hx_task WHERE id = $ext"),
	"failed 1 $run", 'the task waits for the next run');

$node->stop;
done_testing();
