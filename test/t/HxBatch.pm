# HxBatch.pm - shared set-up for the TAP tests of batch windows (30x).
#
#   setup_batch_keyed(node, %opt)   table bseen + batch handler
#                                   bkeyed(jsonb[]), type "bk"
#   submit_keys(node, prefix, n, %opt)
#                                   n tasks of a type with keys prefix1..n
#   run_window(node, name)          hx_run_window(name); returns the run id
#   wait_run(node, run, what)       polls until the run has ended
#   run_row(node, run, cols)        columns of the run, joined with '|'
#   check_batch_exactly_once(...)   every task of a key prefix done, its
#                                   effect (row in bseen) there exactly once,
#                                   written by the task's last attempt
#
# Like HxTest, never sleep and hope: poll with deadlines, or gate a handler
# with an advisory lock so the test knows a chunk is in flight.
package HxBatch;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use HxTest;

# setup_batch_keyed(node, max_attempts => 2, type => 'bk')
#
# Batch handler bkeyed(ps): inserts one row per payload into bseen (key,
# the id and attempt of the task it runs for, and the transaction); then,
# if any payload of the call says so:
#   "gate": n     waits for advisory lock n (shared) - see HxTest::hold_gate
#   "sleep": s    sleeps s seconds (once per call)
#   "crash": true kills its own backend with SIGKILL: the server crashes
#   "fail": true  raises (P0001, "bkeyed failed for <k>")
#   "short": true returns one result too few (that payload's)
# and otherwise returns [{"k": k}, ...] in input order.  Everything a call
# did is rolled back with it, so rows in bseen are effects that committed.
sub setup_batch_keyed
{
	my ($node, %opt) = @_;
	my $max = $opt{max_attempts} || 2;
	my $type = $opt{type} || 'bk';

	$node->safe_psql('postgres', qq{
		CREATE TABLE IF NOT EXISTS bseen (
			k		text,
			task_id	bigint,
			attempt	integer,
			worker	integer DEFAULT pg_backend_pid(),
			xid		bigint DEFAULT txid_current(),
			at		timestamptz DEFAULT clock_timestamp());
		CREATE INDEX IF NOT EXISTS bseen_k_idx ON bseen (k);
		CREATE OR REPLACE FUNCTION bkeyed(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS \$\$
		DECLARE
			v bigint;
			s float8;
		BEGIN
			INSERT INTO bseen (k, task_id, attempt)
			SELECT x->>'k', t.id,
				   CASE t.status WHEN 'running' THEN t.attempts ELSE t.attempts + 1 END
			  FROM unnest(ps) x
			  LEFT JOIN hx_task t ON t.payload->>'k' = x->>'k'
								 AND (t.status IN ('queued', 'failed')
									  OR (t.status = 'running' AND t.worker_pid = pg_backend_pid()));
			SELECT max((x->>'gate')::bigint), max((x->>'sleep')::float8) INTO v, s
			  FROM unnest(ps) x;
			IF v IS NOT NULL THEN
				PERFORM pg_advisory_xact_lock_shared(v);
			END IF;
			IF s IS NOT NULL THEN
				PERFORM pg_sleep(s);
			END IF;
			IF EXISTS (SELECT 1 FROM unnest(ps) x WHERE x ? 'crash') THEN
				EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'kill -9 ' || pg_backend_pid());
			END IF;
			IF EXISTS (SELECT 1 FROM unnest(ps) x WHERE x ? 'fail') THEN
				RAISE EXCEPTION 'bkeyed failed for %',
					(SELECT string_agg(x->>'k', ',') FROM unnest(ps) x WHERE x ? 'fail');
			END IF;
			RETURN (SELECT array_agg(jsonb_build_object('k', x->>'k') ORDER BY o)
					  FROM unnest(ps) WITH ORDINALITY u(x, o)
					 WHERE NOT x ? 'short');
		END
		\$\$;
		SELECT hx_register('$type', batch_handler => 'bkeyed(jsonb[])', max_attempts => $max);
	});
	return;
}

# submit_keys(node, prefix, n, type => 'bk', extra => {i => json}, first => 1)
#
# Queues n tasks with keys prefix.first .. prefix.(first+n-1) in one
# transaction, with hx_submit's defaults (origin background, no SLA: the
# nightly window unless a rule says otherwise); extra maps a number to a
# JSON object merged into that task's payload.
sub submit_keys
{
	my ($node, $prefix, $n, %opt) = @_;
	my $type = $opt{type} || 'bk';
	my $first = $opt{first} || 1;
	my $extra = $opt{extra} || {};
	my $cases = join(' ', map { "WHEN $_ THEN '$extra->{$_}'::jsonb" } sort keys %$extra);
	my $merge = %$extra ? "|| CASE g $cases ELSE '{}'::jsonb END" : '';

	$node->safe_psql('postgres', qq{
		SELECT count(hx_submit('$type', jsonb_build_object('k', '$prefix' || g) $merge))
		  FROM generate_series($first, $first + $n - 1) g});
	return;
}

sub run_window
{
	my ($node, $name) = @_;
	return $node->safe_psql('postgres', "SELECT hx_run_window('$name')");
}

# Polls until the run is no longer starting or running.
sub wait_run
{
	my ($node, $run, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $node->poll_query_until('postgres',
			"SELECT status NOT IN ('starting', 'running') FROM hx_window_run WHERE id = $run"),
		"$what: run $run ended");
	return;
}

sub run_row
{
	my ($node, $run, $cols) = @_;
	my $expr = join(" || '|' || ", map { 'coalesce(' . $_ . "::text, '-')" } split /,\s*/, $cols);
	return $node->safe_psql('postgres', "SELECT $expr FROM hx_window_run WHERE id = $run");
}

# check_batch_exactly_once(node, prefix, n, what): HxTest's
# check_exactly_once on the batch handler's effects (bseen).
sub check_batch_exactly_once
{
	my ($node, $prefix, $n, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	HxTest::check_exactly_once($node, $prefix, $n, $what, 'bseen');
	return;
}

1;
