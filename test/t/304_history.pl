# 304_history.pl - a window run's done tasks leave the queue.
#
#   1. After a run of three chunks (80, 80, 40), every done task is a row of
#      hx_task_history and none is left in hx_task's own heap; each keeps
#      every column it was submitted with, and has its result, attempt,
#      run and times; the handler's effects exist exactly once.
#   2. The ledger books each moved task once, done, in its run; a row put
#      into hx_task_history any other way (as a restore loads it) books
#      nothing, and an update through hx_task that finishes nothing books
#      nothing either.  A chunk's bookings are hx_cost_chunk rows (a
#      few, not one per task) that hx_cost reads as one row per attempt,
#      with each task's own columns and times, unique booking numbers,
#      row security and corrections as for any booking.
#   3. Row security holds through hx_task: each submitter sees her own
#      moved tasks and not the other's; hx_task_history itself is closed
#      to them.
#   4. A moved task's dedupe key is free again; retention deletes moved
#      tasks like any finished task.
#   5. A chunk's tasks are read when it is picked, without locks: a task
#      cancelled while its chunk's handler runs is left out when the chunk
#      books, the chunk runs again without it, and nothing of the first
#      try stays (no effect, no result, no booking of the cancelled task).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('history');
HxBatch::setup_batch_keyed($node);
$node->safe_psql('postgres', q{
	CREATE ROLE alice LOGIN IN ROLE hybridexec_submitter;
	CREATE ROLE bob LOGIN IN ROLE hybridexec_submitter;
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('w304', '0 3 1 1 *', 80);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bk-w304', 1, 'bk', 'batch', 'w304');
	SET ROLE alice;
	SELECT count(hx_submit('bk', jsonb_build_object('k', 'a' || g), department => 'd-alice',
						   priority => g % 3, dedupe_key => 'a' || g,
						   sla => CASE WHEN g % 2 = 0 THEN interval '7 days' END))
	  FROM generate_series(1, 150) g;
	SET ROLE bob;
	SELECT count(hx_submit('bk', jsonb_build_object('k', 'b' || g), department => 'd-bob'))
	  FROM generate_series(1, 50) g;
	RESET ROLE;
});

# what every task was submitted with
my $kept = 'id, task_type, payload, route, window_name, rule_name, reason, origin, priority, '
  . 'sla, deadline, department, dedupe_key, submitted_at, run_after, submitted_by, isolated';
$node->safe_psql('postgres', "CREATE TABLE submitted AS SELECT $kept FROM hx_task WHERE task_type = 'bk'");
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_task WHERE window_name = 'w304' AND status = 'queued'}),
	'200', '200 tasks wait for window w304');

# --- 1. the run moves its done tasks --------------------------------------
my $run = HxBatch::run_window($node, 'w304');
HxBatch::wait_run($node, $run, 'a run of three chunks (80, 80, 40)');
is(HxBatch::run_row($node, $run, 'status, processed, failed'), 'done|200|0', 'the run did every task');
is($node->safe_psql('postgres', q{SELECT count(*) FROM ONLY hx_task WHERE task_type = 'bk'}),
	'0', "no task is left in hx_task's own heap");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM hx_task_history
		 WHERE task_type = 'bk' AND status = 'done' AND attempts = 1 AND run_id = $run
		   AND result = jsonb_build_object('k', payload->>'k') AND worker_pid IS NOT NULL
		   AND started_at <= finished_at AND finished_at <= now() AND lease_token IS NULL}),
	'200', 'every task is in hx_task_history, done once in the run, with its result and times');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM hx_task WHERE task_type = 'bk' AND status = 'done'}),
	'200', 'hx_task shows them');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM (SELECT $kept FROM submitted EXCEPT SELECT $kept FROM hx_task_history) x}),
	'0', 'each kept every column it was submitted with');
HxBatch::check_batch_exactly_once($node, 'a', 150, "alice's tasks");
HxBatch::check_batch_exactly_once($node, 'b', 50, "bob's tasks");

# --- 2. the books ----------------------------------------------------------
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || count(DISTINCT task_id) || ' ' || string_agg(DISTINCT outcome || '/' || run_id, ',')
		  FROM hx_cost WHERE task_type = 'bk'}),
	"200 200 done/$run", 'the ledger booked each moved task once, done, in its run');

# a chunk's bookings are kept as few rows, and read as one per attempt
my ($rc, $out, $err);
is( $node->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM hx_cost_attempt WHERE task_type = 'bk') || ' '
			   || sum(cardinality(ids)) || ' ' || (count(*) BETWEEN 3 AND 24)
		  FROM hx_cost_chunk WHERE task_type = 'bk'}),
	'0 200 true', 'the chunks booked their 200 tasks as a few hx_cost_chunk rows (a group per submitter, department and SLA)');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_cost c JOIN hx_task_history h ON h.id = c.task_id
		 WHERE c.at = h.finished_at AND c.attempt = h.attempts AND c.run_id = h.run_id
		   AND c.window_name = h.window_name AND c.rule_name IS NOT DISTINCT FROM h.rule_name
		   AND c.department IS NOT DISTINCT FROM h.department AND c.origin IS NOT DISTINCT FROM h.origin
		   AND c.submitted_by = h.submitted_by
		   AND c.submitted_at = h.submitted_at AND c.sla IS NOT DISTINCT FROM h.sla
		   AND c.deadline IS NOT DISTINCT FROM h.deadline
		   AND c.wait_seconds = extract(epoch FROM h.started_at - h.submitted_at)::float8
		   AND c.latency_seconds = extract(epoch FROM h.finished_at - h.submitted_at)::float8
		   AND c.wall_seconds > 0 AND c.currency = 'USD' AND NOT c.reported
		   AND c.correction_of IS NULL AND c.note IS NULL}),
	'200', "each booking has its own task's columns, times and run");
is($node->safe_psql('postgres', q{SELECT count(*) = count(DISTINCT id) FROM hx_cost}), 't',
	'booking numbers stay unique across single and chunk bookings');
is($node->safe_psql('postgres', q{SET ROLE alice; SELECT count(*) || ' ' || string_agg(DISTINCT department, ',') FROM hx_cost}),
	'150 d-alice', 'alice sees the bookings of her tasks only');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) || ' ' || string_agg(DISTINCT department, ',') FROM hx_cost}),
	'50 d-bob', 'bob his');
my $cid = $node->safe_psql('postgres', q{SELECT min(id) FROM hx_cost_chunk, unnest(ids) id WHERE task_type = 'bk'});
$node->safe_psql('postgres', qq{SELECT hx_cost_correct($cid, 0.25, 'invoice')});
is( $node->safe_psql('postgres', qq{
		SELECT sum(cost) || ' ' || count(*) FROM hx_cost
		 WHERE id = $cid OR correction_of = $cid}),
	'0.250000 2', 'a booking of a chunk is corrected like any other');
($rc, $out, $err) = $node->psql('postgres', q{UPDATE hx_cost_chunk SET cost = 0});
like($err, qr/hx_cost is append-only: UPDATE is not allowed/, 'hx_cost_chunk is append-only');
my $books = $node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(cost) FROM hx_cost});
$node->safe_psql('postgres', q{
	INSERT INTO hx_task_history
	SELECT (jsonb_populate_record(h, jsonb_build_object('id', h.id + 1000000))).*
	  FROM hx_task_history h WHERE h.task_type = 'bk';
	UPDATE hx_task SET reason = reason || ' (noted)' WHERE task_type = 'bk' AND id > 1000000;
});
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(cost) FROM hx_cost}), $books,
	'rows loaded into hx_task_history otherwise (as by a restore), and updated, book nothing');
$node->safe_psql('postgres', q{DELETE FROM hx_task WHERE id > 1000000});

# --- 3. row security through hx_task ---------------------------------------
is($node->safe_psql('postgres', q{SET ROLE alice; SELECT count(*) || ' ' || string_agg(DISTINCT department, ',') FROM hx_task}),
	'150 d-alice', 'alice sees her 150 moved tasks through hx_task, and only hers');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) || ' ' || string_agg(DISTINCT department, ',') FROM hx_task}),
	'50 d-bob', 'bob sees his 50');
($rc, $out, $err) = $node->psql('postgres', q{SET ROLE alice; SELECT count(*) FROM hx_task_history});
like($err, qr/permission denied for table hx_task_history/, 'hx_task_history itself is closed to submitters');

# --- 4. dedupe keys and retention -----------------------------------------
my $old = $node->safe_psql('postgres', q{SELECT id FROM hx_task WHERE dedupe_key = 'a1'});
my $new = $node->safe_psql('postgres',
	q{SET ROLE alice; SELECT hx_submit('bk', '{"k": "a1-again"}', department => 'd-alice', dedupe_key => 'a1')});
isnt($new, $old, "a moved task's dedupe key is free again (task $new, not $old)");
is($node->safe_psql('postgres', "SELECT status FROM ONLY hx_task WHERE id = $new"), 'queued', '... and the new task waits in the queue');
$node->safe_psql('postgres', "SELECT hx_cancel($new)");

# aged and retired in one transaction: the scheduler's own retention step
# (every tick) cannot see them old and take them first
is( $node->safe_psql('postgres', q{
		BEGIN;
		UPDATE hx_task SET finished_at = finished_at - interval '30 days' WHERE task_type = 'bk' AND status = 'done';
		SELECT _hybridexec.hx_retention_step();
		COMMIT;}),
	'200', 'retention deletes the 200 moved tasks');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_task_history}), '0', 'hx_task_history is empty');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_cost WHERE task_type = 'bk' AND correction_of IS NULL}), '200', 'the books stay');

# --- 5. a task that changes while its chunk runs ---------------------------
my $gate = HxTest::hold_gate($node, 304);
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('bk', jsonb_build_object('k', 'c' || g)
								 || CASE WHEN g = 1 THEN '{"gate": 304}'::jsonb ELSE '{}' END))
	  FROM generate_series(1, 10) g});
my $c1 = $node->safe_psql('postgres', q{SELECT id FROM hx_task WHERE payload->>'k' = 'c1'});
$run = HxBatch::run_window($node, 'w304');
ok( $node->poll_query_until('postgres', q{
		SELECT count(*) = 1 FROM pg_stat_activity
		 WHERE backend_type = 'hybridexec batch worker' AND wait_event = 'advisory'}),
	"the chunk's handler waits at the gate");
is($node->safe_psql('postgres', "SELECT hx_cancel($c1)"), 't', 'its first task is cancelled meanwhile');
HxTest::release_gate($gate, 304);
HxBatch::wait_run($node, $run, 'the run of a chunk with a cancelled task');
is(HxBatch::run_row($node, $run, 'status, processed, failed'), 'done|9|0', 'the run did the other nine');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(x, ',' ORDER BY x)
		  FROM (SELECT status || ':' || (result IS NULL) || ':' || attempts || ':' || count(*) AS x
				  FROM hx_task WHERE payload->>'k' LIKE 'c%' GROUP BY status, result IS NULL, attempts) x}),
	'cancelled:true:0:1,done:false:1:9', 'the cancelled task has no result and no attempt, the others are done once');
is($node->safe_psql('postgres', q{SELECT count(*) FROM bseen WHERE k = 'c1'}), '0',
	"the cancelled task's effect of the first try was rolled back");
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT k) FROM bseen WHERE k ~ '^c([2-9]|10)$'}),
	'9 9', "the others' effects exist exactly once");
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE task_id = $c1) FROM hx_cost
		 WHERE run_id = $run}),
	'9 0', 'nine bookings in the run, none of the cancelled task');
like(slurp_file($node->logfile), qr/a task of run $run changed while its chunk ran; running the chunk again without it/,
	'the log says the chunk ran again');

$node->stop;
done_testing();
