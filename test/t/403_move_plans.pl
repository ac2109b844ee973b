# 403_move_plans.pl - the statements that move done tasks out of the queue
# find them by where they are, whatever the statistics say.
#
# The queue is analyzed while it is empty (as autovacuum often sees a queue
# between bursts), then 3,000 tasks of an external type arrive and 500 are
# claimed and completed with hx_complete_many.  auto_explain shows the plan
# of the completion's move: a TID scan of hx_task over ctids looked up by
# primary key, not a join to the completed ids (with such statistics a join
# was planned as a full scan of the queue, or of the partial index of
# leased tasks, for every statement: external executors fell from 20,000
# to 1,000 tasks/s).  Stale and negative-cost completions are still refused.
# The statement that books failures (hx_fail, and every worker's failed or
# lost attempts) finds its tasks the same way: by a primary-key probe per
# id and the ctid it gives; and so does the external executors' claim,
# planned on the statistics a vacuum leaves after a burst.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('move_plans');
$node->safe_psql('postgres', q{
	SELECT hx_register('ext_plan');
	VACUUM ANALYZE hx_task;
	SELECT count(*) FROM hx_submit_batch('ext_plan',
		ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, 3000) g), origin => 'user');
	CREATE TABLE claimed AS
	SELECT id, lease_token FROM hx_claim('plan-test', ARRAY['ext_plan'], 'stream', 500, '5 minutes');
});
is($node->safe_psql('postgres', 'SELECT count(*) FROM claimed'), '500', '500 of 3,000 tasks claimed');

# runs sql with auto_explain sending every plan, nested ones too, to the
# client as a NOTICE; returns its output and the notices
sub explained
{
	my ($sql) = @_;
	my ($out, $err);
	$node->psql('postgres', qq{
		LOAD 'auto_explain';
		SET auto_explain.log_min_duration = 0;
		SET auto_explain.log_nested_statements = on;
		SET auto_explain.log_level = notice;
		SET client_min_messages = notice;
		$sql}, stdout => \$out, stderr => \$err);
	return ($out, $err);
}

my ($stdout, $stderr) = explained(q{
	SELECT status, count(*) FROM hx_complete_many(
		(SELECT array_agg(id ORDER BY id) FROM claimed),
		(SELECT array_agg(CASE WHEN id = (SELECT min(id) FROM claimed) THEN gen_random_uuid()
							   ELSE lease_token END ORDER BY id) FROM claimed),
		NULL,
		(SELECT array_agg(CASE WHEN id = (SELECT max(id) FROM claimed) THEN -1 END ORDER BY id)
		   FROM claimed))
	GROUP BY status ORDER BY status;});
is($stdout, "done|498\nrefused|2", 'a stale token and a negative cost refused, the other 498 done');

my ($move) = grep { /Query Text: WITH m AS \(DELETE FROM ONLY/ } split /(?=NOTICE:)/, $stderr;
ok(defined $move, 'auto_explain showed the move') or diag($stderr);
$move //= '';
like($move, qr/Tid Scan on hx_task t/, 'the move reads the queue by ctid');
like($move, qr/Index Scan using hx_task_pkey on hx_task x\s.*?Index Cond: \(id = ANY/s,
	'the ctids come from one primary-key scan of the ids');
unlike($move, qr/Join|hx_task_lease_idx|hx_task_running_idx/,
	'no join to the ids, no scan of a partial index of running tasks');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE status = 'done') || ' ' || count(*) FILTER (WHERE status = 'running')
		  FROM hx_task t JOIN claimed c USING (id)}),
	'498 2', 'the queue agrees: 498 done, the 2 refused still running');


# the two still running fail: the failure statement's plan
($stdout, $stderr) = explained(q{
	SELECT count(hx_fail(c.id, c.lease_token, 'boom'))
	  FROM claimed c JOIN hx_task t USING (id) WHERE t.status = 'running';});
is($stdout, '2', 'the two failed');
my ($fail) = grep { /Query Text: WITH f AS \(SELECT u\.\*/ } split /(?=NOTICE:)/, $stderr;
ok(defined $fail, 'auto_explain showed the failure statement') or diag($stderr);
$fail //= '';
like($fail, qr/Index Scan using hx_task_pkey on hx_task x\s.*?Index Cond: \(id = u\.id\)/s,
	'each failure finds its task by primary key');
like($fail, qr/Tid Scan on hx_task t\s.*?TID Cond: \(ctid = f\.tid\)/s, 'and updates it where it is');
unlike($fail, qr/Join Filter|Hash Join|Merge Join|hx_task_lease_idx|hx_task_running_idx/,
	'no join on id, no scan of a partial index of running tasks');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(t.status || ':' || (SELECT count(*) FROM hx_error e WHERE e.task_id = t.id), ' ')
		  FROM hx_task t JOIN claimed c USING (id) WHERE t.status <> 'done'}),
	'failed:1 failed:1', 'both wait for a retry, each with its hx_error row');

# the external claim, planned on the statistics of a queue that a vacuum
# left with one live row at its end (20,000 tasks had just gone through
# it): it updates the rows it locked where they are, with no join of the
# queue to them (that join was a full scan of the primary key with the
# claimed rows rescanned for each task: 3.6 s for a claim of 500)
$node->safe_psql('postgres', q{
	SELECT count(*) FROM hx_submit_batch('ext_plan',
		ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, 20000) g), origin => 'user');
	SELECT hx_register('ext_keep');
	SELECT hx_submit('ext_keep', '{}', origin => 'user');
	DELETE FROM hx_task WHERE task_type = 'ext_plan';
	VACUUM hx_task;
	SELECT count(*) FROM hx_submit_batch('ext_plan',
		ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, 3000) g), origin => 'user');
});
is( $node->safe_psql('postgres', q{SELECT relpages > 100 AND reltuples < 2 FROM pg_class WHERE relname = 'hx_task'}),
	't', 'the statistics say: many pages, one row');
($stdout, $stderr) = explained(q{
	SELECT count(*) FROM hx_claim('plan-test', ARRAY['ext_plan'], 'stream', 500, '5 minutes');});
is($stdout, '500', 'the claim took 500 tasks');
my ($claim) = grep { /Query Text: WITH c AS (MATERIALIZED )?\(SELECT t\.id/ } split /(?=NOTICE:)/, $stderr;
ok(defined $claim, 'auto_explain showed the claim') or diag($stderr);
$claim //= '';
like($claim, qr/Tid Scan on hx_task t\s.*?TID Cond: \(ctid = ANY/s, 'the claim updates its tasks by ctid');
like($claim, qr/Index Scan using hx_task_pkey on hx_task x\s.*?Index Cond: \(id = ANY/s,
	'the ctids come from one primary-key scan of the claimed ids');
unlike($claim, qr/= c\.id\)/, 'no join of the queue to the claimed rows');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_task WHERE task_type = 'ext_plan' AND status = 'running'
		   AND executor = 'plan-test' AND lease_token IS NOT NULL AND attempts = 1}),
	'500', 'the queue agrees: 500 running, leased to the claimer');

$node->stop;
done_testing();
