# 801_proxy.pl - hybridexec over several servers: hybridexec_proxy, on
# PL/Proxy, in front of three shards, all on this machine.
#
#   1. Set-up as the README tells a DBA: hybridexec on three shards and a
#      front, plproxy and hybridexec_proxy on the front, hx_add_shards()
#      with two shards, then the third (each shard learns its number),
#      the policy set on the front and pushed (drift before, none after);
#      bad set-up input is refused, and so is a policy import by an
#      administrator who is not the extension's owner.
#   2. Submits through the front (hx_proxy first in search_path): stream
#      tasks of twelve departments with an in-database handler created on
#      every shard, and batch tasks (hx_submit_batch); every task is on the
#      shard its department hashes to, and its id says that shard; the
#      front itself holds none.
#   3. Stream tasks run on their shard exactly once; hx_await through the
#      front waits for ids of all shards at once, in the order given; a
#      batch window run on each shard runs that shard's batch tasks
#      exactly once.
#   4. The combined reports (hx_cost_report, hx_stats, hx_savings,
#      hx_window_plan) equal the sums of the shards' own reports.
#   5. Drift: a rule changed on one shard shows in hx_policy_drift() and
#      hx_health(); a push puts it right.  An application role (a
#      submitter on every server) submits and waits through the front,
#      and is the task's submitter on its shard.
#   6. A shard stopped: submits routed to it fail with 08006 naming it,
#      hx_health() says so, the other shards keep taking and finishing
#      work; its queued tasks (stream and batch) finish once it is back,
#      exactly once.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my @shards = map { HxTest::new_node("shard$_") } 0 .. 2;
my $front = HxTest::new_node('front');

# the same handlers everywhere (the policy names them), types registered on
# the front only: the push copies them
for my $node (@shards, $front)
{
	HxTest::setup_keyed($node);
	HxBatch::setup_batch_keyed($node);
}
for my $s (0 .. 2)
{
	ok( $shards[$s]->poll_query_until('postgres',
			"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'"),
		"shard $s: stream workers up");
}

# --- 1. set-up ------------------------------------------------------------
sub conninfo { my ($node) = @_; return "'host=" . $node->host . ' port=' . $node->port . " dbname=postgres'"; }
# two shards first, the third added later (as a growing cluster would)
$front->safe_psql('postgres', qq{
	CREATE EXTENSION plproxy;
	CREATE EXTENSION hybridexec_proxy;
	SELECT * FROM hx_proxy.hx_add_shards(ARRAY[@{[ conninfo($shards[0]) ]}, @{[ conninfo($shards[1]) ]}]);
});
is($front->safe_psql('postgres', "SELECT string_agg(shard || ':' || partitions, ' ' ORDER BY shard) FROM hx_proxy.hx_shards()"),
	'0:32 1:32', 'two shards, 32 partitions each');
$front->safe_psql('postgres', "SELECT * FROM hx_proxy.hx_add_shards(ARRAY[@{[ conninfo($shards[2]) ]}])");
is( $front->safe_psql('postgres',
		"SELECT string_agg(shard || ':' || partitions || ':' || first_id, ' ' ORDER BY shard) FROM hx_proxy.hx_shards()"),
	'0:22:1 1:21:281474976710656 2:21:562949953421312',
	'three shards, 64 partitions spread 22/21/21, ids from shard * 2^48');
for my $s (0 .. 2)
{
	is($shards[$s]->safe_psql('postgres', 'SELECT hx_shard_number()'), $s, "shard $s knows its number");
}

my ($ret, $out, $err) = $front->psql('postgres',
	"SELECT * FROM hx_proxy.hx_add_shards(ARRAY['host=" . $shards[0]->host . ' port=' . $shards[0]->port . " dbname=postgres'])");
like($err, qr/every shard needs a connection string of its own/, 'a shard added twice is refused');
($ret, $out, $err) = $front->psql('postgres', "SELECT * FROM hx_proxy.hx_add_shards('{}')");
like($err, qr/needs one connection string per new shard/, 'no connection strings: refused');
($ret, $out, $err) = $shards[2]->psql('postgres', 'SELECT hx_shard_join(1)');
like($err, qr/this database is shard 2, not shard 1/, 'a shard keeps its number');
($ret, $out, $err) = $front->psql('postgres', "UPDATE hx_proxy.hx_proxy_config SET route_by = 'origin'");
like($err, qr/cannot route by "origin"/, 'route_by other than department or task_type: refused');
($ret, $out, $err) = $shards[0]->psql('postgres', "SELECT * FROM hx_policy_import('{\"format\": 1}')");
like($err, qr/the policy must be a document made by hx_policy_export/, 'hx_policy_import of a bad document: refused');
($ret, $out, $err) = $shards[0]->psql('postgres',
	"CREATE ROLE dba_helper; GRANT hybridexec_admin TO dba_helper; SET ROLE dba_helper; "
	  . "SELECT * FROM hx_policy_import(hx_policy_export())");
like($err, qr/only the owner of extension hybridexec may import policy/,
	'hx_policy_import is the owner\'s, not an administrator\'s (it sets the roles handlers run as)');

# policy: one rule of the front's own, then pushed
$front->safe_psql('postgres', q{
	INSERT INTO hx_rule (name, position, department, route) VALUES ('vip-dept', 5, 'vip', 'stream');
});
ok($front->safe_psql('postgres', 'SELECT count(*) FROM hx_proxy.hx_policy_drift() WHERE NOT in_sync') > 0,
	'before the push the shards lack the front\'s policy');
ok($front->safe_psql('postgres', 'SELECT sum(changed) FROM hx_proxy.hx_push_policy()') > 0,
	'hx_push_policy() changed rows on the shards');
is( $front->safe_psql('postgres',
		"SELECT count(*) || '/' || count(*) FILTER (WHERE in_sync) FROM hx_proxy.hx_policy_drift()"),
	'21/21', 'after the push every policy table of every shard is in sync');
is($shards[1]->safe_psql('postgres', "SELECT route FROM hx_rule WHERE name = 'vip-dept'"),
	'stream', 'the front\'s rule is on the shards');

# --- 2. submits through the front -------------------------------------------
my $depts = "(SELECT 'd' || lpad(x::text, 2, '0') AS d FROM generate_series(1, 12) x) ds";
my %per_shard = map { $_ => 0 } 0 .. 2;
for my $row (split /\n/, $front->safe_psql('postgres',
		"SELECT d || ' ' || hx_proxy.hx_shard_for('keyed', d) FROM $depts"))
{
	my ($d, $s) = split / /, $row;
	$per_shard{$s}++;
}
my ($d_on2) = split /\n/, $front->safe_psql('postgres',
	"SELECT d FROM $depts WHERE hx_proxy.hx_shard_for('keyed', d) = 2 ORDER BY d");
ok($per_shard{0} && $per_shard{1} && $per_shard{2},
	"the twelve departments spread over all shards ($per_shard{0}/$per_shard{1}/$per_shard{2})");

$front->safe_psql('postgres', qq{
	SET search_path = hx_proxy, public;
	CREATE TABLE public.submitted AS
	SELECT hx_submit('keyed', jsonb_build_object('k', k), origin => 'user', department => d) AS id, k, d
	  FROM (SELECT 's' || hx_shard_for('keyed', d) || '-' || d || '-' || i AS k, d
			  FROM $depts, generate_series(1, 10) i) x;
	INSERT INTO public.submitted
	SELECT b.id, b.payloads[b.n]->>'k', b.d
	  FROM (SELECT d, p AS payloads, hx_submit_batch('bk', p, department => d) AS id,
				   generate_series(1, 5) AS n
			  FROM (SELECT d, ARRAY(SELECT jsonb_build_object('k', 'b' || hx_shard_for('bk', d) || '-' || d || '-' || i)
									  FROM generate_series(1, 5) i) AS p
					  FROM $depts) y) b;
});
is($front->safe_psql('postgres', 'SELECT count(*) || ' . "'/'" . ' || count(DISTINCT id) FROM submitted'),
	'180/180', '180 tasks submitted through the front, 180 distinct ids');
is($front->safe_psql('postgres', 'SELECT count(*) FROM hx_task'), 0, 'the front holds no task');

for my $s (0 .. 2)
{
	my $want = $front->safe_psql('postgres',
		"SELECT string_agg(id || ':' || k, ',' ORDER BY id) FROM submitted WHERE hx_proxy.hx_shard_of(id) = $s");
	is( $shards[$s]->safe_psql('postgres',
			"SELECT string_agg(id || ':' || (payload->>'k'), ',' ORDER BY id) FROM hx_task"),
		$want, "shard $s holds exactly the tasks whose ids say shard $s");
	is( $shards[$s]->safe_psql('postgres',
			"SELECT count(*) FROM hx_task WHERE payload->>'k' NOT LIKE 's$s-%' AND payload->>'k' NOT LIKE 'b$s-%'"),
		0, "shard $s: every task is there because its department hashes to shard $s");
}

# --- 3. stream tasks, hx_await, batch windows -------------------------------
for my $s (0 .. 2)
{
	HxTest::wait_finished($shards[$s], "s$s-", "shard $s stream tasks");
	HxTest::check_exactly_once($shards[$s], "s$s-", 10 * $per_shard{$s}, "shard $s stream tasks");
}

is( $front->safe_psql('postgres', q{
		SET search_path = hx_proxy, public;
		WITH w AS (SELECT ARRAY(SELECT id FROM submitted WHERE k LIKE 's%' ORDER BY k) AS ids)
		SELECT (SELECT string_agg(a.id::text, ',') FROM w, hx_await(w.ids, '1 minute') a
				 WHERE a.status = 'done' AND a.result->>'k' = (SELECT k FROM submitted s WHERE s.id = a.id))
			   = (SELECT string_agg(i::text, ',') FROM w, unnest(w.ids) i)}),
	't', 'hx_await over ids of all shards: every task done with its result, in the order given');
like( $front->safe_psql('postgres', q{
		SELECT hx_proxy.hx_wait(min(s.id)) || ' ' || (SELECT r.result->>'k' FROM hx_proxy.hx_result(min(s.id)) r)
		  FROM submitted s WHERE s.k LIKE 's1-%'}),
	qr/^done s1-d\d\d-\d+$/, 'hx_wait and hx_result by id reach the task\'s shard');

for my $s (0 .. 2)
{
	my $run = HxBatch::run_window($shards[$s], 'nightly');
	HxBatch::wait_run($shards[$s], $run, "shard $s nightly window");
	HxBatch::check_batch_exactly_once($shards[$s], "b$s-", 5 * $per_shard{$s}, "shard $s batch tasks");
}

# --- 4. combined reports = sums of the shards' own ---------------------------
my ($from, $to) = split /\|/, $front->safe_psql('postgres',
	"SELECT (now() - interval '1 hour') || '|' || (now() + interval '1 hour')");

# sums, per key, of the shards' own rows (key|n1|n2|...), printed like the front's
sub shard_sums
{
	my ($query) = @_;
	my %sum;
	for my $node (@shards)
	{
		for my $row (split /\n/, $node->safe_psql('postgres', $query))
		{
			my ($key, @n) = split /\|/, $row;
			$sum{$key}[$_] += $n[$_] for 0 .. $#n;
		}
	}
	return join("\n", map { join('|', $_, map { 0 + sprintf('%.6f', $_) } @{ $sum{$_} }) } sort keys %sum);
}

sub front_rows
{
	my ($query) = @_;
	return join("\n", map { my ($k, @n) = split /\|/; join('|', $k, map { 0 + $_ } @n) }
		  sort split /\n/, $front->safe_psql('postgres', $query));
}

# report, its columns (the key first: group, or type and route, ...), arguments
my $cost = "\"group\" || '/' || currency || '|' || tasks || '|' || attempts || '|' || cost || '|' || baseline_cost || '|' || saved";
my $stats = "task_type || '/' || route || '|' || queued || '|' || running || '|' || done || '|' || dead || '|' || reused";
my $savings = "currency || '|' || attempts || '|' || actual_cost || '|' || all_stream_cost || '|' || all_batch_cost || '|' || saved || '|' || interactive_tasks";
my %combined;
for my $report (
	[ 'hx_cost_report', $cost, "'department', '$from', '$to'" ],
	[ 'hx_cost_report', $cost, "'route', '$from', '$to'" ],
	[ 'hx_stats', $stats, '' ],
	[ 'hx_savings', $savings, "'$from', '$to'" ],
	[ 'hx_window_plan', "window_name || '|' || backlog", '' ])
{
	my ($fn, $cols, $args) = @$report;
	$combined{$fn} ||= front_rows("SELECT $cols FROM hx_proxy.$fn($args)");
	is(front_rows("SELECT $cols FROM hx_proxy.$fn($args)"), shard_sums("SELECT $cols FROM $fn($args)"),
		"$fn($args): the front's is the sum of the shards'");
}
like($combined{hx_cost_report}, qr{^d01/USD\|15\|15\|}, 'a department\'s 10 stream and 5 batch tasks are counted once');
like($combined{hx_stats}, qr{^bk/batch\|0\|0\|60\|0\|0\nkeyed/stream\|0\|0\|120\|0\|0$},
	'hx_stats: 60 batch and 120 stream tasks done over the cluster');
is( $front->safe_psql('postgres',
		"SELECT string_agg(DISTINCT shard::text, ',') FROM hx_proxy.hx_cost_report_by_shard('department', '$from', '$to')"),
	'0,1,2', 'hx_cost_report_by_shard shows each shard\'s rows with its number');

# --- 5. drift ------------------------------------------------------------------
$shards[1]->safe_psql('postgres', "UPDATE hx_rule SET description = 'edited on shard 1' WHERE name = 'slow-batch'");
is( $front->safe_psql('postgres',
		"SELECT string_agg(shard || ':' || policy_table, ',') FROM hx_proxy.hx_policy_drift() WHERE NOT in_sync"),
	'1:hx_rule', 'a rule changed on shard 1 is drift of shard 1\'s hx_rule');
is( $front->safe_psql('postgres',
		"SELECT string_agg(severity || ' ' || subject, ',') FROM hx_proxy.hx_health() WHERE problem = 'policy drift'"),
	'warning shard 1: hx_rule', 'hx_health() reports it');
is( $front->safe_psql('postgres',
		"SELECT string_agg(shard || ':' || policy_table || ':' || changed, ',') FROM hx_proxy.hx_push_policy() WHERE changed > 0 OR deleted > 0"),
	'1:hx_rule:1', 'a push changes that one row back');
is( $front->safe_psql('postgres',
		"SELECT count(*) FROM hx_proxy.hx_policy_drift() WHERE NOT in_sync")
	  . $front->safe_psql('postgres', "SELECT count(*) FROM hx_proxy.hx_health() WHERE problem = 'policy drift'"),
	'00', 'no drift left, and hx_health() says none');
is($shards[1]->safe_psql('postgres', "SELECT description FROM hx_rule WHERE name = 'slow-batch'"),
	$front->safe_psql('postgres', "SELECT description FROM hx_rule WHERE name = 'slow-batch'"),
	'the shard has the front\'s rule again');

# an application role: the same role on every server, a submitter; through
# the front it reaches the shards as itself (the PUBLIC user mapping has no
# user), so the shards see it as the tasks' submitter
for my $node (@shards, $front)
{
	$node->safe_psql('postgres', 'CREATE ROLE app LOGIN; GRANT hybridexec_submitter TO app');
}
my $app_id = $front->safe_psql('postgres', qq{
	SET ROLE app;
	SET search_path = hx_proxy, public;
	SELECT hx_submit('keyed', '{"k": "s2-app-1"}', origin => 'user', department => '$d_on2')});
is( $front->safe_psql('postgres', "SET ROLE app; SELECT hx_proxy.hx_wait($app_id, '1 minute')"),
	'done', 'a submitter role submits and waits through the front');
is($shards[2]->safe_psql('postgres', "SELECT submitted_by FROM hx_task WHERE id = $app_id"),
	'app', '... and the shard records it as the task\'s submitter');

# --- 6. a shard down ------------------------------------------------------------
my ($d_down) = split /\n/, $front->safe_psql('postgres',
	"SELECT d FROM $depts WHERE hx_proxy.hx_shard_for('keyed', d) = 1 ORDER BY d");
my ($d_up) = split /\n/, $front->safe_psql('postgres',
	"SELECT d FROM $depts WHERE hx_proxy.hx_shard_for('keyed', d) = 0 ORDER BY d");

# work queued on shard 1 before it stops: stream tasks due in 10 seconds,
# batch tasks waiting for the window
$front->safe_psql('postgres', qq{
	SET search_path = hx_proxy, public;
	SELECT hx_submit('keyed', jsonb_build_object('k', 'q1-' || i), origin => 'user', department => '$d_down',
					 run_at => now() + interval '10 seconds')
	  FROM generate_series(1, 5) i;
	SELECT hx_submit_batch('bk', ARRAY(SELECT jsonb_build_object('k', 'qb1-' || i) FROM generate_series(1, 5) i),
						   department => '$d_down');
});
is( $shards[1]->safe_psql('postgres',
		"SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'q%' AND status = 'queued'"),
	10, 'ten tasks queued on shard 1');
$shards[1]->stop('fast');

($ret, $out, $err) = $front->psql('postgres',
	"\\set VERBOSITY verbose\nSET search_path = hx_proxy, public;\n"
	  . "SELECT hx_submit('keyed', '{\"k\": \"x1\"}', origin => 'user', department => '$d_down')");
like($err, qr/08006: shard 1 cannot be reached \(submit failed\)/, 'a submit routed to the stopped shard fails with 08006 naming it');
like($err, qr/HINT:\s+Only shard 1's tasks wait/, '... and a hint');
is( $front->safe_psql('postgres',
		"SELECT string_agg(severity || ' ' || subject, ',') FROM hx_proxy.hx_health() WHERE problem = 'shard unreachable'"),
	'critical shard 1', 'hx_health() names the shard that cannot be reached');
is( $front->safe_psql('postgres', qq{
		SET search_path = hx_proxy, public;
		SELECT hx_wait(hx_submit('keyed', '{"k": "s0-up-1"}', origin => 'user', department => '$d_up'), '1 minute')}),
	'done', 'meanwhile a task for another shard is submitted and done');
is( $front->safe_psql('postgres', qq{
		SET search_path = hx_proxy, public;
		SELECT string_agg(status, ',') FROM hx_await(ARRAY(SELECT id FROM submitted WHERE d = '$d_up' AND k LIKE 's%' ORDER BY id))}),
	join(',', ('done') x 10), 'and hx_await of that shard\'s tasks works');

$shards[1]->start;
HxTest::wait_finished($shards[1], 'q1-', 'shard 1 back: its deferred stream tasks');
HxTest::check_exactly_once($shards[1], 'q1-', 5, 'shard 1 back: deferred stream tasks');
my $run = HxBatch::run_window($shards[1], 'nightly');
HxBatch::wait_run($shards[1], $run, 'shard 1 back: nightly window');
HxBatch::check_batch_exactly_once($shards[1], 'qb1-', 5, 'shard 1 back: batch tasks queued before the stop');
like( $front->safe_psql('postgres', qq{
		SET search_path = hx_proxy, public;
		SELECT hx_proxy.hx_shard_of(hx_submit('keyed', '{"k": "s1-back-1"}', origin => 'user', department => '$d_down'))}),
	qr/^1$/, 'submits routed to shard 1 work again');
is($front->safe_psql('postgres', "SELECT count(*) FROM hx_proxy.hx_health() WHERE problem = 'shard unreachable'"),
	0, 'and hx_health() no longer reports it');

done_testing();
