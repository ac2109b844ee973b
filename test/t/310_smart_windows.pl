# 310_smart_windows.pl - the windows that think for themselves.
#
# Proves, on a real server with the scheduler worker:
#  - micro-batching: stream tasks of a micro-batched type reach the batch
#    handler in calls of at most micro_batch_size, all of them exactly once,
#    and a lone task waits micro_batch_wait for company before it runs;
#  - escalation: a batch task whose window opens after its deadline moves
#    to another window that is on time, or, with none, to the stream path
#    and runs now, saying so on the task, while a task whose deadline the
#    window meets stays queued for it;
#  - opportunistic windows start early while the stream path is idle;
#  - adaptive windows start early when the measured throughput says the
#    backlog would not be finished a margin before the deadline.
#
# Whatever the date it runs at: the far window opens about six months from
# now, and the adaptive window's backlog needs years.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

# A yearly schedule about six months from now (a day of the month that
# every month has): far too late for a deadline an hour ahead, in time for
# one three years ahead.
my @far = gmtime(time + 182 * 86400);
my $far_schedule = sprintf('0 0 %d %d *', $far[3] > 28 ? 28 : $far[3], $far[4] + 1);

my $node = HxTest::new_node('smart', 'hybridexec.scheduler_naptime' => '100ms');

$node->safe_psql('postgres', q{
	CREATE TABLE calls (task_type text, n integer, keys text[]);
	CREATE FUNCTION recorder(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO calls
		SELECT ps[1]->>'t', cardinality(ps), array_agg(p->>'k') FROM unnest(ps) p;
		RETURN ARRAY(SELECT jsonb_build_object('k', p->>'k') FROM unnest(ps) p);
	END $$;
	-- a window that opens once a year, about six months from now: far away
	INSERT INTO hx_window (name, schedule) VALUES ('far', '} . $far_schedule . q{');
});

# --- micro-batching -----------------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT hx_register('mb', batch_handler => 'recorder(jsonb[])',
					   micro_batch_size => 10, micro_batch_wait => '300 ms');
	SELECT hx_submit('mb', jsonb_build_object('t', 'mb', 'k', 'm' || i), origin => 'user')
	  FROM generate_series(1, 25) i;
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 25 FROM hx_task WHERE task_type = 'mb' AND status = 'done'"),
	'micro-batching: all 25 tasks done');
is($node->safe_psql('postgres', "SELECT max(n) <= 10 FROM calls WHERE task_type = 'mb'"),
	't', 'no call of the batch handler got more than micro_batch_size tasks');
is( $node->safe_psql('postgres',
		"SELECT count(*) || '/' || count(DISTINCT k) FROM calls, unnest(keys) k WHERE task_type = 'mb'"),
	'25/25', 'every task reached the batch handler exactly once');
cmp_ok($node->safe_psql('postgres', "SELECT count(*) FROM calls WHERE task_type = 'mb'"),
	'<', 25, 'tasks were handed over together, not one by one');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM hx_task WHERE task_type = 'mb' AND result->>'k' = payload->>'k'"),
	'25', 'each task got its own result back');

my $lone = $node->safe_psql('postgres',
	q{SELECT hx_submit('mb', '{"t": "mb", "k": "lone"}', origin => 'user')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $lone"),
	'a lone micro-batched task runs');
is( $node->safe_psql('postgres',
		"SELECT finished_at - submitted_at >= interval '300 ms' FROM hx_task WHERE id = $lone"),
	't', 'after waiting micro_batch_wait for company');

# --- escalation ---------------------------------------------------------------
$node->safe_psql('postgres', q{
	SELECT hx_register('esc', batch_handler => 'recorder(jsonb[])');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('esc-far', 1, 'esc', 'batch', 'far');
});
# the cheapest path on time: another window (fast opens every 5 minutes)
my $moved = $node->safe_psql('postgres',
	q{SELECT hx_submit('esc', '{"t": "esc", "k": "moved"}', deadline => now() + interval '1 hour')});
ok( $node->poll_query_until('postgres',
		"SELECT route = 'batch' AND window_name <> 'far' FROM hx_task WHERE id = $moved"),
	'a batch task its window would make late moves to a window that is on time');
is( $node->safe_psql('postgres',
		"SELECT status || ' ' || (escalated_at IS NULL)::text || ' ' || (reason ~ ('moved to window ' || window_name "
		  . "|| ': window far would finish at .*, after the deadline')) FROM hx_task WHERE id = $moved"),
	'queued true true', 'it waits there, not escalated to the stream path, and says why');
# with no other window, the stream path
$node->safe_psql('postgres', q{UPDATE hx_window SET enabled = false WHERE name IN ('fast', 'nightly')});
my $late = $node->safe_psql('postgres',
	q{SELECT hx_submit('esc', '{"t": "esc", "k": "late"}', deadline => now() + interval '1 hour')});
my $fine = $node->safe_psql('postgres',
	q{SELECT hx_submit('esc', '{"t": "esc", "k": "fine"}', deadline => now() + interval '3 years')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_task WHERE id = $late"),
	'a batch task no window would serve in time runs now');
is( $node->safe_psql('postgres',
		"SELECT route || ' ' || (escalated_at IS NOT NULL)::text || ' ' || (window_name IS NULL)::text "
		  . "FROM hx_task WHERE id = $late"),
	'stream true true', 'it was escalated to the stream path');
like($node->safe_psql('postgres', "SELECT reason FROM hx_task WHERE id = $late"),
	qr/escalated to stream: window far would finish at .*, after the deadline .*, and no window before it/,
	'the task says why');
is( $node->safe_psql('postgres',
		"SELECT route || ' ' || status || ' ' || (escalated_at IS NULL)::text FROM hx_task WHERE id = $fine"),
	'batch queued true', 'a task the window serves in time waits for it');

# --- opportunistic ------------------------------------------------------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, opportunistic) VALUES ('idle', '0 0 1 1 *', true);
	SELECT hx_register('opp', batch_handler => 'recorder(jsonb[])');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('opp-idle', 2, 'opp', 'batch', 'idle');
	SELECT hx_submit('opp', jsonb_build_object('t', 'opp', 'k', 'o' || i)) FROM generate_series(1, 50) i;
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 50 FROM hx_task WHERE task_type = 'opp' AND status = 'done'"),
	'an opportunistic window ran its tasks long before its schedule');
is( $node->safe_psql('postgres',
		"SELECT string_agg(DISTINCT started_by, ',') FROM hx_window_run WHERE window_name = 'idle'"),
	'opportunistic', 'started by the scheduler as opportunistic');

# --- adaptive -----------------------------------------------------------------
# History says the type does one task per 100 days, so 10 queued tasks need
# 1000 days: more than the time left before the window opens on January 1st
# (at most a year) and its deadline the same day, so it must start now,
# whatever the date.
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule, deadline, margin, enabled)
	VALUES ('adapt', '0 0 1 1 *', '06:00', '1 hour', true);
	SELECT hx_register('slow', batch_handler => 'recorder(jsonb[])');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('slow-adapt', 3, 'slow', 'batch', 'adapt');
	INSERT INTO hx_window_run (id, window_name, status, requested_at, started_at, finished_at)
	OVERRIDING SYSTEM VALUE VALUES (100000, 'adapt', 'done', '2020-01-01', '2020-01-01', '2020-10-27');
	INSERT INTO hx_checkpoint (run_id, chunk, state, task_type, processed, started_at, committed_at)
	VALUES (100000, 1, 'committed', 'slow', 3, '2020-01-01', '2020-10-27');
});
is($node->safe_psql('postgres', "SELECT round(hx_type_throughput('slow') * 86400 * 100)"),
	'1', 'the history gives one task per 100 days');
$node->safe_psql('postgres', q{
	SELECT hx_submit('slow', jsonb_build_object('t', 'slow', 'k', 's' || i)) FROM generate_series(1, 10) i;
});
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 10 FROM hx_task WHERE task_type = 'slow' AND status = 'done'"),
	'the adaptive window ran its backlog early');
is( $node->safe_psql('postgres',
		"SELECT started_by FROM hx_window_run WHERE window_name = 'adapt' AND id <> 100000"),
	'adaptive', 'started by the scheduler as adaptive');

$node->stop;
done_testing();
