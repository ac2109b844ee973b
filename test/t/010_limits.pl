# 010_limits.pl - per-type limits hold across the stream workers and
# external executors.
#
# Proves, from the tasks' own start and finish times (exact, not sampled):
#   1. rate_limit with the stream workers: 30 tasks of a type allowed 10 a
#      second start over at least two seconds (the bucket's 10, then 10 a
#      second), never more than 19 in any 0.9 seconds; a type without
#      limits submitted meanwhile runs at once (a limited type does not
#      block the others);
#   2. max_running with the stream workers: tasks of a type allowed one at
#      a time never overlap, though two workers are free;
#   3. max_running and rate_limit with four hx_worker processes of two
#      commands each: never more than two running at once, and 15 tasks
#      allowed 5 a second take at least two seconds;
#   4. bad limits are clear errors, and clearing a limit lifts it (no task
#      is given back to wait any more);
#   5. max_running across a window run of two batch workers, the stream
#      workers and an external executor at once: never more than three
#      tasks of the type in flight (a chunk counts all its tasks from the
#      handler's start to its commit), no chunk larger than the limit,
#      and the run waits for the limit rather than end with tasks left;
#   6. rate_limit in a window run: chunks are cut to the tokens there are
#      (the first to the bucket's 10, then 10 a second), the run passes over
#      the limited type to a free one meanwhile, and ends done;
#   7. the tasks of a chunk a crash interrupted, retried one by one after
#      the restart, wait for the rate limit too.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $hxw = "$bindir/hx_worker";

my $node = HxTest::new_node('limits');
ok(HxTest::wait_workers($node, 2), 'two stream workers');
$node->safe_psql('postgres', q{
	CREATE FUNCTION quick(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
	CREATE FUNCTION slow(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT jsonb_build_object(''slept'', pg_sleep(0.3) IS NULL)';
	SELECT hx_register('rl', 'quick(jsonb)', rate_limit => 10, rate_period => '1 second');
	SELECT hx_register('free', 'quick(jsonb)');
	SELECT hx_register('mr', 'slow(jsonb)', max_running => 1);
	SELECT hx_register('ext_mr', max_running => 2);
	SELECT hx_register('ext_rl', rate_limit => 5, rate_period => '1 second');
	CREATE ROLE executor LOGIN;
	GRANT hybridexec_executor TO executor;
});

# the most tasks of a type whose [started_at, finished_at) overlap at one
# moment, and the most that started within any span of the given length
sub most_at_once
{
	my ($type) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT max((SELECT count(*) FROM hx_task o WHERE o.task_type = '$type'
					 AND o.started_at <= t.started_at AND o.finished_at > t.started_at))
		  FROM hx_task t WHERE t.task_type = '$type'});
}

sub most_started_within
{
	my ($type, $span) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT max((SELECT count(*) FROM hx_task o WHERE o.task_type = '$type'
					 AND o.started_at >= t.started_at AND o.started_at < t.started_at + interval '$span'))
		  FROM hx_task t WHERE t.task_type = '$type'});
}

sub start_spread
{
	my ($type) = @_;
	return $node->safe_psql('postgres',
		"SELECT extract(epoch FROM max(started_at) - min(started_at)) FROM hx_task WHERE task_type = '$type'");
}

sub all_done
{
	my ($type, $n, $what) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	ok( $node->poll_query_until('postgres',
			"SELECT count(*) FILTER (WHERE status = 'done') = $n FROM hx_task WHERE task_type = '$type'"),
		$what);
	return;
}

# --- 1. a rate limit, stream workers -------------------------------------------
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('rl', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 30) g});
my $free = $node->safe_psql('postgres', q{SELECT hx_submit('free', '{}', origin => 'user')});
is($node->safe_psql('postgres', "SELECT hx_wait($free, '30 seconds')"), 'done', 'a type without limits runs meanwhile');
all_done('rl', 30, 'the 30 rate-limited tasks are done');
is( $node->safe_psql('postgres',
		"SELECT (SELECT finished_at FROM hx_task WHERE id = $free) < max(finished_at) FROM hx_task WHERE task_type = 'rl'"),
	't', 'before the rate-limited ones were');
cmp_ok(start_spread('rl'), '>=', 1.8, 'they started over at least two seconds (10 at once, then 10 a second)');
cmp_ok(most_started_within('rl', '0.9 seconds'), '<=', 19, 'never more than 19 within 0.9 seconds');
is( $node->safe_psql('postgres', q{SELECT max(attempts) || ' ' || (count(*) FILTER (WHERE run_after > submitted_at) > 0) FROM hx_task WHERE task_type = 'rl'}),
	'1 true', 'tasks beyond the bucket were given back to wait for a token, none with an attempt counted');

# --- 2. max_running, stream workers -----------------------------------------------
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('mr', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 4) g});
all_done('mr', 4, 'the four one-at-a-time tasks are done');
is(most_at_once('mr'), '1', 'never two at once, though two workers were free');

# --- 3. four hx_worker processes --------------------------------------------------
my $dsn = $node->connstr('postgres') . ' user=executor';
my @workers;
END { $_->kill_kill for grep { $_->pumpable } @workers; }
for my $i (1 .. 4)
{
	my ($out, $err) = ('', '');
	push @workers, IPC::Run::start(
		[ $hxw, '--dsn', $dsn, '--name', "w$i", '--type', 'ext_mr', '--type', 'ext_rl',
		  '--concurrency', '2', '--poll', '1', '--', 'sh', '-c', 'sleep 0.2; echo {}' ],
		'<', \undef, '>', \$out, '2>', \$err);
}
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('ext_mr', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 12) g;
	SELECT count(hx_submit('ext_rl', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 15) g});
all_done('ext_mr', 12, 'four hx_worker processes ran the 12 tasks of max_running 2');
all_done('ext_rl', 15, 'and the 15 tasks of 5 a second');
cmp_ok(most_at_once('ext_mr'), '<=', 2, 'never more than two at once, of up to eight commands');
cmp_ok(start_spread('ext_rl'), '>=', 1.8, 'the rate-limited ones started over at least two seconds');
cmp_ok(most_started_within('ext_rl', '0.9 seconds'), '<=', 9, 'never more than 9 within 0.9 seconds');
$_->kill_kill for @workers;

# --- 4. bad limits, and lifting one -----------------------------------------------
my ($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_register('rl2', 'quick(jsonb)', rate_limit => 5)});
like($err, qr/rate_limit .* and rate_period .* go together/, 'a rate_limit without a period: an error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_type WHERE task_type = 'rl2'}), '0', 'nothing registered');
($rc, $out, $err) = $node->psql('postgres', q{SELECT hx_register('mr', max_running => 0)});
like($err, qr/max_running must be between 1 and 100000/, 'max_running 0: an error');
$node->safe_psql('postgres', q{SELECT hx_register('rl', clear => ARRAY['rate_limit'])});
is($node->safe_psql('postgres', q{SELECT rate_limit IS NULL AND rate_period IS NULL FROM hx_type WHERE task_type = 'rl'}),
	't', 'clear lifts the limit');
$node->safe_psql('postgres', q{DELETE FROM hx_task WHERE task_type = 'rl'});
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('rl', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, 30) g});
all_done('rl', 30, 'then 30 tasks of the type run');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hx_task WHERE task_type = 'rl' AND run_after > submitted_at}),
	'0', 'none of them given back to wait for a token');

# --- 5. max_running: window chunks, stream workers and an executor at once -------
$node->safe_psql('postgres', q{
	CREATE TABLE flight (task_type text, n integer, began timestamptz, ended timestamptz);
	-- a chunk's tasks are in flight from the handler's start to the chunk's commit
	CREATE FUNCTION slow_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
	DECLARE
		b timestamptz := clock_timestamp();
	BEGIN
		PERFORM pg_sleep(0.2);
		INSERT INTO flight VALUES (ps[1]->>'t', cardinality(ps), b, clock_timestamp());
		RETURN ps;
	END $$;
	SELECT hx_register('bmr', 'slow(jsonb)', batch_handler => 'slow_batch(jsonb[])', max_running => 3);
	SELECT hx_register('brl', 'quick(jsonb)', batch_handler => 'slow_batch(jsonb[])',
					   rate_limit => 10, rate_period => '1 second');
	SELECT hx_register('bzfree', 'quick(jsonb)', batch_handler => 'slow_batch(jsonb[])');
	SELECT hx_register('ext_bmr', max_running => 3);
	INSERT INTO hx_window (name, schedule, chunk_size, parallel) VALUES ('lim', '0 0 1 1 *', 100, 2);
	INSERT INTO hx_rule (name, position, origin, route, window_name)
	VALUES ('nightly work', 1, 'nightly', 'batch', 'lim');
	SELECT count(hx_submit('bmr', jsonb_build_object('t', 'bmr', 'i', g), origin => 'nightly'))
	  FROM generate_series(1, 24) g;
});
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('bmr', jsonb_build_object('t', 'bmr', 'i', g), origin => 'user')) FROM generate_series(1, 6) g});
# an executor of each kind for ext_bmr: commands of 4 tasks at once, batches of 4
my $batch_cmd = q{select undef, undef, undef, 0.2; open I, '<', $ENV{HX_BATCH_INPUT} or die;
	open O, '>', $ENV{HX_BATCH_OUTPUT} or die;
	print O encode_json({ custom_id => decode_json($_)->{custom_id}, result => {} }), "\n" while <I>;
	close O or die};
for my $mode ([ '--concurrency', '4', '--', 'sh', '-c', 'sleep 0.2; echo {}' ],
	[ '--batch', '--batch-size', '4', '--', 'perl', '-MJSON::PP', '-e', $batch_cmd ])
{
	my ($out, $err) = ('', '');
	push @workers, IPC::Run::start(
		[ $hxw, '--dsn', $dsn, '--type', 'ext_bmr', '--poll', '0.2', @$mode ],
		'<', \undef, '>', \$out, '2>', \$err);
}
# the executor's type, half of it in the window (claimed while it is open)
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('ext_bmr', jsonb_build_object('i', g), origin => CASE WHEN g % 2 = 0 THEN 'user' ELSE 'nightly' END))
	  FROM generate_series(1, 8) g});
my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('lim')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
	'the window run ends done');
all_done('bmr', 30, 'every task of the limited type is done, by the window and the stream workers');
all_done('ext_bmr', 8, 'and the executor ran its own, in the window and streamed');
is( $node->safe_psql('postgres', q{
		SELECT count(*) FILTER (WHERE route = 'batch') || ' ' || count(*) FILTER (WHERE route = 'stream')
		  FROM hx_task WHERE task_type = 'bmr'}),
	'24 6', 'the window took 24 of them, the stream workers 6');
is($node->safe_psql('postgres', "SELECT max(processed + failed) <= 3 FROM hx_checkpoint WHERE run_id = $run"),
	't', 'no chunk was larger than max_running');
# the run's two workers share one cursor: chunks of a type at its limit
# may all go to one of them while the other waits for the limit
is($node->safe_psql('postgres', "SELECT parts FROM hx_window_run WHERE id = $run"),
	'2', 'the run was shared by two batch workers');
# the most of the type in flight at a chunk's start or a stream task's claim
is( $node->safe_psql('postgres', q{
		WITH f AS (SELECT n, began, ended FROM flight WHERE task_type = 'bmr'
				   UNION ALL
				   SELECT 1, started_at, finished_at FROM hx_task
					WHERE task_type = 'bmr' AND route = 'stream')
		SELECT max((SELECT sum(o.n) FROM f o WHERE o.began <= f.began AND o.ended > f.began)) <= 3 FROM f}),
	't', 'never more than three in flight across chunks and stream workers');
cmp_ok(most_at_once('ext_bmr'), '<=', 3, 'nor of the executors\' type, whose two executors could take eight');
$_->kill_kill for @workers;

# --- 6. rate_limit in a window run, a free type meanwhile ---------------------------
$node->safe_psql('postgres', q{
	SELECT count(hx_submit('brl', jsonb_build_object('t', 'brl', 'i', g), origin => 'nightly')) FROM generate_series(1, 30) g;
	SELECT count(hx_submit('bzfree', jsonb_build_object('t', 'bzfree', 'i', g), origin => 'nightly')) FROM generate_series(1, 30) g;
	UPDATE hx_window SET parallel = 1 WHERE name = 'lim';
});
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('lim')});
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
	'the rate-limited run ends done');
all_done('brl', 30, 'with every rate-limited task done');
all_done('bzfree', 30, 'and every free one');
is($node->safe_psql('postgres', "SELECT max(n) <= 10 FROM flight WHERE task_type = 'brl'"),
	't', 'no chunk of the rate-limited type had more than the bucket\'s 10');
cmp_ok( $node->safe_psql('postgres',
		"SELECT extract(epoch FROM max(began) - min(began)) FROM flight WHERE task_type = 'brl'"),
	'>=', 1.5, 'its chunks started over at least 1.5 seconds (10 at once, then 10 a second)');
is( $node->safe_psql('postgres', q{
		SELECT (SELECT min(began) FROM flight WHERE task_type = 'bzfree')
			   < (SELECT max(began) FROM flight WHERE task_type = 'brl')}),
	't', 'the free type ran while the limited one waited for tokens');

# --- 7. the tasks of a chunk a crash interrupted, retried one by one, keep to the rate
$node->safe_psql('postgres', q{
	CREATE TABLE iso_calls (n integer, at timestamptz);
	-- a chunk of more than one sleeps: the crash comes while it runs
	CREATE FUNCTION iso_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO iso_calls VALUES (cardinality(ps), clock_timestamp());
		IF cardinality(ps) > 1 THEN
			PERFORM pg_sleep(60);
		END IF;
		RETURN ps;
	END $$;
	SELECT hx_register('biso', batch_handler => 'iso_batch(jsonb[])',
					   rate_limit => 4, rate_period => '4 seconds');
	SELECT count(hx_submit('biso', jsonb_build_object('i', g), origin => 'nightly')) FROM generate_series(1, 4) g;
});
$run = $node->safe_psql('postgres', q{SELECT hx_run_window('lim')});
ok( $node->poll_query_until('postgres', qq{
		SELECT count(*) = 1 FROM hx_checkpoint WHERE run_id = $run AND task_type = 'biso' AND state = 'started'
		   AND cardinality(task_ids) = 4}),
	'the four tasks (the whole bucket) are in flight as one chunk');
$node->stop('immediate');
$node->start;
ok($node->poll_query_until('postgres', "SELECT status = 'done' FROM hx_window_run WHERE id = $run"),
	'the run resumed after the crash and ended done');
all_done('biso', 4, 'with the four tasks done, one by one');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || max(n) || ' ' || (max(at) - min(at) >= interval '1.5 seconds') FROM iso_calls}),
	'4 1 true',
	'retried alone, they waited for tokens (1 a second) rather than start at once: their calls spread over 1.5 s and more');

$node->stop;
done_testing();
