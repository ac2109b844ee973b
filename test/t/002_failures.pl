# 002_failures.pl - failures on the stream path: a raising handler is
# retried, then dead with every error kept, its effects rolled back, and
# NOTIFY hx_alert sent; a task that fails once succeeds on its retry; a
# hanging handler is stopped by its type's timeout; a failing task does not
# undo the good ones beside it; a cancelled task never runs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('failures');
HxTest::setup_keyed($node, max_attempts => 3);

my $listener = $node->background_psql('postgres');
$listener->query_safe('LISTEN hx_alert');

# retries, then dead
my $id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "bad", "fail": true}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE id = $id"),
	'a task whose handler always raises ends dead');
is($node->safe_psql('postgres', "SELECT attempts || ' ' || last_error FROM hx_task WHERE id = $id"),
	'3 keyed handler failed for bad', 'after max_attempts attempts, with its last error');
is( $node->safe_psql('postgres',
		"SELECT string_agg(attempt || ':' || sqlstate || ':' || message, ',' ORDER BY attempt) FROM hx_error WHERE task_id = $id"),
	'1:P0001:keyed handler failed for bad,2:P0001:keyed handler failed for bad,3:P0001:keyed handler failed for bad',
	'every failed attempt is in hx_error');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'bad'"), '0',
	'the failed attempts left no effect');

my $alerts = '';
my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
while (time() < $deadline && $alerts !~ /hx_alert/)
{
	$alerts .= $listener->query_safe('SELECT 1');
}
like($alerts, qr/Asynchronous notification "hx_alert" with payload "\{"event": "dead", "task_id": $id, /,
	'NOTIFY hx_alert names the dead task');
$listener->quit;

# fails once, then succeeds: the first attempt's effect is rolled back
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
	'2 {"ok": true}', 'on its second attempt');
is($node->safe_psql('postgres', "SELECT string_agg(sqlstate, ',') FROM hx_error WHERE task_id = $id"),
	'08006', 'the first failure is recorded with its SQLSTATE');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k = 'once'"), '1',
	'its effect happened once');

# a hanging handler is stopped by the type's timeout
$node->safe_psql('postgres', q{
	CREATE FUNCTION hangs(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT pg_sleep(600); SELECT p $$;
	SELECT hx_register('hangs', 'hangs(jsonb)', max_attempts => 2, timeout => '300 ms');
});
$id = $node->safe_psql('postgres', q{SELECT hx_submit('hangs', '{}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'dead' FROM hx_task WHERE id = $id"),
	'a hanging handler ends dead');
is( $node->safe_psql('postgres',
		"SELECT string_agg(sqlstate || ':' || (message LIKE 'handler timed out after % ms (type timeout 300 ms)'), ',' ORDER BY attempt) FROM hx_error WHERE task_id = $id"),
	'57014:true,57014:true', 'each attempt timed out');

# one bad task among good ones, in one transaction
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', '{"k": "g1"}', origin => 'user');
	SELECT hx_submit('keyed', '{"k": "b1", "fail": true}', origin => 'user');
	SELECT hx_submit('keyed', '{"k": "g2"}', origin => 'user');
	COMMIT;
});
HxTest::wait_all_finished($node, 'mixed batch');
is( $node->safe_psql('postgres',
		"SELECT string_agg(payload->>'k' || ':' || status, ',' ORDER BY id) FROM hx_task WHERE payload->>'k' IN ('g1', 'b1', 'g2')"),
	'g1:done,b1:dead,g2:done', 'the failing task does not undo the good ones');
is($node->safe_psql('postgres', "SELECT string_agg(k, ',' ORDER BY k) FROM seen WHERE k IN ('g1', 'b1', 'g2')"),
	'g1,g2', 'only the good tasks left effects');

# cancel a queued (batch) task: cancelled, never run
$id = $node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "cancel-me"}')});
is($node->safe_psql('postgres', "SELECT hx_cancel($id)"), 't', 'hx_cancel cancels a queued task');
is($node->safe_psql('postgres', "SELECT status || ' ' || (finished_at IS NOT NULL) FROM hx_task WHERE id = $id"),
	'cancelled true', 'it is cancelled and finished');
# a cancelled stream task is not claimed either
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('keyed', '{"k": "cancel-stream"}', origin => 'user') AS id \gset
	SELECT hx_cancel(:id);
	COMMIT;
});
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "after-cancel"}', origin => 'user')});
HxTest::wait_all_finished($node, 'after cancel');
is($node->safe_psql('postgres', "SELECT count(*) FROM seen WHERE k LIKE 'cancel%'"), '0',
	'cancelled tasks never ran');

$node->stop;
done_testing();
