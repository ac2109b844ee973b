# 009_dead_letters.pl - dead tasks can be seen, retried and kept longer.
#
# Proves that: tasks that gave up show in hx_dead with their last error;
# after the cause is fixed, hx_retry(ids) puts them back in the queue with
# attempts from zero, they run and are done, each effect once, and their
# old errors stay in hx_error; hx_retry(type, since) retries only those
# that died since then; a dead task whose dedupe key a live task has taken
# stays dead; a submitter sees, and retries, only its own dead tasks (the
# others' are not there for it); reuse_within serves a done task's result
# only to a role that may see it; bad input is a clear error; retention
# deletes done tasks after hybridexec.retention but keeps dead ones until
# hybridexec.retention_dead.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('dead');
$node->safe_psql('postgres', q{
	CREATE TABLE outage (on_since timestamptz);
	CREATE TABLE effects (k text, task_id bigint);
	GRANT SELECT ON outage TO PUBLIC;
	GRANT INSERT ON effects TO PUBLIC;
	-- a model API that is down while outage has a row
	CREATE FUNCTION flaky(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		IF EXISTS (SELECT 1 FROM outage) THEN
			RAISE EXCEPTION 'provider down for %', p->>'k' USING ERRCODE = '08006';
		END IF;
		INSERT INTO effects VALUES (p->>'k', (SELECT t.id FROM hx_task t
			WHERE t.worker_pid = pg_backend_pid() AND t.status = 'running' AND t.payload->>'k' = p->>'k'));
		RETURN jsonb_build_object('k', p->>'k');
	END
	$$;
	SELECT hx_register('flaky', 'flaky(jsonb)', max_attempts => 2);
	CREATE ROLE alice IN ROLE hybridexec_submitter;
	CREATE ROLE bob IN ROLE hybridexec_submitter;
	INSERT INTO outage VALUES (now());
});

# the ids of tasks whose key matches the regular expression, as a SQL array
sub ids_of
{
	my ($re) = @_;
	return 'ARRAY[' . $node->safe_psql('postgres',
		"SELECT string_agg(id::text, ',' ORDER BY id) FROM hx_task WHERE payload->>'k' ~ '$re'") . ']::bigint[]';
}

# --- they die while the provider is down ---------------------------------------
$node->safe_psql('postgres', q{
	SELECT hx_submit('flaky', jsonb_build_object('k', 'd' || g), origin => 'user') FROM generate_series(1, 3) g;
	SELECT hx_submit('flaky', '{"k": "dk-old"}', origin => 'user', dedupe_key => 'dk');
	SET ROLE alice;
	SELECT hx_submit('flaky', '{"k": "alice-1"}', origin => 'user');
});
ok( $node->poll_query_until('postgres', q{SELECT count(*) = 5 FROM hx_task WHERE task_type = 'flaky' AND status = 'dead'}),
	'five tasks die after their two attempts');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || min(attempts) || ' ' || max(last_sqlstate) || ' ' || bool_and(last_error LIKE 'provider down for %')
			   || ' ' || bool_and(died_at >= last_failed_at)
		  FROM hx_dead WHERE task_type = 'flaky'}),
	'5 2 08006 true true', 'hx_dead shows them with their attempts and last error');

# --- a submitter sees and retries only its own -------------------------------------
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) FROM hx_dead}), '0', 'bob sees no dead task of others');
my $alice = $node->safe_psql('postgres', q{SELECT id FROM hx_dead WHERE payload->>'k' = 'alice-1'});
is($node->safe_psql('postgres', "SET ROLE bob; SELECT hx_retry(ARRAY[$alice])"), '0', "bob cannot retry alice's task");
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT hx_retry('flaky', '-infinity')}), '0', 'nor any by type');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $alice"), 'dead', 'it is still dead');

# --- fixed: retried, run once, errors kept --------------------------------------------
$node->safe_psql('postgres', 'DELETE FROM outage');
my $d = ids_of('^d[0-9]+$');
is($node->safe_psql('postgres', "SELECT hx_retry($d || ARRAY[-1]::bigint[])"), '3', 'hx_retry(ids) requeues the three (an unknown id is left alone)');
is($node->safe_psql('postgres', "SET ROLE alice; SELECT hx_retry(ARRAY[$alice])"), '1', 'alice retries her own');
ok( $node->poll_query_until('postgres', qq{SELECT count(*) = 4 FROM hx_task WHERE id = ANY ($d || ARRAY[$alice]::bigint[]) AND status = 'done'}),
	'they run again and are done');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(t.attempts || ':' || (SELECT count(*) FROM effects e WHERE e.task_id = t.id)
						  || ':' || (SELECT count(*) FROM hx_error x WHERE x.task_id = t.id), ' ' ORDER BY t.id)
		  FROM hx_task t WHERE t.id = ANY ($d || ARRAY[$alice]::bigint[])}),
	'1:1:2 1:1:2 1:1:2 1:1:2', 'each on its first new attempt, its effect once, its two old errors kept');
is( $node->safe_psql('postgres', qq{SELECT count(*) FROM hx_task WHERE id = ANY ($d) AND reason LIKE '%; retried at %'}),
	'3', 'reason says they were retried');

# --- a dedupe key taken meanwhile ------------------------------------------------------
my $live = $node->safe_psql('postgres', q{SELECT hx_submit('flaky', '{"k": "dk-new"}', sla => '12 hours', dedupe_key => 'dk')});
my $dk = $node->safe_psql('postgres', q{SELECT id FROM hx_dead WHERE dedupe_key = 'dk'});
is($node->safe_psql('postgres', "SELECT hx_retry(ARRAY[$dk])"), '0', 'a dead task whose dedupe key a live task has is not retried');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $dk"), 'dead', 'it stays dead');
$node->safe_psql('postgres', "SELECT hx_cancel($live)");

# --- by type, since a moment --------------------------------------------------------
$node->safe_psql('postgres', 'INSERT INTO outage VALUES (now())');
$node->safe_psql('postgres', q{SELECT hx_submit('flaky', jsonb_build_object('k', 'e' || g), origin => 'user') FROM generate_series(1, 4) g});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 4 FROM hx_dead WHERE payload->>'k' LIKE 'e%'}), 'four more die');
$node->safe_psql('postgres', q{
	UPDATE hx_task SET finished_at = finished_at - interval '2 days' WHERE payload->>'k' IN ('e1', 'e2', 'dk-old')});
$node->safe_psql('postgres', 'DELETE FROM outage');
is($node->safe_psql('postgres', q{SELECT hx_retry('flaky', now() - interval '1 day')}), '2',
	'hx_retry(type, since) requeues the two that died since');
ok($node->poll_query_until('postgres', q{SELECT count(*) = 2 FROM hx_task WHERE payload->>'k' IN ('e3', 'e4') AND status = 'done'}),
	'and they are done');
is($node->safe_psql('postgres', q{SELECT string_agg(payload->>'k', ' ' ORDER BY id) FROM hx_dead}), 'dk-old e1 e2',
	'the older ones are still dead');

# --- reuse_within serves only results the caller may see --------------------------
my $shared = $node->safe_psql('postgres', q{
	SET ROLE alice; SELECT hx_submit('flaky', '{"k": "shared"}', origin => 'user', dedupe_key => 'shared')});
is($node->safe_psql('postgres', "SELECT hx_wait($shared, '60 seconds')"), 'done', 'alice\'s task with key "shared" is done');
my $bobs = $node->safe_psql('postgres', q{
	SET ROLE bob; SELECT hx_submit('flaky', '{"k": "shared-bob"}', origin => 'user', dedupe_key => 'shared',
								   reuse_within => '1 hour')});
isnt($bobs, $shared, 'bob does not get alice\'s result: a task of his own');
is($node->safe_psql('postgres', "SELECT hx_wait($bobs, '60 seconds')"), 'done', 'which runs');
is( $node->safe_psql('postgres', q{
		SET ROLE alice; SELECT hx_submit('flaky', '{"k": "shared-again"}', origin => 'user', dedupe_key => 'shared',
										 reuse_within => '1 hour')}),
	$shared, 'alice does');

# --- bad input ------------------------------------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', 'SELECT hx_retry(NULL::bigint[])');
like($err, qr/task ids must not be NULL/, 'NULL ids: an error');
($rc, $out, $err) = $node->psql('postgres', 'SELECT hx_retry(ARRAY[1, NULL]::bigint[])');
like($err, qr/task ids must not be NULL/, 'a NULL id: an error');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_retry('flaky', NULL)});
like($err, qr/since must not be NULL.*\n.*HINT:.*-infinity/, 'NULL since: an error with a hint');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_retry('nope', now())});
like($err, qr/unknown task type "nope"/, 'an unknown type: an error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_dead}), '3', 'nothing changed');

# --- retention keeps dead tasks longer ---------------------------------------------------
$node->safe_psql('postgres', q{
	ALTER SYSTEM SET hybridexec.retention = '1d';
	ALTER SYSTEM SET hybridexec.retention_dead = '10d';
	SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres', 'SHOW hybridexec.retention_dead', '10d'), 'retention 1 day, dead tasks 10 days');
$node->safe_psql('postgres', q{
	UPDATE hx_task SET finished_at = now() - interval '5 days' WHERE task_type = 'flaky' AND status IN ('done', 'dead', 'cancelled')});
$node->safe_psql('postgres', 'SELECT _hybridexec.hx_retention_step()');
is( $node->safe_psql('postgres', q{SELECT string_agg(status || ':' || count, ' ' ORDER BY status) FROM
		(SELECT status, count(*) FROM hx_task WHERE task_type = 'flaky' GROUP BY status) s}),
	'dead:3', 'after 5 days the done and cancelled tasks are gone, the dead ones kept');
$node->safe_psql('postgres', q{UPDATE hx_task SET finished_at = now() - interval '11 days' WHERE payload->>'k' = 'e1'});
$node->safe_psql('postgres', 'SELECT _hybridexec.hx_retention_step()');
is($node->safe_psql('postgres', q{SELECT string_agg(payload->>'k', ' ' ORDER BY id) FROM hx_dead}), 'dk-old e2',
	'a dead task older than hybridexec.retention_dead goes');

$node->stop;
done_testing();
