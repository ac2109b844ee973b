# 502_poison.pl - no single task stops a path.
#
#   1. a stream task whose outcome cannot be booked (the books refuse its
#      department): its batch is rerun task by task, it ends dead
#      (quarantined), its 20 neighbours are done once, no worker exits
#   2. the same task in a batch window's chunk: the run is done, not failed
#   3. the same task with an external executor: its completion is refused,
#      its lease expires and the reclaim sets it aside; the scheduler's
#      steps never fail
#   4. a scheduler step that fails (an SLA that overflows the escalation)
#      stops no other step, and hx_health() says which
#   5. a handler that ends its own backend, among 20 tasks (one worker, one
#      batch): after the first loss the batch runs task by task, so no
#      neighbour loses a second attempt; the killer ends dead after max_attempts
#   6. an executor's error of 9,000 characters on the last attempt: the
#      task is dead, hx_error keeps the whole message, the alert is clipped
#   7. windows: a rename carries the waiting tasks, a window with waiting
#      tasks cannot be deleted, and hx_health() reports tasks whose window
#      is gone
#
# The books are made to refuse by a test trigger on hx_cost_daily that
# raises for department 'poison' - the kind of failure an unbounded
# department once caused (the API now refuses such input up front, see
# sql/bad_input.sql).
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

my $node = HxTest::new_node('poison2', 'hybridexec.scheduler_naptime' => '100ms');
HxTest::setup_keyed($node);
HxBatch::setup_batch_keyed($node);
$node->safe_psql('postgres', q{
	CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.department = 'poison' THEN
			RAISE EXCEPTION 'the books refuse department poison';
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_poison BEFORE INSERT ON hx_cost_daily
		FOR EACH ROW EXECUTE FUNCTION refuse_poison();
});
ok(HxTest::wait_workers($node, 2), 'two stream workers');
my @pids = HxTest::worker_pids($node);

# --- 1. stream ----------------------------------------------------------------
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p1-ok' || g), origin => 'user')
	  FROM generate_series(1, 10) g;
	SELECT hx_submit('keyed', '{"k": "p1-bad"}', origin => 'user', department => 'poison');
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p1-ok' || g), origin => 'user')
	  FROM generate_series(11, 20) g;
	COMMIT;
});
HxTest::wait_finished($node, 'p1-', 'stream batch with an unbookable task');
like( $node->safe_psql('postgres', q{SELECT status || ': ' || last_error FROM hx_task WHERE payload->>'k' = 'p1-bad'}),
	qr/^dead: the outcome could not be booked: .*the books refuse department poison/,
	'the unbookable task is set aside as dead, saying why');
HxTest::check_exactly_once($node, 'p1-ok', 20, 'its stream neighbours');
is(join(' ', HxTest::worker_pids($node)), join(' ', @pids), 'no stream worker exited');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_cost c JOIN hx_task t ON t.id = c.task_id WHERE t.payload->>'k' = 'p1-bad'}),
	'0', 'the set-aside task has no booking');

# --- 2. batch window -----------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('poisonwin', '0 0 1 1 *', 50);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bk-to-poisonwin', 1, 'bk', 'batch', 'poisonwin');
	SELECT hx_submit('bk', jsonb_build_object('k', CASE WHEN g = 7 THEN 'p2-bad' ELSE 'p2-ok' || g END),
					 department => CASE WHEN g = 7 THEN 'poison' END)
	  FROM generate_series(1, 30) g;
});
my $run = HxBatch::run_window($node, 'poisonwin');
HxBatch::wait_run($node, $run, 'the run with an unbookable task');
is(HxBatch::run_row($node, $run, 'status, processed'), 'done|29', 'the run is done, 29 tasks processed');
like( $node->safe_psql('postgres', q{SELECT status || ': ' || last_error FROM hx_task WHERE payload->>'k' = 'p2-bad'}),
	qr/^dead: the outcome could not be booked: .*the books refuse department poison/,
	'the unbookable batch task is set aside');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE payload->>'k' LIKE 'p2-ok%'}),
	'29/29', 'its chunk neighbours are done');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || '/' || count(DISTINCT k) FROM bseen WHERE k LIKE 'p2-ok%'}),
	'29/29', 'each neighbour\'s effect exactly once');

# --- 3. external executor ------------------------------------------------------
$node->safe_psql('postgres', "SELECT hx_register('ext', max_attempts => 1)");
$node->safe_psql('postgres', q{SELECT hx_submit('ext', '{}', origin => 'user', department => 'poison')});
my ($ext, $token) = split /\|/, $node->safe_psql('postgres',
	q{SELECT id || '|' || lease_token FROM hx_claim('poison-exec', ARRAY['ext'], lease => '2 seconds')});
my ($rc, $out, $err) = $node->psql('postgres', "SELECT hx_complete($ext, '$token', '{\"r\": 1}')");
like($err, qr/task $ext could not be completed/, 'its completion is refused, with an error');
ok( $node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE id = $ext"),
	'once its lease expired, the reclaim set it aside');
like($node->safe_psql('postgres', "SELECT last_error FROM hx_task WHERE id = $ext"),
	qr/could not be booked/, '... saying why');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM hx_scheduler_status() WHERE last_failed IS NOT NULL"),
	'0', 'no scheduler step failed');

# --- 4. a failing scheduler step stops no other --------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_task (task_type, route, window_name, sla, payload)
	VALUES ('keyed', 'batch', 'nightly', '1000000 years', '{"k": "p4-overflow"}');
});
ok( $node->poll_query_until('postgres',
		"SELECT last_error LIKE '%out of range%' FROM hx_scheduler_status() WHERE step = 'escalate'"),
	'the escalation step fails on the task it cannot compute');
is( $node->safe_psql('postgres', q{
		SELECT severity || ' ' || subject FROM hx_health() WHERE problem = 'scheduler step failing'}),
	'critical escalate', 'hx_health() names the failing step');
# the reclaim step still works meanwhile
$node->safe_psql('postgres', q{SELECT hx_register('ext2', max_attempts => 2)});
my $ext2 = $node->safe_psql('postgres', q{SELECT hx_submit('ext2', '{}', origin => 'user')});
$node->safe_psql('postgres', "SELECT count(*) FROM hx_claim('p4', ARRAY['ext2'], lease => '1 second')");
ok( $node->poll_query_until('postgres', "SELECT status = 'failed' FROM hx_task WHERE id = $ext2"),
	'the lease reclaim step still ran');
$node->safe_psql('postgres', q{
	SELECT hx_cancel(id) FROM hx_task WHERE payload->>'k' = 'p4-overflow';
});
ok( $node->poll_query_until('postgres',
		"SELECT last_failed IS NULL AND last_ok IS NOT NULL FROM hx_scheduler_status() WHERE step = 'escalate'"),
	'without the task the step recovers');

# --- 6. a 9,000-character error on the last attempt ----------------------------
my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_alert; LISTEN hx_test_sentinel;');
$node->safe_psql('postgres', "SELECT hx_register('ext_once', max_attempts => 1)");
$node->safe_psql('postgres', q{SELECT hx_submit('ext_once', '{}', origin => 'user')});
my ($ext3, $token3) = split /\|/, $node->safe_psql('postgres',
	q{SELECT id || '|' || lease_token FROM hx_claim('p6', ARRAY['ext_once'])});
is( $node->safe_psql('postgres', "SELECT hx_fail($ext3, '$token3', repeat('x', 9000))"),
	'dead', 'hx_fail with a 9,000-character error books the task dead');
is( $node->safe_psql('postgres', "SELECT length(message) FROM hx_error WHERE task_id = $ext3"),
	'9000', 'hx_error keeps the whole message');
my @alerts = grep { $_->[0] eq 'hx_alert' } HxTest::notifications($node, $listener, 'p6');
my ($dead) = grep { ($_->{task_id} // 0) == $ext3 } map { decode_json($_->[1]) } @alerts;
ok($dead && $dead->{event} eq 'dead' && length($dead->{error}) < 9000 && $dead->{error} =~ /\.\.\.$/,
	'the dead alert was sent, its error clipped to fit NOTIFY');
$listener->quit;

# --- 7. windows and their tasks --------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule) VALUES ('oldname', '0 3 * * *');
	INSERT INTO hx_rule (name, position, payload_match, route, window_name)
	VALUES ('to-old', 2, '{"win": "old"}', 'batch', 'oldname');
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p7-' || g, 'win', 'old')) FROM generate_series(1, 3) g;
	UPDATE hx_window SET name = 'newname' WHERE name = 'oldname';
});
is( $node->safe_psql('postgres', q{
		SELECT string_agg(DISTINCT window_name, ',') || ' ' || count(*) FROM hx_task WHERE payload->>'k' LIKE 'p7-%'}),
	'newname 3', 'a renamed window carries its waiting tasks');
($rc, $out, $err) = $node->psql('postgres', "DELETE FROM hx_window WHERE name = 'newname'");
like($err, qr/window "newname" still has 3 task\(s\) waiting for it/,
	'a window with waiting tasks cannot be deleted');
$node->safe_psql('postgres', q{
	UPDATE hx_task SET window_name = 'ghost' WHERE payload->>'k' = 'p7-3';
});
is( $node->safe_psql('postgres', q{
		SELECT subject || ': ' || detail FROM hx_health() WHERE problem = 'window missing'}),
	'ghost: 1 task(s) wait for window ghost, which does not exist',
	'hx_health() reports tasks whose window is gone');
$run = HxBatch::run_window($node, 'newname');
HxBatch::wait_run($node, $run, 'the renamed window');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_task WHERE payload->>'k' IN ('p7-1', 'p7-2') AND status = 'done'}),
	'2', 'and runs them under its new name');

$node->stop;

# --- 5. a task that ends its own worker ----------------------------------------
# One stream worker, so that the killer and its 20 neighbours are one batch.
my $one = HxTest::new_node('selfkill', 'hybridexec.stream_workers' => 1);
HxTest::setup_keyed($one);
$one->safe_psql('postgres', q{
	CREATE FUNCTION self_kill(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_terminate_backend(pg_backend_pid());
		PERFORM pg_sleep(10);
		RETURN p;
	END $$;
	SELECT hx_register('self_kill', 'self_kill(jsonb)', max_attempts => 3);
});
ok(HxTest::wait_workers($one, 1), 'one stream worker');
# the worker claims about 10 ms of the run time it measured: fast tasks
# first, so that its next claim takes the whole batch
$one->safe_psql('postgres', q{
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p5-warm' || g), origin => 'user')
	  FROM generate_series(1, 300) g});
HxTest::wait_finished($one, 'p5-warm', 'warm-up tasks');
$one->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p5-ok' || g), origin => 'user')
	  FROM generate_series(1, 10) g;
	SELECT hx_submit('self_kill', '{"k": "p5-killer"}', origin => 'user');
	SELECT hx_submit('keyed', jsonb_build_object('k', 'p5-ok' || g), origin => 'user')
	  FROM generate_series(11, 20) g;
	COMMIT;
});
ok( $one->poll_query_until('postgres', q{
		SELECT count(*) = 0 FROM hx_task WHERE payload->>'k' LIKE 'p5-%' AND status NOT IN ('done', 'dead')}),
	'every task of the batch finished');
is( $one->safe_psql('postgres', q{SELECT status || ' ' || attempts FROM hx_task WHERE payload->>'k' = 'p5-killer'}),
	'dead 3', 'the task that ends its worker is dead after max_attempts');
HxTest::check_exactly_once($one, 'p5-ok', 20, 'its neighbours');
is( $one->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE t.attempts = 2
								AND (SELECT count(*) FROM hx_error e WHERE e.task_id = t.id
									  AND e.message LIKE 'worker % stopped while running attempt 1%') = 1)
		  FROM hx_task t WHERE t.payload->>'k' LIKE 'p5-ok%'}),
	'20', 'each neighbour lost the one attempt of the first loss, and no other: the batch then ran task by task');
$one->stop;

done_testing();
