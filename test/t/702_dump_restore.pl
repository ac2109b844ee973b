# 702_dump_restore.pl - pg_dump and pg_restore lose nothing; DROP
# EXTENSION leaves nothing behind.
#
# A busy database (HxRelease::fill: tasks in every status, errors, runs,
# bookings, a default rule changed and another removed, a default price
# changed, a watched table, a department, a window of the DBA) is dumped
# with pg_dump -Fc and restored with plain pg_restore into a fresh server
# with the library preloaded.  Every hybridexec table holds the same rows
# (compared table by table), shipped defaults are neither duplicated nor
# revived, sequences continue after the restored ids, the windows' pg_cron
# jobs are there, and the restored queue runs: a window takes its batch
# tasks, an external executor completes a task with the lease it got
# before the dump.  Then DROP EXTENSION takes the pg_cron jobs along and
# CREATE EXTENSION starts clean.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxRelease;

my %conf = (
	shared_preload_libraries => 'hybridexec,pg_cron',
	'cron.database_name' => 'postgres',
	'cron.use_background_workers' => 'on',
	create_extension => 0);
my $a = HxTest::new_node('source', %conf);
$a->safe_psql('postgres', 'CREATE EXTENSION pg_cron; CREATE EXTENSION hybridexec');
HxTest::setup_keyed($a);
# no window opens on its own during the test
$a->safe_psql('postgres', q{UPDATE hx_window SET schedule = '0 5 1 1 *' WHERE name = 'fast'});
HxRelease::fill($a, 'postgres');

is( $a->safe_psql('postgres', q{SELECT string_agg(status || ':' || n, ' ' ORDER BY status)
		FROM (SELECT status, count(*) n FROM hx_task GROUP BY status) s}),
	'cancelled:1 dead:1 done:40 queued:15 running:2', 'the source holds tasks in every status');

my @tables = HxRelease::tables($a, 'postgres');
cmp_ok(scalar @tables, '>=', 18, 'the extension has ' . scalar(@tables) . ' tables');
# hx_state: what is dumped of it (tombstones); the rest is per installation
my %where = ('_hybridexec.hx_state' => q{key LIKE 'removed %'});
my %rows = map { $_ => HxRelease::rows($a, 'postgres', $_, undef, $where{$_}) } @tables;
my $seqs = q{SELECT string_agg(c.oid::regclass || '=' || s.last_value, ' ' ORDER BY c.oid::regclass::text)
			   FROM pg_class c, LATERAL (SELECT pg_sequence_last_value(c.oid) AS last_value) s
			  WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace AND c.relname LIKE 'hx_%'};
my $seq_before = $a->safe_psql('postgres', $seqs);
my $jobs = q{SELECT string_agg(jobname || ' | ' || schedule || ' | ' || command || ' | ' || active, E'\n' ORDER BY jobname)
			   FROM cron.job};
my $jobs_before = $a->safe_psql('postgres', $jobs);
like($jobs_before, qr/hybridexec window weekly \| 0 3 \* \* 0/, 'the source has the pg_cron job of its own window');

my $dump = PostgreSQL::Test::Utils::tempdir . '/busy.dump';
command_ok(['pg_dump', '-Fc', '-f', $dump, '-d', $a->connstr('postgres')], 'pg_dump -Fc of the busy database');
for my $t (@tables)
{
	is(HxRelease::rows($a, 'postgres', $t, undef, $where{$t}), $rows{$t}, "$t: the source did not change during the dump") or last;
}

# a fresh server; the roles come from pg_dumpall --globals-only in real life
my $b = HxTest::new_node('target', %conf);
$b->safe_psql('postgres', 'CREATE ROLE hx_rel_member NOLOGIN');
my ($out, $err);
my $ok = IPC::Run::run(['pg_restore', '-d', $b->connstr('postgres'), $dump], '>', \$out, '2>', \$err);
ok($ok, 'pg_restore into the fresh server succeeded');
is($err, '', '... without a single error or warning');

for my $t (@tables)
{
	is(HxRelease::rows($b, 'postgres', $t, undef, $where{$t}), $rows{$t}, "$t: the same rows after the restore");
}
is($b->safe_psql('postgres', q{SELECT count(*) FROM hx_rule WHERE name = 'interactive-sla'}), '0',
	'a default rule removed before the dump stays removed');
is($b->safe_psql('postgres', q{SELECT count(*) FROM hx_window WHERE name IN ('fast', 'nightly')}), '2',
	'the default windows are there once');
is($b->safe_psql('postgres', $seqs), $seq_before, 'every sequence is where it was');
is($b->safe_psql('postgres', $jobs), $jobs_before, "the windows' pg_cron jobs exist again, as they were");

# the restored queue runs on the new server
my $max = $b->safe_psql('postgres', 'SELECT max(id) FROM hx_task');
my $new = $b->safe_psql('postgres', q{SELECT hx_submit('keyed', '{"k": "after-restore"}', origin => 'user')});
cmp_ok($new, '>', $max, 'a new task gets an id after the restored ones');
ok( $b->poll_query_until('postgres', qq{SELECT status = 'done' FROM hx_task WHERE id = $new}),
	'the stream workers run it');
my $run = $b->safe_psql('postgres', q{SELECT hx_run_window('nightly')});
ok( $b->poll_query_until('postgres', qq{SELECT status = 'done' FROM hx_window_run WHERE id = $run}),
	'a window run on the new server ended');
is( $b->safe_psql('postgres', q{
		SELECT count(*) FROM hx_task WHERE payload->>'k' LIKE 'rn%' AND status NOT IN ('done', 'cancelled')}),
	'0', 'it ran the batch tasks queued before the dump');
my ($id, $token) = split /\|/, $b->safe_psql('postgres', q{
	SELECT id, lease_token FROM hx_task WHERE task_type = 'ext' AND status = 'running' ORDER BY id LIMIT 1});
$b->safe_psql('postgres', qq{SELECT hx_complete($id, '$token', '{"ok": true}')});
is($b->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $id"), 'done',
	'an external executor completes a task with the lease it got before the dump');
is( $b->safe_psql('postgres', q{
		SELECT count(*) FROM (SELECT k FROM seen WHERE k IS NOT NULL GROUP BY k HAVING count(*) <> 1) d}),
	'0', 'no task ran twice across the dump');
is($b->safe_psql('postgres', q{SELECT string_agg(id || ':' || (summary IS NOT NULL), ',' ORDER BY id) FROM docs}),
	'1:true,2:true', 'the watched rows\' tasks ran in the window, their results written back');

# DROP EXTENSION takes its pg_cron jobs along (not when it is rolled
# back); CREATE EXTENSION starts clean
my $njobs = $b->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'hybridexec%'});
cmp_ok($njobs, '>=', 3, "the windows have their jobs ($njobs)");
$b->safe_psql('postgres', 'BEGIN; DROP EXTENSION hybridexec CASCADE; ROLLBACK;');
is($b->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'hybridexec%'}), $njobs,
	'a DROP EXTENSION that is rolled back keeps the jobs');
$b->safe_psql('postgres', 'DROP EXTENSION hybridexec CASCADE');
is($b->safe_psql('postgres', q{SELECT count(*) FROM cron.job WHERE jobname LIKE 'hybridexec%'}), '0',
	'DROP EXTENSION removed the windows\' pg_cron jobs');
is($b->safe_psql('postgres', q{SELECT count(*) FROM pg_namespace WHERE nspname = '_hybridexec'}), '0',
	'... and the internal schema');
$b->safe_psql('postgres', 'CREATE EXTENSION hybridexec');
is( $b->safe_psql('postgres', q{
		SELECT (SELECT count(*) FROM hx_task) || ' ' || (SELECT string_agg(name, ',' ORDER BY name) FROM hx_window)
			   || ' ' || (SELECT count(*) FROM hx_rule)}),
	'0 fast,nightly 4', 'CREATE EXTENSION again starts clean: no tasks, the default windows and rules');
is($b->safe_psql('postgres', q{SELECT string_agg(jobname, ',' ORDER BY jobname) FROM cron.job}),
	'hybridexec window fast,hybridexec window nightly', '... with the jobs of the default windows only');

done_testing();
