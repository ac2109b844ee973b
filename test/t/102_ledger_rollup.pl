# 102_ledger_rollup.pl - bookings older than hybridexec.ledger_retention
# leave hx_cost for daily totals (hx_cost_day) and every report over whole
# days stays what it was.
#
# Stream tasks of two departments and two submitters (one of them an
# ordinary role) are booked by the workers, a window run's three chunks
# as hx_cost_chunk rows; their bookings are copied
# three days back (as other tasks) with a correction, and an old minute
# of statistics is added.  The reports are taken, then the scheduler's
# roll-up step is turned on with a one-day retention: the old bookings
# and the old minute go, the recent ones stay, and hx_cost_report (every
# grouping by day or coarser) and hx_savings' money give the same figures
# as before.  Grouped by hour, a rolled-up day is one "(whole day)"
# group.  A rolled-up booking cannot be corrected (clear error, nothing
# booked), and an ordinary role sees its own rolled-up rows only.  Last,
# the ledger trigger's kept price rules: a new price reaches the workers
# that booked under the old one.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxBatch;

my $node = HxTest::new_node('ledger_rollup', 'hybridexec.time_zone' => 'Europe/Paris');
HxTest::setup_keyed($node);
$node->safe_psql('postgres', q{
	INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('keyed', 'stream', 0.01);
	INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('keyed', 'batch', 0.004);
	CREATE ROLE alice LOGIN IN ROLE hybridexec_submitter;
	GRANT INSERT ON seen TO alice;
	SELECT hx_submit('keyed', jsonb_build_object('k', 'r' || i),
					 origin => CASE WHEN i % 3 = 0 THEN 'user' ELSE 'api' END,
					 department => 'dept' || i % 2, sla => '1 second')
	  FROM generate_series(1, 40) i;
});
$node->safe_psql('postgres', q{SELECT hx_submit('keyed', jsonb_build_object('k', 'ra' || i), sla => '1 second')
	FROM generate_series(1, 10) i}, extra_params => ['-U', 'alice']);
HxTest::wait_finished($node, 'r', 'stream tasks of two departments and two submitters');

# and a window run of three chunks, booked as hx_cost_chunk rows
HxBatch::setup_batch_keyed($node);
$node->safe_psql('postgres', q{
	INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('bk', 'batch', 0.002);
	UPDATE hx_window SET chunk_size = 5 WHERE name = 'nightly'});
HxBatch::submit_keys($node, 'b', 12);
my $run = HxBatch::run_window($node, 'nightly');
HxBatch::wait_run($node, $run, 'a run of 12 batch tasks');
is( $node->safe_psql('postgres', q{SELECT count(*) || ' ' || sum(cardinality(ids)) FROM hx_cost_chunk}),
	'3 12', 'its three chunks booked their tasks as three rows');

# the same bookings three days back, as other tasks, and a correction
$node->safe_psql('postgres', q{
	INSERT INTO hx_cost_attempt (at, task_id, attempt, outcome, task_type, route, window_name, run_id,
						 rule_name, department, origin, executor, submitted_at, sla, deadline,
						 wait_seconds, wall_seconds, latency_seconds, price_id, currency, cost,
						 baseline_cost, batch_cost, reported, submitted_by)
	SELECT at - interval '3 days', task_id + 1000000, attempt, outcome, task_type, route,
		   window_name, run_id, rule_name, department, origin, executor,
		   submitted_at - interval '3 days', sla, deadline, wait_seconds, wall_seconds,
		   latency_seconds, price_id, currency, cost, baseline_cost, batch_cost, reported, submitted_by
	  FROM hx_cost_attempt;
	INSERT INTO hx_cost_chunk (at, started_at, task_type, route, window_name, run_id, rule_name,
							   department, origin, executor, submitted_by, sla, wall_seconds,
							   price_id, currency, cost, baseline_cost, batch_cost, ids, task_ids,
							   attempts, submitted_ats, deadlines)
	SELECT at - interval '3 days', started_at - interval '3 days', task_type, route, window_name,
		   run_id, rule_name, department, origin, executor, submitted_by, sla, wall_seconds,
		   price_id, currency, cost, baseline_cost, batch_cost,
		   ARRAY (SELECT nextval(pg_get_serial_sequence('hx_cost_attempt', 'id')) FROM unnest(ids)),
		   ARRAY (SELECT x + 1000000 FROM unnest(task_ids) x), attempts,
		   ARRAY (SELECT x - interval '3 days' FROM unnest(submitted_ats) x), deadlines
	  FROM hx_cost_chunk;
	SELECT hx_cost_correct((SELECT min(id) FROM hx_cost WHERE at < now() - interval '2 days'),
						   1.5, 'provider invoice');
	INSERT INTO hx_stat_minute (minute, task_type, route, shard, done, wait_hist, run_hist)
	VALUES (date_trunc('minute', now() - interval '3 days'), 'keyed', 'stream', 0, 1, '{}', '{}');
});
my ($old, $recent, $rolled_id) = split /\|/, $node->safe_psql('postgres', q{
	SELECT count(*) FILTER (WHERE at < now() - interval '2 days'), count(*) FILTER (WHERE at > now() - interval '1 day'),
		   max(id) FILTER (WHERE at < now() - interval '2 days' AND correction_of IS NULL)
	  FROM hx_cost});
cmp_ok($old, '>=', 63, "old bookings to roll up ($old), 12 of chunks and a correction among them");

my $period = q{date_trunc('day', now()) - interval '5 days', date_trunc('day', now()) + interval '1 day'};
my $reports = qq{
	SELECT g || ' ' || r::text FROM unnest(ARRAY['department', 'task_type', 'route', 'window',
												  'executor', 'rule', 'day']) g,
		   hx_cost_report(g, $period) r
	UNION ALL
	SELECT 'savings ' || (s.currency, s.attempts, s.actual_cost, s.all_stream_cost, s.all_batch_cost,
						  s.saved, s.saved_pct, s.background_saved_pct)::text
	  FROM hx_savings(date_trunc('day', now()) - interval '5 days', now()) s
	ORDER BY 1};
my $before = $node->safe_psql('postgres', $reports);
like($before, qr/^day \(\d{4}-\d\d-\d\d,USD,62,62,/m, 'the reports count the old day (62 tasks, a correction)');
my $alice_before = $node->safe_psql('postgres',
	q{SELECT count(*) || ' ' || sum(cost) FROM hx_cost WHERE at < now() - interval '2 days'},
	extra_params => ['-U', 'alice']);
is($alice_before, '10 0.100000', 'alice sees her 10 old bookings');

# roll up everything older than a day
$node->safe_psql('postgres', q{ALTER SYSTEM SET hybridexec.ledger_retention = '1d'; SELECT pg_reload_conf()});
ok( $node->poll_query_until('postgres', q{SELECT NOT EXISTS (SELECT 1 FROM hx_cost WHERE at < now() - interval '2 days')}),
	'the scheduler rolled the old bookings out of hx_cost');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE at > now() - interval '1 day') || ' ' || count(*) FROM hx_cost}),
	"$recent $recent", 'the recent bookings stayed, and nothing else');
is($node->safe_psql('postgres', q{SELECT sum(bookings) FROM hx_cost_day}), $old,
	'hx_cost_day stands for every rolled-up booking');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_cost_chunk WHERE at < now() - interval '2 days'}), '0',
	'the old chunk rows went whole');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_cost_chunk}), '3', 'the recent ones stayed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FROM hx_stat_minute WHERE minute < now() - interval '2 days'}),
	'0', 'the old minute of statistics went too');
is($node->safe_psql('postgres', $reports), $before,
	'hx_cost_report (every grouping by day or coarser) and hx_savings give the same figures');
like( $node->safe_psql('postgres', qq{SELECT string_agg("group", ',') FROM hx_cost_report('hour', $period)}),
	qr/^\d{4}-\d\d-\d\d \(whole day\),\d{4}-\d\d-\d\d \d\d:00/,
	'grouped by hour, a rolled-up day is one "(whole day)" group');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || sum(cost) FROM hx_cost_day WHERE day < current_date - 1},
		extra_params => ['-U', 'alice']),
	'1 0.100000', 'alice sees her own rolled-up row, and no other');
is( $node->safe_psql('postgres', q{
		SELECT last_failed IS NULL FROM hx_scheduler_status() WHERE step = 'ledger roll-up'}),
	't', 'the roll-up step never failed');

# a rolled-up booking cannot be corrected: clear error, nothing booked
my $n = $node->safe_psql('postgres', 'SELECT count(*) FROM hx_cost');
my ($ret, $out, $err) = $node->psql('postgres', qq{SELECT hx_cost_correct($rolled_id, 0, 'late')},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($err, qr/42704: booking $rolled_id does not exist or is itself a correction/, 'correcting a rolled-up booking: 42704');
like($err, qr/HINT:  .*rolled up into hx_cost_day/, '... with a hint naming the roll-up');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_cost'), $n, '... and nothing was booked');

# the workers keep the price rules they looked up: a new price reaches
# them at once (its statement trigger tells every backend)
$node->safe_psql('postgres', q{
	-- (a price applies to attempts that start from valid_from on, to the second)
	INSERT INTO hx_price (task_type, route, unit_cost, valid_from)
	VALUES ('keyed', 'stream', 0.07, date_trunc('second', now()));
	SELECT hx_submit('keyed', jsonb_build_object('k', 'rp' || i), origin => 'user') FROM generate_series(1, 20) i;
});
HxTest::wait_finished($node, 'rp', 'stream tasks after a new price');
is( $node->safe_psql('postgres', q{
		SELECT string_agg(DISTINCT c.cost::text, ',') FROM hx_cost c JOIN hx_task t ON t.id = c.task_id
		 WHERE t.payload->>'k' LIKE 'rp%'}),
	'0.070000', 'attempts after a new price are booked at it, by the same workers');

# one statement finishing attempts that started in more seconds than the
# backend keeps price rules for (64), of two types in two currencies
# interleaved: every booking keeps its own type's price
$node->safe_psql('postgres', q{
	SELECT hx_register('ext_usd'), hx_register('ext_eur');
	INSERT INTO hx_price (task_type, route, unit_cost, currency)
	VALUES ('ext_usd', 'stream', 0.01, 'USD'), ('ext_eur', 'stream', 0.02, 'EUR');
	INSERT INTO hx_task (task_type, route, status, attempts, started_at, worker_pid)
	SELECT CASE WHEN i % 2 = 0 THEN 'ext_usd' ELSE 'ext_eur' END, 'stream', 'running', 1,
		   now() - i * interval '1 second', 1
	  FROM generate_series(1, 200) i;
	UPDATE hx_task SET status = 'done', finished_at = now() WHERE task_type IN ('ext_usd', 'ext_eur');
});
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(*) FILTER (WHERE (task_type, currency, cost) NOT IN
			(('ext_usd', 'USD', 0.01), ('ext_eur', 'EUR', 0.02)))
		  FROM hx_cost WHERE task_type IN ('ext_usd', 'ext_eur')}),
	'200 0', '200 attempts of 200 seconds booked in one statement, each at its own type\'s price');

done_testing();
