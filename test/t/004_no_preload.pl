# 004_no_preload.pl - without shared_preload_libraries the extension can be
# created and rules can be tried, but what needs the workers fails with
# SQLSTATE 55000 and a hint naming shared_preload_libraries, queuing
# nothing; with hybridexec.stream_workers = 0 no worker runs.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('nopreload', preload => 0);
$node->safe_psql('postgres', q{
	CREATE FUNCTION noop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
	SELECT hx_register('noop', 'noop(jsonb)');
});
is($node->safe_psql('postgres', q{SELECT route || ' ' || rule_name FROM hx_classify('noop', origin => 'user')}),
	'stream user-initiated', 'hx_classify works without the preload');

my ($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT hx_submit('noop', '{}', origin => 'user')});
isnt($ret, 0, 'hx_submit fails without the preload');
like($stderr, qr/hx_submit\(\) needs hybridexec to be loaded via shared_preload_libraries/, 'with a clear message');
like($stderr, qr/HINT:  Add hybridexec to shared_preload_libraries in postgresql.conf and restart the server./,
	'and a hint naming shared_preload_libraries');
is( $node->safe_psql('postgres', q{
		DO $$ BEGIN PERFORM hx_submit('noop', '{}');
		EXCEPTION WHEN object_not_in_prerequisite_state THEN RAISE NOTICE 'sqlstate %', SQLSTATE; END $$;
		SELECT 'checked'}),
	'checked', 'the error is object_not_in_prerequisite_state');
($ret, $stdout, $stderr) = $node->psql('postgres', q{SELECT * FROM hx_workers()});
like($stderr, qr/hx_workers\(\) needs hybridexec to be loaded via shared_preload_libraries/,
	'hx_workers() fails the same way');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_task'), '0', 'nothing was queued');
$node->stop;

my $none = HxTest::new_node('noworkers', conf => ['hybridexec.stream_workers = 0']);
is( $none->safe_psql('postgres',
		"SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'hybridexec%'"),
	'0', 'hybridexec.stream_workers = 0 starts no worker');
$none->safe_psql('postgres', q{
	CREATE FUNCTION noop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT $1';
	SELECT hx_register('noop', 'noop(jsonb)');
	SELECT hx_submit('noop', '{}', origin => 'user');
});
is($none->safe_psql('postgres', "SELECT status || ' ' || attempts FROM hx_task"), 'queued 0',
	'a stream task is queued for whoever will run it');
is($none->safe_psql('postgres', 'SELECT count(*) FROM hx_workers()'), '0', 'hx_workers() lists no slot');
$none->stop;
done_testing();
