# 101_cost.pl - the books kept by real workers.
#
#   1. Stream runs: every attempt of keyed tasks finished by the stream
#      workers has its hx_cost row (failed attempts too), priced by the
#      catalog: unit cost plus per second of measured run time, with the
#      stream baseline and the batch alternative; the per-minute statistics
#      and hx_stats count the same attempts.
#   2. Batch runs: a window run books each task of its chunks once, at the
#      discounted price, with its window and run, and the run's wall time
#      shared by the tasks of a chunk.
#   3. Retention: with hybridexec.retention set, the scheduler worker
#      deletes finished tasks older than it, in batches of
#      hybridexec.retention_batch, and leaves queued tasks and the ledger.
#   4. Alerts: a dead task and an exhausted budget each reach a session
#      LISTENing on hx_alert once, with a JSON payload, and stay in
#      hx_health() and hx_alert_state.
#   5. The switch: with the ledger's trigger on hx_task disabled, neither a
#      stream worker's done tasks nor a window run's, which the ledger books
#      as they move to hx_task_history (no trigger there), are booked; a
#      row inserted into hx_task_history by hand (a restore) never is.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP qw(decode_json);
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('cost');
HxTest::setup_keyed($node, max_attempts => 2);
HxBatch::setup_batch_keyed($node, max_attempts => 2);
ok(HxTest::wait_workers($node, 2), 'two stream workers');

# --- 1. stream attempts ------------------------------------------------------
# keyed: 0.01 per attempt plus 2 per second; the catalog default for others
$node->safe_psql('postgres', q{
	INSERT INTO hx_price (task_type, route, unit_cost, per_second) VALUES ('keyed', 'stream', 0.01, 2);
	SELECT hx_submit('keyed', jsonb_build_object('k', 's' || i, 'sleep', 0.05),
					 origin => 'user', department => 'sales')
	  FROM generate_series(1, 20) i;
	SELECT hx_submit('keyed', '{"k": "sfail", "fail": true}', origin => 'user', department => 'sales');
});
HxTest::wait_finished($node, 's', 'stream');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'done') || ' ' || count(*) FILTER (WHERE status = 'dead')
		  FROM hx_task WHERE payload->>'k' LIKE 's%'}),
	'20 1', '20 stream tasks done, the failing one dead after 2 attempts');

# one ledger row per attempt: 20 done, the failing task's 2 attempts
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE c.outcome = 'done') || ' '
			   || count(*) FILTER (WHERE c.outcome = 'failed') || ' '
			   || count(*) FILTER (WHERE c.outcome = 'dead') || ' '
			   || count(DISTINCT (c.task_id, c.attempt))
		  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
		 WHERE t.payload->>'k' LIKE 's%'}),
	'20 1 1 22', 'hx_cost: a row per attempt, failed and dead attempts included');

# the price: 0.01 + 2 * wall seconds, the wall time being the attempt's own
# (started_at to the booking) and at least the 50 ms the handler slept
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE c.cost = round(0.01 + 2 * c.wall_seconds::numeric, 6)
								  AND c.baseline_cost = c.cost
								  AND c.batch_cost = round((0.01 + 2 * c.wall_seconds::numeric) * 0.5, 6)
								  AND c.wall_seconds >= 0.05
								  AND c.route = 'stream' AND c.department = 'sales'
								  AND c.origin = 'user' AND NOT c.reported)
		  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
		 WHERE t.payload->>'k' LIKE 's%' AND c.outcome = 'done'}),
	'20', 'each done attempt costs 0.01 + 2/s of its run time, its batch alternative half');
# a worker runs the tasks it claimed together one after the other and books
# them together: they share the span equally, so the booked time adds up to
# at least the 20 x 50 ms slept and at most the tasks' own claim-to-result
# times
is( $node->safe_psql('postgres', q{
		SELECT sum(c.wall_seconds) >= 20 * 0.05
			   AND sum(c.wall_seconds) <= sum(extract(epoch FROM t.finished_at - t.started_at)) + 1e-6
		  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
		 WHERE t.payload->>'k' LIKE 's%' AND c.outcome = 'done'}),
	't', 'the booked run time is the time the handlers took, shared within a batch');

# the statistics count the same attempts
is( $node->safe_psql('postgres', q{
		SELECT sum(done) || ' ' || sum(failed) || ' ' || sum(dead) || ' '
			   || (sum((SELECT sum(x) FROM unnest(run_hist) x)) = sum(done + failed + dead))
		  FROM hx_stat_minute WHERE task_type = 'keyed' AND route = 'stream'}),
	'20 1 1 true', 'hx_stat_minute: 20 done, 1 failed, 1 dead, every attempt in the run time histogram');
is( $node->safe_psql('postgres', q{
		SELECT done || ' ' || dead || ' ' || (run_p50_ms >= 32)
		  FROM hx_stats WHERE task_type = 'keyed' AND route = 'stream'}),
	'20 1 true', 'hx_stats: done and dead, median run time in the bucket of 50 ms');

# --- 2. batch attempts -------------------------------------------------------
HxBatch::submit_keys($node, 'b', 30);
$node->safe_psql('postgres', q{
	UPDATE hx_task SET department = 'ops' WHERE payload->>'k' LIKE 'b%';
	UPDATE hx_window SET chunk_size = 10 WHERE name = 'nightly';
});
my $run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'nightly');
HxBatch::check_batch_exactly_once($node, 'b', 30, 'batch run');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) || ' ' || count(DISTINCT c.task_id) || ' '
			   || count(*) FILTER (WHERE c.route = 'batch' AND c.window_name = 'nightly'
									 AND c.run_id = $run AND c.outcome = 'done'
									 AND c.department = 'ops'
									 AND c.cost = 0.5 AND c.baseline_cost = 1.0 AND c.batch_cost = 0.5)
		  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
		 WHERE t.payload->>'k' LIKE 'b%'}),
	'30 30 30', 'a row per batch task, with window and run, at the default price less 50% (baseline: stream)');
# a chunk's tasks share its time: per chunk, the wall times add up to the
# chunk's start to its last booking
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE abs(g.booked - g.span) < 1e-6) || '/' || count(*)
		  FROM (SELECT t.started_at, sum(c.wall_seconds) AS booked,
					   extract(epoch FROM max(t.finished_at) - t.started_at) AS span
				  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
				 WHERE t.payload->>'k' LIKE 'b%'
				 GROUP BY t.started_at) g}),
	'3/3', 'three chunks of 10: the tasks of each share its wall time');
is( $node->safe_psql('postgres', q{
		SELECT "group" || ' ' || tasks || ' ' || cost FROM hx_cost_report('department', now() - interval '1 hour', now() + interval '1 minute')
		 WHERE "group" = 'ops'}),
	'ops 30 15.000000', 'hx_cost_report: ops paid 30 x 0.5');

# --- 3. retention --------------------------------------------------------------
my $ledger = $node->safe_psql('postgres', 'SELECT count(*) FROM hx_cost');
$node->safe_psql('postgres', q{
	SELECT hx_submit('keyed', '{"k": "waiting"}');	-- batch-routed, stays queued
	UPDATE hx_task SET finished_at = finished_at - interval '2 days'
	 WHERE status IN ('done', 'dead') AND payload->>'k' LIKE 'b%';
});
$node->append_conf('postgresql.conf', "hybridexec.retention = '1d'\nhybridexec.retention_batch = 7");
$node->reload;
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM hx_task WHERE payload->>'k' LIKE 'b%'"),
	'the scheduler deleted the 30 finished tasks older than hybridexec.retention');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE payload->>'k' LIKE 's%') || ' '
			   || count(*) FILTER (WHERE payload->>'k' = 'waiting' AND status = 'queued')
		  FROM hx_task}),
	'21 1', 'recent finished tasks and queued tasks stay');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_cost'), $ledger, 'the ledger keeps every row');
is( $node->safe_psql('postgres', q{
		SELECT sum(done) FROM hx_stat_minute WHERE task_type = 'bk'}),
	'30', 'and the statistics too');

# --- 4. alerts -------------------------------------------------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_alert; LISTEN hx_test_sentinel');
# the dead task of part 1 is a current problem: wait for its alert, then
# make a budget run out
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM hx_alert_state WHERE problem = 'dead tasks' AND subject = 'keyed'"),
	'the dead task is remembered as announced');
$node->safe_psql('postgres', q{
	INSERT INTO hx_budget (department, period, amount) VALUES ('ops', 'day', 10);
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM hx_alert_state WHERE problem = 'budget exhausted' AND subject = 'ops'"),
	'the exhausted budget is announced');
my @got = grep { $_->[0] eq 'hx_alert' } HxTest::notifications($node, $listener, 'one');
my @budget = grep { ($_->{problem} // '') eq 'budget exhausted' }
  map { decode_json($_->[1]) } @got;
is(scalar(@budget), 1, 'one NOTIFY hx_alert for the budget');
is_deeply(
	[ map { $budget[0]{$_} } qw(event subject severity detail) ],
	[ 'health', 'ops', 'warning', 'department ops spent 15.000000 of its day USD budget of 10' ],
	'its JSON payload names the department and the figures');
# the problem persists: no second notification after more maintenance ticks
my $ticks = $node->safe_psql('postgres',
	"SELECT last_ok FROM hx_scheduler_status() WHERE step = 'alerts'");
ok( $node->poll_query_until('postgres',
		"SELECT last_ok > '$ticks' FROM hx_scheduler_status() WHERE step = 'alerts'"),
	'the alert check ran again');
@got = grep { $_->[0] eq 'hx_alert' && $_->[1] =~ /budget exhausted/ }
  HxTest::notifications($node, $listener, 'two');
is(scalar(@got), 0, 'a problem that persists is not announced again');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(problem || '/' || severity || '/' || subject, ', ' ORDER BY problem)
		  FROM hx_health() WHERE problem IN ('budget exhausted', 'dead tasks')}),
	'budget exhausted/warning/ops, dead tasks/warning/keyed', 'hx_health() lists both');
# raising the budget clears the problem and its state row
$node->safe_psql('postgres', "UPDATE hx_budget SET amount = 1000 WHERE department = 'ops'");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM hx_alert_state WHERE problem = 'budget exhausted'"),
	'a cleared problem leaves hx_alert_state');
$listener->quit;

# --- 5. the switch -----------------------------------------------------------------
my $booked = q{
	SELECT count(*) FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
	 WHERE t.payload->>'k' LIKE 'off%'};
$node->safe_psql('postgres', 'ALTER TABLE hx_task DISABLE TRIGGER hx_cost_book');
$node->safe_psql('postgres', q{
	SELECT hx_submit('keyed', jsonb_build_object('k', 'offs' || i), origin => 'user')
	  FROM generate_series(1, 5) i});
HxTest::wait_finished($node, 'offs', 'ledger off, stream');
HxBatch::submit_keys($node, 'offb', 10);
$run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'ledger off, batch');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'done') FROM hx_task WHERE payload->>'k' LIKE 'off%'}),
	'15', 'ledger off: 5 stream and 10 batch tasks done');
is($node->safe_psql('postgres', $booked), '0', 'and none of them booked');
$node->safe_psql('postgres', 'ALTER TABLE hx_task ENABLE TRIGGER hx_cost_book');
$node->safe_psql('postgres', q{
	SELECT hx_submit('keyed', jsonb_build_object('k', 'offon' || i), origin => 'user')
	  FROM generate_series(1, 3) i;
	INSERT INTO hx_task_history (id, task_type, payload, status, route, attempts, started_at, finished_at)
	VALUES (900000000, 'keyed', '{"k": "offrestored"}', 'done', 'stream', 1, now(), now());});
HxTest::wait_finished($node, 'offon', 'ledger on again');
is($node->safe_psql('postgres', $booked), '3',
	'ledger on again: the 3 new tasks booked, the row inserted into hx_task_history not');

done_testing();
