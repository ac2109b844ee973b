# 005_poison.pl - a task whose handler crashes the whole server.
#
# The handler kills its own backend with SIGKILL, so the postmaster
# crash-restarts the server every time the task runs.  The attempt must be
# counted durably before the handler runs, or the task would be forgotten
# and retried forever (a crash loop); with max_attempts = 2 the task must
# end dead after at most two crashes, with its errors booked and the server
# serving other tasks again.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('poison', restart_after_crash => 'on');
HxTest::setup_keyed($node);
$node->safe_psql('postgres', q{
	CREATE FUNCTION poison(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		EXECUTE format('COPY (SELECT 1) TO PROGRAM %L',
					   'kill -9 ' || pg_backend_pid());
		RETURN p;
	END $$;
	SELECT hx_register('poison', 'poison(jsonb)', max_attempts => 2);
});

my $id = $node->safe_psql('postgres',
	q{SELECT hx_submit('poison', '{}', origin => 'user')});
ok($node->poll_query_until('postgres',
		"SELECT status = 'dead' FROM hx_task WHERE id = $id"),
	'the poison task ends dead instead of crashing the server forever');

my $log = slurp_file($node->logfile);
my $crashes = () = $log =~ /terminating any other active server processes/g;
cmp_ok($crashes, '>=', 1, "the handler did crash the server ($crashes time(s))");
cmp_ok($crashes, '<=', 2, 'no more crashes than max_attempts');

is( $node->safe_psql('postgres',
		"SELECT attempts || ' ' || (finished_at IS NOT NULL)::text FROM hx_task WHERE id = $id"),
	'2 true', 'both attempts counted, the task finished');
is( $node->safe_psql('postgres',
		"SELECT max(attempt) || ' ' || (count(*) = count(DISTINCT attempt))::text FROM hx_error WHERE task_id = $id"),
	'2 true', 'the crashed attempts are in hx_error, the last one included, none twice');

# The server still does its work afterwards.
$node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', jsonb_build_object('k', 'after-' || i), origin => 'user')
		FROM generate_series(1, 20) i});
HxTest::wait_finished($node, 'after-', 'tasks after the poison task');
HxTest::check_exactly_once($node, 'after-', 20, 'tasks after the poison task');

my $log2 = slurp_file($node->logfile);
my $crashes2 = () = $log2 =~ /terminating any other active server processes/g;
is($crashes2, $crashes, 'no crash since the poison task died');

$node->stop;
done_testing();
