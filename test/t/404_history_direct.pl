# 404_history_direct.pl - a window run's chunks write their done tasks into
# hx_task_history directly (history.c), and through an INSERT whenever the
# history has a trigger.
#
# A run of 1,000 tasks in chunks of 200, some of them on their second
# attempt: every task leaves the queue for the history, done, with its own
# result, its attempt counted, the run's worker and run, no lease; both
# indexes of the history hold every row (amcheck's heapallindexed); the
# ledger booked each attempt once; and the WAL shows the rows went in as
# multi-row inserts.  Then a trigger on hx_task_history: the next run's
# moves fire it for every task (the INSERT statement, single-row WAL
# records), with the same rows.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('history_direct');
$node->safe_psql('postgres', q{
	CREATE EXTENSION amcheck;
	CREATE EXTENSION pg_walinspect;
	CREATE FUNCTION twice(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql
		AS $$SELECT array_agg(jsonb_build_object('twice', (p->>'i')::int * 2) ORDER BY o)
			   FROM unnest(ps) WITH ORDINALITY AS u (p, o)$$;
	SELECT hx_register('twice', batch_handler => 'twice(jsonb[])');
	INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('w404', '0 3 * * *', 200);
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
		VALUES ('to-w404', 1, 'twice', 'batch', 'w404');
});

# submits n tasks numbered from "from"; the first "retried" of them as if a
# first attempt had failed; runs the window and waits for it; returns the
# run's id and the WAL position before it
sub run_window
{
	my ($from, $n, $retried) = @_;
	$node->safe_psql('postgres', qq{
		SELECT count(*) FROM hx_submit_batch('twice',
			ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series($from, $from + $n - 1) g));
		UPDATE hx_task SET status = 'failed', attempts = 1, last_error = 'first try failed'
		 WHERE task_type = 'twice' AND (payload->>'i')::int < $from + $retried
		   AND (payload->>'i')::int >= $from;
	});
	my $lsn = $node->safe_psql('postgres', 'SELECT pg_current_wal_insert_lsn()');
	my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('w404')});
	is($node->safe_psql('postgres', qq{SELECT hx_wait_run($run, '2 minutes')}), 'done', "run $run done");
	return ($run, $lsn);
}

# the history's rows of tasks from..from+n-1, checked against what a done
# chunk task must be; returns "tasks|in the queue|wrong|retried right"
sub check_rows
{
	my ($from, $n, $run, $retried) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*),
			   (SELECT count(*) FROM ONLY hx_task q WHERE q.task_type = 'twice'),
			   count(*) FILTER (WHERE NOT (h.status = 'done'
					AND h.result = jsonb_build_object('twice', (h.payload->>'i')::int * 2)
					AND h.attempts = CASE WHEN (h.payload->>'i')::int < $from + $retried THEN 2 ELSE 1 END
					AND h.started_at <= h.finished_at AND h.worker_pid IS NOT NULL
					AND h.run_id = $run AND h.lease_token IS NULL AND h.lease_expires_at IS NULL
					AND h.route = 'batch' AND h.window_name = 'w404' AND h.rule_name = 'to-w404')),
			   count(*) FILTER (WHERE h.attempts = 2 AND h.last_error = 'first try failed')
		  FROM hx_task_history h
		 WHERE h.task_type = 'twice' AND (h.payload->>'i')::int BETWEEN $from AND $from + $n - 1});
}

# WAL records of the run that insert into hx_task_history, by kind
sub history_inserts
{
	my ($lsn) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE record_type LIKE 'MULTI_INSERT%') || '|' ||
			   count(*) FILTER (WHERE record_type IN ('INSERT', 'INSERT+INIT'))
		  FROM pg_get_wal_records_info('$lsn', pg_current_wal_flush_lsn())
		 WHERE resource_manager IN ('Heap', 'Heap2')
		   AND block_ref LIKE '%/' || pg_relation_filenode('hx_task_history') || ' %'});
}

# 1. no trigger on the history: written directly
my ($run, $lsn) = run_window(1, 1000, 50);
is(check_rows(1, 1000, $run, 50), '1000|0|0|50',
	'1,000 tasks moved to the history, done, each with its result, attempt, run and no lease');
is($node->safe_psql('postgres', qq{SELECT processed FROM hx_window_run WHERE id = $run}), '1000',
	'the run counted them');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_task WHERE task_type = 'twice' AND status = 'done'}),
	'1000', 'hx_task shows them done');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_cost c JOIN hx_task_history h ON h.id = c.task_id
		 WHERE h.task_type = 'twice' AND c.outcome = 'done' AND c.attempt = h.attempts}),
	'1000', 'the ledger booked each attempt once');
my $rc = $node->psql('postgres', q{
		SELECT bt_index_check('hx_task_history_pkey', true);
		SELECT bt_index_check('hx_task_history_finished_idx', true)}, on_error_stop => 1);
is($rc, 0, 'both indexes of the history hold every row (amcheck, heapallindexed)');
my ($multi, $single) = split /\|/, history_inserts($lsn);
ok($multi >= 5 && $single == 0,
	"the rows went in as multi-row inserts ($multi of them, $single single-row)");

# 2. a trigger on the history: the move's INSERT statement fires it
$node->safe_psql('postgres', q{
	CREATE TABLE fired (task_id bigint);
	CREATE FUNCTION note_fired() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO fired VALUES (NEW.id);
		RETURN NULL;
	END $$;
	CREATE TRIGGER note_fired AFTER INSERT ON hx_task_history FOR EACH ROW EXECUTE FUNCTION note_fired();
});
($run, $lsn) = run_window(2001, 300, 10);
is(check_rows(2001, 300, $run, 10), '300|0|0|10', 'with a trigger there, the same rows');
is( $node->safe_psql('postgres', q{
		SELECT count(DISTINCT f.task_id) || '|' || count(*) FROM fired f
		  JOIN hx_task_history h ON h.id = f.task_id WHERE (h.payload->>'i')::int > 2000}),
	'300|300', 'the trigger fired once for every task moved');
($multi, $single) = split /\|/, history_inserts($lsn);
ok($multi == 0 && $single >= 300, "the INSERT statement wrote them ($single single-row inserts)");
$rc = $node->psql('postgres', q{SELECT bt_index_check('hx_task_history_pkey', true)}, on_error_stop => 1);
is($rc, 0, "the history's primary key still holds every row");

done_testing();
