# 005_poison.pl - a task whose handler crashes the whole server.
#
# The handler kills its own backend with SIGKILL, so the postmaster
# crash-restarts the server every time the task runs.  The attempt must be
# counted before the handler runs, or the task would be forgotten and
# retried forever (a crash loop).  A first attempt's claim commits without
# waiting for its WAL flush, except for 30 s after a start that was not
# clean: a crash may forget it once, and the task comes back in that window,
# claimed durably from then on.  So with max_attempts = 2 the task ends dead
# after at most two crashes when it first runs after a crash, and at most
# three after a clean start; each time with its errors booked, none twice,
# and the server serving other tasks again.
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

# log_crashes(offset): crash restarts in the log after offset
sub log_crashes
{
	my ($offset) = @_;
	my $log = slurp_file($node->logfile, $offset);
	return scalar(() = $log =~ /terminating any other active server processes/g);
}

# poison_dies(label, most): submits a poison task and checks that it ends
# dead after one to "most" crashes, both attempts counted and booked once
sub poison_dies
{
	my ($label, $most) = @_;
	my $offset = -s $node->logfile;
	my $id = $node->safe_psql('postgres',
		q{SELECT hx_submit('poison', '{}', origin => 'user')});
	ok($node->poll_query_until('postgres',
			"SELECT status = 'dead' FROM hx_task WHERE id = $id"),
		"$label: the poison task ends dead instead of crashing the server forever");
	my $crashes = log_crashes($offset);
	cmp_ok($crashes, '>=', 1, "$label: the handler did crash the server ($crashes time(s))");
	cmp_ok($crashes, '<=', $most, "$label: at most $most crash(es)");
	is( $node->safe_psql('postgres',
			"SELECT attempts || ' ' || (finished_at IS NOT NULL)::text FROM hx_task WHERE id = $id"),
		'2 true', "$label: both attempts counted, the task finished");
	is( $node->safe_psql('postgres',
			"SELECT max(attempt) || ' ' || (count(*) = count(DISTINCT attempt))::text FROM hx_error WHERE task_id = $id"),
		'2 true', "$label: the crashed attempts are in hx_error, the last one included, none twice");
}

# The server has just crashed (any backend killed): for 30 s every claim is
# durable, so the task crashes the server at most max_attempts times.
$node->psql('postgres', q{COPY (SELECT 1) TO PROGRAM 'kill -9 $PPID'});
ok($node->poll_query_until('postgres',
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'"),
	'the server is back after a crash, with its stream workers');
poison_dies('after a crash', 2);

# After a clean restart the first attempt's claim may be forgotten once.
$node->restart;
poison_dies('after a clean restart', 3);

# The server still does its work afterwards.
my $before = log_crashes(0);
$node->safe_psql('postgres',
	q{SELECT hx_submit('keyed', jsonb_build_object('k', 'after-' || i), origin => 'user')
		FROM generate_series(1, 20) i});
HxTest::wait_finished($node, 'after-', 'tasks after the poison task');
HxTest::check_exactly_once($node, 'after-', 20, 'tasks after the poison task');
is(log_crashes(0), $before, 'no crash since the poison tasks died');

$node->stop;
done_testing();
