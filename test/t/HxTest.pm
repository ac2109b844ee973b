# HxTest.pm - shared set-up for hybridexec's TAP tests: a node with the
# library preloaded and the extension created, and a "keyed" handler whose
# effects (one row per run in table seen) let tests count executions.
package HxTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# new_node(name, preload => 1, extension => 1, conf => [lines])
sub new_node
{
	my ($name, %opt) = @_;
	my $preload = exists $opt{preload} ? $opt{preload} : 1;
	my $extension = exists $opt{extension} ? $opt{extension} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'hybridexec'")
	  if $preload;
	$node->append_conf('postgresql.conf', join("\n",
		"hybridexec.retry_backoff = 10ms",
		"max_worker_processes = 16",
		"log_min_messages = log",
		@{ $opt{conf} || [] }));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION hybridexec') if $extension;
	return $node;
}

# The keyed handler: inserts its key into seen; optional behaviour from the
# payload: "sleep" seconds, "sleep_first" seconds on the first attempt only
# (per key, counted with a sequence-backed table outside the transaction is
# impossible, so a sequence per test is used: first nextval sleeps), "fail"
# raises.
sub setup_keyed
{
	my ($node, %opt) = @_;
	my $max = $opt{max_attempts} || 3;
	my $timeout = $opt{timeout} || '1 minute';

	$node->safe_psql('postgres', qq{
		CREATE TABLE seen (k text, at timestamptz DEFAULT clock_timestamp());
		CREATE SEQUENCE first_run;
		CREATE FUNCTION keyed(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
		BEGIN
			INSERT INTO seen (k) VALUES (p->>'k');
			IF p ? 'sleep' THEN
				PERFORM pg_sleep((p->>'sleep')::float8);
			END IF;
			IF p ? 'sleep_first' AND nextval('first_run') = 1 THEN
				PERFORM pg_sleep((p->>'sleep_first')::float8);
			END IF;
			IF p ? 'fail' THEN
				RAISE EXCEPTION 'keyed handler failed for %', p->>'k';
			END IF;
			RETURN jsonb_build_object('k', p->>'k');
		END
		\$\$;
		SELECT hx_register('keyed', 'keyed(jsonb)', max_attempts => $max, timeout => '$timeout');
	});
	return;
}

# Pids of the stream workers, from pg_stat_activity.
sub worker_pids
{
	my ($node) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity "
		  . "WHERE backend_type = 'hybridexec stream worker'");
	return split / /, $out;
}

# Waits until every keyed task is finished; fails the test on timeout.
sub wait_all_finished
{
	my ($node, $what) = @_;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM hx_task WHERE status IN ('queued', 'running', 'failed') AND route = 'stream'"),
		"$what: every stream task finished");
	return;
}

# Asserts that n tasks ran exactly once each and are done.
sub check_exactly_once
{
	my ($node, $n, $what) = @_;
	is( $node->safe_psql('postgres', "SELECT count(*) || '/' || count(DISTINCT k) FROM seen"),
		"$n/$n", "$what: every key's effect exactly once");
	is( $node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done') || '/' || count(*) FROM hx_task WHERE task_type = 'keyed'"),
		"$n/$n", "$what: no task lost, all done");
	return;
}

1;
