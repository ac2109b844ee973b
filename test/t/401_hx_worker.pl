# 401_hx_worker.pl - the hx_worker command against a real server.
#
#   1. a stream task is picked up through LISTEN hx_stream (the poll safety
#      net is set to a minute, so only the NOTIFY can explain a quick pickup),
#      the command's stdout is the result and --cost-field its cost;
#   2. kill -9 of an hx_worker in the middle of a task: its lease expires,
#      the scheduler counts the attempt as failed, and another hx_worker
#      completes the task;
#   3. a server restart: the running hx_worker reconnects and goes on;
#   4. SIGTERM: the worker finishes the task it holds and exits 0;
#   heartbeats keep a task that outlives its lease; a failing command, one
#   that prints no JSON and one that hangs past --timeout fail their attempt;
#   5. batch mode: 10,000 tasks through one JSONL command (a Perl script);
#   6. --unit-price: a reported number of units (tokens) times the price is
#      booked, exactly, in stream and batch mode (a batch output with a line
#      that is not JSON too);
#   7. a COMMAND that cannot be run (missing, not executable, a directory,
#      not on PATH) is refused at start with exit 2, before any claim.
#
# hx_worker connects as a role that holds hybridexec_executor and nothing
# else, as the README tells a DBA to set it up.  Every wait polls with a
# deadline.
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
ok(-x $hxw, "hx_worker is installed in $bindir");

my $node = HxTest::new_node('hxw', 'hybridexec.scheduler_naptime' => '200ms');
$node->safe_psql('postgres', 'CREATE ROLE executor LOGIN; GRANT hybridexec_executor TO executor;');
my $dsn = $node->connstr('postgres') . ' user=executor';
my $dir = PostgreSQL::Test::Utils::tempdir;

# the stream command: echoes the payload; "hold" tasks wait (first attempt
# only) until $dir/release exists, "slow" ones sleep a second
my $cmd = "$dir/echo.sh";
open my $fh, '>', $cmd or die;
print $fh <<"SH";
#!/bin/sh
p=\$(cat)
case "\$p" in
  *hold*)
	if [ "\$HX_ATTEMPT" = 1 ]; then
		echo \$\$ > "$dir/held.\$HX_TASK_ID"
		i=0
		while [ \$i -lt 900 ] && [ ! -e "$dir/release" ]; do sleep 0.1; i=\$((i+1)); done
	fi;;
  *slow*) sleep 1;;
  *long*) sleep 3;;
  *sleepy*) sleep 30;;
  *fail*) echo "model said no" >&2; exit 3;;
  *garbage*) echo "this is not JSON"; exit 0;;
esac
printf '{"echo": %s, "attempt": %s, "tokens": 3}\\n' "\$p" "\$HX_ATTEMPT"
SH
close $fh;
chmod 0755, $cmd;

$node->safe_psql('postgres', "SELECT hx_register('summ', max_attempts => 3)");

my @live;

# a test that dies half-way must not leave hx_worker processes behind
END { $_->kill_kill for grep { $_->pumpable } @live; }

# start_worker(name, flags...): a running hx_worker; returns the IPC::Run
# handle and a ref to its stderr
sub start_worker
{
	my ($name, @flags) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $hxw, '--dsn', $dsn, '--name', $name, @flags ],
		'<', \undef, '>', \$out, '2>', \$err);
	push @live, $h;
	return ($h, \$err);
}

# wait_for(code): polls code every 50 ms until true, for at most the
# default timeout
sub wait_for
{
	my ($code) = @_;
	my $deadline = time() + $PostgreSQL::Test::Utils::timeout_default;
	while (time() < $deadline)
	{
		# collect the workers' stderr
		$_->pump_nb for grep { $_->pumpable } @live;
		return 1 if $code->();
		select(undef, undef, undef, 0.05);
	}
	return 0;
}

sub task_status
{
	my ($id) = @_;
	return $node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $id");
}

# ---- 1. stream task through LISTEN
my ($a, $a_err) = start_worker('A', '--type', 'summ', '--concurrency', '2', '--poll', '60',
	'--lease', '2', '--cost-field', 'tokens', '--', $cmd);
ok( wait_for(sub { $$a_err =~ /connected; executor "A"/ }), 'worker A connected')
  or diag $$a_err;
# the LISTEN is in place once the worker has connected (it LISTENs first)
my $id = $node->safe_psql('postgres',
	"SELECT hx_submit('summ', '{\"q\": \"hello\"}', origin => 'user')");
ok(wait_for(sub { task_status($id) eq 'done' }), 'stream task done by worker A');
is( $node->safe_psql('postgres', qq{
		SELECT result->'echo'->>'q' || ' ' || reported_cost || ' ' || executor || ' '
			   || (finished_at - submitted_at < interval '30 seconds')
		  FROM hx_task WHERE id = $id}),
	'hello 3 A true', 'result from stdout, cost from --cost-field, picked up at once (LISTEN)');

# ---- 2. kill -9 mid-task: lease expiry, another worker completes it
$id = $node->safe_psql('postgres',
	"SELECT hx_submit('summ', '{\"hold\": true}', origin => 'user')");
ok(wait_for(sub { -e "$dir/held.$id" }), 'worker A runs the held task');
$a->signal('KILL');
$a->finish;
my ($b, $b_err) = start_worker('B', '--type', 'summ', '--concurrency', '2', '--poll', '0.2',
	'--lease', '2', '--', $cmd);
ok(wait_for(sub { task_status($id) eq 'done' }), 'the task of the killed worker is done');
is( $node->safe_psql('postgres', qq{
		SELECT t.attempts || ' ' || t.executor || ' ' || (t.result->>'attempt') || ' '
			   || string_agg(e.message || '/' || e.sqlstate, ',')
		  FROM hx_task t JOIN hx_error e ON e.task_id = t.id
		 WHERE t.id = $id GROUP BY t.id}),
	'2 B 2 lease expired/57014', 'attempt 1 lost with its lease, attempt 2 done by worker B');

# ---- heartbeats keep a task that outlives its lease (2 s); failures and
# timeouts are failed attempts with the command's words
$id = $node->safe_psql('postgres',
	"SELECT hx_submit('summ', '{\"long\": true}', origin => 'user')");
ok(wait_for(sub { task_status($id) eq 'done' }), 'a 3 s task under a 2 s lease is done');
is( $node->safe_psql('postgres',
		"SELECT attempts || ' ' || (SELECT count(*) FROM hx_error WHERE task_id = $id) FROM hx_task WHERE id = $id"),
	'1 0', 'in one attempt: the heartbeats kept its lease');
$node->safe_psql('postgres', "SELECT hx_register('one_shot', max_attempts => 1)");
my ($d, $d_err) = start_worker('D', '--type', 'one_shot', '--timeout', '0.5', '--poll', '0.2', '--', $cmd);
my %ids = map {
	$_ => $node->safe_psql('postgres',
		"SELECT hx_submit('one_shot', '{\"$_\": true}', origin => 'user')")
} qw(fail garbage sleepy);
ok( wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM hx_task WHERE task_type = 'one_shot' AND status = 'dead'") eq '3' }),
	'failing, garbage-printing and hanging commands: dead after their one attempt');
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(e.message || ' [' || e.sqlstate || ']', ' | ' ORDER BY e.task_id)
		  FROM hx_error e WHERE e.task_type = 'one_shot'}),
	'command exited with status 3: model said no [38000] | '
	  . 'command printed no valid JSON on stdout (invalid input syntax for type json) [38000] | '
	  . 'command timed out after 0.5 seconds and was killed [38000]',
	'each failure says why');
$d->signal('TERM');
$d->finish;

# ---- 3. server restart: B reconnects
$node->restart;
$id = $node->safe_psql('postgres',
	"SELECT hx_submit('summ', '{\"q\": \"after restart\"}', origin => 'user')");
ok(wait_for(sub { task_status($id) eq 'done' }), 'task done after a server restart');
is($node->safe_psql('postgres', "SELECT executor FROM hx_task WHERE id = $id"),
	'B', 'by worker B, which reconnected');
ok(wait_for(sub { $$b_err =~ /connection lost; reconnecting.*connected again/s }),
	'B logged the reconnect') or diag $$b_err;

# ---- 4. SIGTERM: finish what it holds, exit 0
$id = $node->safe_psql('postgres',
	"SELECT hx_submit('summ', '{\"slow\": true}', origin => 'user')");
ok( wait_for(sub { task_status($id) eq 'running' }), 'slow task running');
$b->signal('TERM');
$b->finish;
is($b->result(0), 0, 'worker B exits 0 after SIGTERM');
is(task_status($id), 'done', 'the task it held was finished and reported');

# ---- 5. batch mode: 10,000 tasks through one JSONL command
my $bcmd = "$dir/batch.pl";
open $fh, '>', $bcmd or die;
print $fh <<'PL';
#!/usr/bin/env perl
use strict;
use warnings;
use JSON::PP;
my $json = JSON::PP->new->canonical;
open my $in, '<', $ENV{HX_BATCH_INPUT} or die "input: $!";
open my $out, '>', $ENV{HX_BATCH_OUTPUT} or die "output: $!";
while (my $line = <$in>)
{
	my $req = $json->decode($line);
	print $out $json->encode({ custom_id => $req->{custom_id},
		result => { double => 2 * $req->{payload}{n} }, usd => 0.001 }), "\n";
}
close $out or die;
PL
close $fh;
chmod 0755, $bcmd;

$node->safe_psql('postgres', qq{
	SELECT hx_register('bsum');
	INSERT INTO hx_window (name, schedule) VALUES ('w401', '0 3 * * *');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bsum-batch', 1, 'bsum', 'batch', 'w401');
	SELECT count(hx_submit('bsum', jsonb_build_object('n', g))) FROM generate_series(1, 10000) g;
});
my ($c, $c_err) = start_worker('C', '--batch', '--batch-size', '5000', '--type', 'bsum',
	'--poll', '0.2', '--cost-field', 'usd', '--', $bcmd);
ok(wait_for(sub { $$c_err =~ /connected; executor "C"/ }), 'batch worker C connected');
is($node->safe_psql('postgres', "SELECT count(*) FROM hx_task WHERE task_type = 'bsum' AND status = 'running'"),
	'0', 'nothing claimed while the window is closed');
$node->safe_psql('postgres', "SELECT hx_run_window('w401')");
ok( wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM hx_task WHERE task_type = 'bsum' AND status <> 'done'") eq '0' }),
	'all 10,000 batch tasks done');
is( $node->safe_psql('postgres', qq{
		SELECT count(*) FILTER (WHERE (result->>'double')::int = 2 * (payload->>'n')::int)
			   || ' ' || sum(reported_cost) || ' ' || count(DISTINCT run_id)
		  FROM hx_task WHERE task_type = 'bsum'}),
	'10000 10.000 1', 'every result matches its task, costs booked, one window run');
ok(wait_for(sub { $$c_err =~ /batch of 5000 tasks reported: 5000 done/ }), 'in batches of 5000')
  or diag $$c_err;
$c->signal('TERM');
$c->finish;
is($c->result(0), 0, 'batch worker exits 0 after SIGTERM');

# ---- 6. --unit-price: units times the price, booked exactly
my $tcmd = "$dir/tokens.sh";
open $fh, '>', $tcmd or die;
print $fh <<'SH';
#!/bin/sh
cat > /dev/null
echo '{"answer": "ok", "tokens": 12}'
SH
close $fh;
chmod 0755, $tcmd;
$node->safe_psql('postgres', "SELECT hx_register('priced', max_attempts => 1)");
my ($e, $e_err) = start_worker('E', '--type', 'priced', '--poll', '0.2',
	'--cost-field', 'tokens', '--unit-price', '0.5', '--', $tcmd);
$id = $node->safe_psql('postgres', "SELECT hx_submit('priced', '{}', origin => 'user')");
ok(wait_for(sub { task_status($id) eq 'done' }), 'priced stream task done') or diag $$e_err;
is( $node->safe_psql('postgres', qq{
		SELECT c.cost || ' ' || c.reported || ' ' || t.reported_cost || ' ' || (t.result->>'tokens')
		  FROM hx_cost c JOIN hx_task t ON t.id = c.task_id WHERE c.task_id = $id}),
	'6.0 true 6.0 12', '12 tokens at --unit-price 0.5 book 6; the result keeps its 12 tokens');
$e->signal('TERM');
$e->finish;

# batch mode: the cost in the result, on the line, not a number (the
# catalog price then, with a warning), and a first line that is not JSON
my $pcmd = "$dir/priced_batch.pl";
open $fh, '>', $pcmd or die;
print $fh <<'PL';
#!/usr/bin/env perl
use strict;
use warnings;
use JSON::PP;
my $json = JSON::PP->new->canonical;
open my $in, '<', $ENV{HX_BATCH_INPUT} or die "input: $!";
open my $out, '>', $ENV{HX_BATCH_OUTPUT} or die "output: $!";
print $out "this line is not JSON\n\n";
while (my $line = <$in>)
{
	my $req = $json->decode($line);
	my $how = $req->{payload}{how};
	my %l = (custom_id => $req->{custom_id}, result => { how => $how });
	if ($how eq 'result') { $l{result}{tokens} = 12 }
	elsif ($how eq 'line') { $l{tokens} = 1000001 }
	else { $l{result}{tokens} = 'many' }
	print $out $json->encode(\%l), "\n";
}
close $out or die;
PL
close $fh;
chmod 0755, $pcmd;
$node->safe_psql('postgres', qq{
	SELECT hx_register('bpriced', max_attempts => 1);
	INSERT INTO hx_price (task_type, route, unit_cost) VALUES ('bpriced', 'batch', 0.25);
	INSERT INTO hx_window (name, schedule) VALUES ('w401p', '0 3 * * *');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('bpriced-batch', 1, 'bpriced', 'batch', 'w401p');
	SELECT hx_submit('bpriced', jsonb_build_object('how', h)) FROM unnest('{result,line,word}'::text[]) h;
});
my ($f, $f_err) = start_worker('F', '--batch', '--type', 'bpriced', '--poll', '0.2',
	'--cost-field', 'tokens', '--unit-price', '0.0000015', '--', $pcmd);
ok(wait_for(sub { $$f_err =~ /connected; executor "F"/ }), 'batch worker F connected');
$node->safe_psql('postgres', "SELECT hx_run_window('w401p')");
ok( wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT count(*) FROM hx_task WHERE task_type = 'bpriced' AND status = 'done'") eq '3' }),
	'priced batch tasks done') or diag $$f_err;
is( $node->safe_psql('postgres', qq{
		SELECT string_agg(t.payload->>'how' || '=' || c.cost || '/' || c.reported || '/'
						  || (t.result - 'how')::text, ' ' ORDER BY t.id)
		  FROM hx_task t JOIN hx_cost c ON c.task_id = t.id WHERE t.task_type = 'bpriced'}),
	'result=0.0000180/true/{"tokens": 12} line=1.5000015/true/{} word=0.250000/false/{"tokens": "many"}',
	'batch: units times the price, exactly, from the result or the line; the results as printed');
ok( wait_for(sub { $$f_err =~ /output line 1 is not JSON/ && $$f_err =~ /cost field "tokens" of a result is not a number: many/ }),
	'the line that is not JSON and the cost that is not a number are warned about') or diag $$f_err;
$f->signal('TERM');
$f->finish;

# ---- 7. a COMMAND that cannot be run: exit 2 at start, nothing claimed
$node->safe_psql('postgres', "SELECT hx_register('untouched')");
my $u = $node->safe_psql('postgres', "SELECT hx_submit('untouched', '{}', origin => 'user')");
open $fh, '>', "$dir/plain.py" or die;
print $fh "print('{}')\n";
close $fh;
chmod 0644, "$dir/plain.py";
for my $case (
	[ './nosuch.py', qr/cannot run command "\.\/nosuch\.py": No such file or directory\nHINT: .*current directory/ ],
	[ "$dir/plain.py", qr/cannot run command ".*plain\.py": it is not executable\nHINT: Make it executable \(chmod \+x/ ],
	[ $dir, qr/cannot run command ".*": it is a directory/ ],
	[ 'hx-no-such-command-401', qr/cannot run command "hx-no-such-command-401": not found in PATH \(.*\)\nHINT: / ])
{
	my ($command, $expect) = @$case;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ $hxw, '--dsn', $dsn, '--type', 'untouched', '--poll', '0.2', '--', $command ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(60));
	eval { $h->finish; };
	if ($@)
	{
		$h->kill_kill;
		fail("hx_worker -- $command did not exit: $@");
	}
	is($h->result(0), 2, "command $command: exit 2");
	like($err, $expect, "command $command: says why, with a hint");
}
is($node->safe_psql('postgres', "SELECT status || ' ' || attempts FROM hx_task WHERE id = $u"),
	'queued 0', 'no task was claimed or changed');

# ---- bad flags and an unreachable server: clear message, non-zero exit
my ($out, $err);
IPC::Run::run([ $hxw, '--concurrency', '0', '--', 'true' ], '>', \$out, '2>', \$err);
isnt($? >> 8, 0, 'wrong flag: non-zero exit');
like($err, qr/invalid value "0" for --concurrency/, 'wrong flag: says which');
for my $price ('-1', 'abc', '1e-999', 'NaN', '0.5 ')
{
	IPC::Run::run([ $hxw, '--cost-field', 'tokens', '--unit-price', $price, '--', 'true' ],
		'>', \$out, '2>', \$err);
	is($? >> 8, 2, "--unit-price '$price': exit 2");
	like($err, qr/invalid value "\Q$price\E" for --unit-price/, "--unit-price '$price': says why");
}
IPC::Run::run([ $hxw, '--unit-price', '0.5', '--', 'true' ], '>', \$out, '2>', \$err);
is($? >> 8, 2, '--unit-price without --cost-field: exit 2');
like($err, qr/--unit-price 0\.5 needs --cost-field/, '--unit-price without --cost-field: says so');
IPC::Run::run([ $hxw, '--dsn', "$dsn port=1", '--', 'true' ], '>', \$out, '2>', \$err);
is($? >> 8, 1, 'unreachable server: exit 1');
like($err, qr/could not connect/, 'unreachable server: says so');
IPC::Run::run([ $hxw, '--dsn', $dsn, '--type', 'nope', '--', 'true' ], '>', \$out, '2>', \$err);
like($err, qr/unknown task type 'nope'/, 'unknown type: the server says so');

open $fh, '>', "$dir/release" or die;
close $fh;
$node->stop;
done_testing();
