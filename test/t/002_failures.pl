# 002_failures.pl - failures on the stream path.
#
# Proves that: a handler that always raises is retried (not before its
# backoff, which doubles) until max_attempts, then the task is dead with
# every failed attempt in hx_error (the handler's SQLSTATE and message), its
# effects rolled back, and NOTIFY hx_alert sent with a JSON payload naming
# the task; a task that fails once succeeds on its second attempt, its
# effect there once; a hanging handler is cancelled by its type's timeout
# (57014, "handler timed out after ..."); a failing task queued in the same
# transaction as good ones neither stops nor re-runs them; a cancelled task
# never runs, and hx_cancel leaves running and finished tasks alone.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use JSON::PP;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('failures');
HxTest::setup_keyed($node, max_attempts => 3);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_alert; LISTEN hx_test_sentinel;');

# --- always raises: retried, then dead ---------------------------------------
my $id = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', '{"k": "bad", "fail": true}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE id = $id"),
	'a task whose handler always raises ends dead');
is( $node->safe_psql('postgres',
		"SELECT attempts || ' | ' || last_error || ' | ' || (finished_at IS NOT NULL) || ' | ' || (result IS NULL) FROM hx_task WHERE id = $id"),
	'3 | keyed handler failed for bad | true | true',
	'after max_attempts (3) attempts, with its last error, finished, no result');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attempt || ':' || sqlstate || ':' || message, ',' ORDER BY attempt) FROM hx_error WHERE task_id = $id"),
	'1:P0001:keyed handler failed for bad,2:P0001:keyed handler failed for bad,3:P0001:keyed handler failed for bad',
	'three hx_error rows with the handler\'s SQLSTATE and message');
like($node->safe_psql('postgres', "SELECT context FROM hx_error WHERE task_id = $id AND attempt = 1"),
	qr/PL\/pgSQL function keyed\(jsonb\)/, 'with the error context');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'bad'"), '0',
	'the failed attempts left no effect (rolled back)');

# a retry is never claimed before its backoff: 10 ms after the first
# failure, 20 ms after the second (lower bounds only; the backoff counts
# from the moment hx_error.at records)
is( $node->safe_psql('postgres', qq{
		SELECT string_agg((extract(epoch FROM at - lag) * 1000 >= 10 * 2 ^ (attempt - 2))::text, ',' ORDER BY attempt)
		  FROM (SELECT attempt, at, lag(at) OVER (ORDER BY attempt) FROM hx_error WHERE task_id = $id) e
		 WHERE lag IS NOT NULL}),
	'true,true', 'retries waited for the doubling backoff');

my @alerts = grep { $_->[0] eq 'hx_alert' } HxTest::notifications($node, $listener, 'dead');
is(scalar @alerts, 1, 'one NOTIFY hx_alert');
my $alert = @alerts ? eval { decode_json($alerts[0][1]) } : undef;
is_deeply(
	$alert,
	{
		event => 'dead',
		task_id => $id,
		task_type => 'keyed',
		attempts => 3,
		error => 'keyed handler failed for bad'
	},
	'its JSON payload names the dead task, its type, attempts and error');

# --- fails once, then succeeds -----------------------------------------------
# a sequence, not a table, counts the calls: it is not rolled back with the
# failed attempt
$node->safe_psql('postgres', q{
	CREATE SEQUENCE once_seq;
	CREATE FUNCTION fails_once(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO seen (k) VALUES (p->>'k');
		IF nextval('once_seq') = 1 THEN
			RAISE EXCEPTION 'transient failure' USING ERRCODE = 'connection_failure';
		END IF;
		RETURN '{"ok": true}';
	END
	$$;
	SELECT hx_register('fails_once', 'fails_once(jsonb)', max_attempts => 3);
});
$id = $node->safe_psql('postgres', q{SELECT hx_submit('fails_once', '{"k": "once"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'a task that fails once is done after its retry');
is($node->safe_psql('postgres', "SELECT attempts || ' ' || result::text FROM hx_task WHERE id = $id"),
	'2 {"ok": true}', 'on its second attempt, with its result');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attempt || ':' || sqlstate || ':' || message, ',') FROM hx_error WHERE task_id = $id"),
	'1:08006:transient failure', 'the first failure is recorded with its SQLSTATE');
is($node->safe_psql('postgres', "SELECT last_value FROM once_seq"), '2', 'the handler was called twice');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'once'"), '1',
	'its effect happened once');

# --- a hanging handler is stopped by the type's timeout -----------------------
$node->safe_psql('postgres',
	q{SELECT hx_register('keyed_hangs', 'keyed(jsonb)', max_attempts => 2, timeout => '200 ms')});
$id = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed_hangs', '{"k": "hangs", "sleep": 600}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE id = $id"),
	'a hanging handler ends dead after its two attempts');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attempt || ':' || sqlstate || ':' || (message ~ '^handler timed out after \\d+ ms \\(type timeout 200 ms\\)\$'), ',' ORDER BY attempt) FROM hx_error WHERE task_id = $id"),
	'1:57014:true,2:57014:true', 'each attempt timed out: 57014, "handler timed out after ..."');
like($node->safe_psql('postgres', "SELECT last_error FROM hx_task WHERE id = $id"),
	qr/^handler timed out after \d+ ms/, 'last_error says so');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'hangs'"), '0',
	'the timed-out attempts left no effect');
$id = $node->safe_psql('postgres',
	q{SELECT hx_submit('keyed_hangs', '{"k": "quick"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'a quick task of the same type, after the timeouts, is done');
@alerts = grep { $_->[0] eq 'hx_alert' } HxTest::notifications($node, $listener, 'timeout');
is(scalar @alerts, 1, 'the timed-out task raised one hx_alert');
$listener->quit;

# --- one failing task among good ones, queued by one transaction -------------
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'mix-good-' || g), origin => 'user'))
	  FROM generate_series(1, 20) g;
	SELECT hx_submit('keyed', '{"k": "mix-bad", "fail": true}', origin => 'user');
	SELECT count(hx_submit('keyed', jsonb_build_object('k', 'mix-good-' || g), origin => 'user'))
	  FROM generate_series(21, 40) g;
	COMMIT;
});
HxTest::wait_finished($node, 'mix-', 'mixed transaction');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts FROM hx_task WHERE payload->>'k' = 'mix-bad'"),
	'dead 3', 'the failing task is dead');
HxTest::check_exactly_once($node, 'mix-good-', 40, 'good tasks beside a failing one');
is($node->safe_psql('postgres', "SELECT max(attempts) FROM hx_task WHERE payload->>'k' LIKE 'mix-good-%'"),
	'1', 'none of the good tasks was rolled back and re-run');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'mix-bad'"), '0',
	'the failing task left no effect');

# --- hx_cancel ---------------------------------------------------------------
# a queued batch-routed task
$id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "cancel-batch"}')});
is($node->safe_psql('postgres', "SELECT route || ' ' || status FROM hx_task WHERE id = $id"),
	'batch queued', 'a batch-routed task is queued');
is($node->safe_psql('postgres', "SELECT hx_cancel($id)"), 't', 'hx_cancel cancels it');
is($node->safe_psql('postgres', "SELECT status || ' ' || (finished_at IS NOT NULL) FROM hx_task WHERE id = $id"),
	'cancelled true', 'it is cancelled and finished');
# route it to the stream by hand: a cancelled task must still not be claimed
$node->safe_psql('postgres',
	"UPDATE hx_task SET route = 'stream', window_name = NULL WHERE id = $id");

# a stream task cancelled in the transaction that queued it
my $cancelled_stream = $node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', '{"k": "cancel-stream"}', origin => 'user') AS id \gset
	SELECT hx_cancel(:id) \gset
	COMMIT;
	SELECT :id;
});

# a later stream task: claims go in id order, so once it is done the
# cancelled tasks (lower ids) would have been claimed had they been claimable
my $after = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "after-cancel"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $after"),
	'a task submitted after them is done');
is( $node->safe_psql('postgres',
		"SELECT string_agg(status || ':' || attempts, ',' ORDER BY id) FROM hx_task WHERE id IN ($id, $cancelled_stream)"),
	'cancelled:0,cancelled:0', 'the cancelled tasks were never claimed');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k LIKE 'cancel-%'"), '0',
	'and never ran');

# hx_cancel leaves finished and running tasks alone
my ($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT hx_cancel($after)");
is($stdout, 'f', 'hx_cancel of a done task returns false');
like($stderr, qr/NOTICE:  task $after is already done, nothing to cancel/, 'with a notice');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $after"), 'done', 'it stays done');

my $gate = HxTest::hold_gate($node, 2002);
$id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "running", "gate": 2002}', origin => 'user')});
ok(defined HxTest::wait_at_gate($node, $id), 'a gated task is running');
($ret, $stdout, $stderr) = $node->psql('postgres', "SELECT hx_cancel($id)");
is($stdout, 'f', 'hx_cancel of a running task returns false');
like($stderr, qr/task $id is already running/, 'with a notice');
HxTest::release_gate($gate, 2002);
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $id"),
	'the running task finishes normally');

$node->stop;
done_testing();
