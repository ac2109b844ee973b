# HxTest.pm - shared set-up for hybridexec's TAP tests.
#
#   new_node(name, %conf)       a started node with the library preloaded and
#                               the extension created in database postgres
#   setup_keyed(node, %opt)     table seen + handler keyed(jsonb), type "keyed"
#   check_exactly_once(...)     every task of a key prefix done, its effect
#                               (row in seen) there exactly once, by that task
#   hold_gate / release_gate    an advisory lock that keyed tasks with a
#                               "gate" in their payload wait for, so a test
#                               knows for sure a handler is running
#   notifications(...)          the notifications a LISTENing background psql
#                               received, up to a sentinel NOTIFY
#
# The tests never sleep and hope: they poll with deadlines
# (poll_query_until), or wait for a sentinel that is known to arrive after
# what they check.
package HxTest;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

# new_node(name, %conf)
#
# Every key of %conf but "create_extension" is a setting appended to
# postgresql.conf (later lines win, so e.g. shared_preload_libraries => ''
# turns the preload off).  create_extension => 0 leaves the extension out.
sub new_node
{
	my ($name, %conf) = @_;
	my $create = exists $conf{create_extension} ? delete $conf{create_extension} : 1;
	my $node = PostgreSQL::Test::Cluster->new($name);

	$node->init;
	$node->append_conf('postgresql.conf', join("\n",
		"shared_preload_libraries = 'hybridexec'",
		"hybridexec.retry_backoff = 10ms",
		"max_worker_processes = 16",
		map { "$_ = '$conf{$_}'" } sort keys %conf));
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION hybridexec') if $create;
	return $node;
}

# setup_keyed(node, max_attempts => 3, timeout => '1 minute')
#
# Handler keyed(p): inserts p->>'k' into seen together with the id of the
# task it runs for (found as the task running for this very worker with
# that key, or in a batch chunk as the waiting task with that key) and the
# attempt; then, as the payload says:
#   "gate": n     waits for advisory lock n (shared) - see hold_gate
#   "sleep": s    sleeps s seconds
#   "fail": true  raises (SQLSTATE P0001, "keyed handler failed for <k>")
# and returns {"k": k}.  Everything it did is rolled back with a failed or
# interrupted attempt, so rows in seen are effects that committed.
sub setup_keyed
{
	my ($node, %opt) = @_;
	my $max = $opt{max_attempts} || 3;
	my $timeout = $opt{timeout} || '1 minute';

	$node->safe_psql('postgres', qq{
		CREATE TABLE seen (
			k		text,
			task_id	bigint,
			attempt	integer,
			worker	integer DEFAULT pg_backend_pid(),
			at		timestamptz DEFAULT clock_timestamp());
		CREATE FUNCTION keyed(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$
		DECLARE
			tid bigint;
			att integer;
		BEGIN
			SELECT t.id, t.attempts INTO tid, att FROM hx_task t
			 WHERE t.worker_pid = pg_backend_pid() AND t.status = 'running'
			   AND t.payload->>'k' = p->>'k';
			IF NOT FOUND THEN
				-- a batch chunk: its tasks wait until the chunk is booked
				SELECT t.id, t.attempts + 1 INTO tid, att FROM hx_task t
				 WHERE t.status IN ('queued', 'failed') AND t.payload->>'k' = p->>'k';
			END IF;
			INSERT INTO seen (k, task_id, attempt) VALUES (p->>'k', tid, att);
			IF p ? 'gate' THEN
				PERFORM pg_advisory_xact_lock_shared((p->>'gate')::bigint);
			END IF;
			IF p ? 'sleep' THEN
				PERFORM pg_sleep((p->>'sleep')::float8);
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

# Pids of the stream workers, from pg_stat_activity, in pid order.
sub worker_pids
{
	my ($node) = @_;
	my $out = $node->safe_psql('postgres',
		"SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity "
		  . "WHERE backend_type = 'hybridexec stream worker'");
	return split / /, $out;
}

# Polls until n stream workers are connected; returns whether they were.
sub wait_workers
{
	my ($node, $n) = @_;
	return $node->poll_query_until('postgres',
		"SELECT count(*) = $n FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker'");
}

# Waits until no stream task whose key starts with prefix is unfinished.
sub wait_finished
{
	my ($node, $prefix, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM hx_task WHERE payload->>'k' LIKE '$prefix%' "
			  . "AND route = 'stream' AND status IN ('queued', 'running', 'failed')"),
		"$what: every task finished");
	return;
}

# check_exactly_once(node, prefix, n, what, table)
#
# The n tasks whose key starts with prefix are all done with their result,
# and each has exactly one row in seen (or table: another effects table of
# the same shape), written by its own (last) attempt: nothing lost, nothing
# run twice.
sub check_exactly_once
{
	my ($node, $prefix, $n, $what, $seen) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	$seen ||= 'seen';

	is( $node->safe_psql('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done' AND result->>'k' = payload->>'k') || '/' || count(*) "
			  . "FROM hx_task WHERE payload->>'k' LIKE '$prefix%'"),
		"$n/$n", "$what: all $n tasks done with their result");
	is( $node->safe_psql('postgres',
			"SELECT count(*) || '/' || count(DISTINCT k) FROM $seen WHERE k LIKE '$prefix%'"),
		"$n/$n", "$what: every key's effect exactly once");
	is( $node->safe_psql('postgres', qq{
			SELECT count(*) FROM hx_task t
			 WHERE t.payload->>'k' LIKE '$prefix%'
			   AND (SELECT count(*) FROM $seen s
					 WHERE s.k = t.payload->>'k' AND s.task_id = t.id
					   AND s.attempt = t.attempts) = 1}),
		$n, "$what: each effect written by its task's last attempt");
	return;
}

# Takes advisory lock n in a background session and returns the session:
# keyed tasks with "gate": n wait in their handler until release_gate.
sub hold_gate
{
	my ($node, $gate) = @_;
	my $session = $node->background_psql('postgres');
	$session->query_safe("SELECT pg_advisory_lock($gate)");
	return $session;
}

sub release_gate
{
	my ($session, $gate) = @_;
	$session->query_safe("SELECT pg_advisory_unlock($gate)");
	$session->quit;
	return;
}

# Polls until a stream worker is running task id and waiting at the gate;
# returns that worker's pid (undef on timeout).
sub wait_at_gate
{
	my ($node, $id) = @_;
	my $cond = "backend_type = 'hybridexec stream worker' AND wait_event = 'advisory' "
	  . "AND query LIKE 'hybridexec: task $id (%'";
	return undef
	  unless $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE $cond");
	return $node->safe_psql('postgres', "SELECT pid FROM pg_stat_activity WHERE $cond");
}

# notifications(node, listener, tag)
#
# Sends NOTIFY hx_test_sentinel, tag (the listener must LISTEN to it) and
# reads the listener's output until that notification shows.  Notifications
# are delivered in commit order, so everything committed before this call
# has arrived by then.  Returns a list of [channel, payload] received before
# the sentinel, and dies if the sentinel never comes.
sub notifications
{
	my ($node, $listener, $tag) = @_;
	my $out = '';
	my $sentinel = qr/Asynchronous notification "hx_test_sentinel" with payload "\Q$tag\E" received/;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;

	$node->safe_psql('postgres', "NOTIFY hx_test_sentinel, '$tag'");
	while ($out !~ $sentinel)
	{
		die "sentinel notification $tag never arrived; got: $out" if time() > $deadline;
		$out .= $listener->query_safe('SELECT 1') . "\n";
	}
	my @got;
	for my $line (split /\n/, $out)
	{
		last if $line =~ $sentinel;
		# psql omits the payload part when the payload is empty
		push @got, [ $1, defined $2 ? $2 : '' ]
		  if $line =~ /^Asynchronous notification "([^"]+)"(?: with payload "(.*)")? received from server process with PID \d+\.$/;
	}
	return @got;
}

1;
