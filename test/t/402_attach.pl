# 402_attach.pl - a watched table served by hx_worker processes.
#
# Rows of tickets become tasks without any application change; the rules
# classify them (urgent tickets stream, the rest wait for a window, rows
# from before hx_attach are backfilled), two hx_worker processes (stream
# and --batch) run them, and every row gets its summary written back.
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

my $node = HxTest::new_node('attach');
# hx_worker holds hybridexec_executor only: write-back runs as the table's
# owner whoever completes the task
$node->safe_psql('postgres', 'CREATE ROLE executor LOGIN; GRANT hybridexec_executor TO executor;');
my $dsn = $node->connstr('postgres') . ' user=executor';
my $dir = PostgreSQL::Test::Utils::tempdir;

# one script serves both modes: stream (payload on stdin) and batch (JSONL)
my $cmd = "$dir/summarize.pl";
open my $fh, '>', $cmd or die;
print $fh <<'PL';
#!/usr/bin/env perl
use strict;
use warnings;
use JSON::PP;
my $json = JSON::PP->new->canonical;
sub summary { my ($p) = @_; return { summary => uc($p->{body}), tokens => length($p->{body}) } }
if ($ENV{HX_BATCH_INPUT})
{
	open my $in, '<', $ENV{HX_BATCH_INPUT} or die;
	open my $out, '>', $ENV{HX_BATCH_OUTPUT} or die;
	while (<$in>)
	{
		my $req = $json->decode($_);
		print $out $json->encode({ custom_id => $req->{custom_id}, result => summary($req->{payload}) }), "\n";
	}
	close $out or die;
}
else
{
	local $/;
	print $json->encode(summary($json->decode(<STDIN>)));
}
PL
close $fh;
chmod 0755, $cmd;

$node->safe_psql('postgres', q{
	SELECT hx_register('summarize');
	CREATE TABLE tickets (id serial PRIMARY KEY, body text NOT NULL,
						  priority text NOT NULL DEFAULT 'normal', summary jsonb);
	INSERT INTO tickets (body) VALUES ('from before'), ('also from before');
	INSERT INTO hx_window (name, schedule) VALUES ('w402', '0 3 * * *');
	INSERT INTO hx_rule (name, position, task_type, payload_match, route, window_name) VALUES
		('urgent-tickets', 1, 'summarize', '{"priority": "urgent"}', 'stream', NULL),
		('other-tickets', 2, 'summarize', NULL, 'batch', 'w402');
	SELECT hx_attach('tickets', 'summarize', columns => '{body,priority}',
					 result_column => 'summary');
});

my @workers;

# a test that dies half-way must not leave hx_worker processes behind
END { $_->kill_kill for grep { $_->pumpable } @workers; }
for my $mode ([], ['--batch', '--poll', '0.2'])
{
	my $err = '';
	push @workers, IPC::Run::start([ $hxw, '--dsn', $dsn, '--type', 'summarize',
			'--cost-field', 'tokens', @$mode, '--', $cmd ],
		'<', \undef, '>', \my $out, '2>', \$err);
}

$node->safe_psql('postgres', q{
	INSERT INTO tickets (body, priority) VALUES ('printer on fire', 'urgent');
	INSERT INTO tickets (body) SELECT 'question ' || g FROM generate_series(1, 50) g;
});
ok( $node->poll_query_until('postgres',
		"SELECT summary->>'summary' = 'PRINTER ON FIRE' FROM tickets WHERE priority = 'urgent'"),
	'the urgent ticket streams and gets its summary written back');
is( $node->safe_psql('postgres',
		"SELECT count(*) FROM tickets WHERE summary IS NULL"),
	'52', 'the others wait for their window (and the old rows for a backfill)');

is($node->safe_psql('postgres', "SELECT hx_backfill('tickets')"), '53', 'backfill goes through the table');
is($node->safe_psql('postgres', "SELECT hx_backfill('tickets')"), '0', 'and is then finished');
$node->safe_psql('postgres', "SELECT hx_run_window('w402')");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM tickets WHERE summary->>'summary' IS DISTINCT FROM upper(body)"),
	'every row gets its summary once the window opens');
is( $node->safe_psql('postgres', q{
		SELECT count(*) || ' ' || count(DISTINCT s.source_key) || ' ' || sum(t.reported_cost)
		  FROM hx_task t JOIN hx_task_source s ON s.task_id = t.id
		 WHERE t.status = 'done'}),
	'53 53 ' . (length('printer on fire') + length('from before') + length('also from before')
		+ 9 * length('question 1') + 41 * length('question 10')),
	'one task per row, each with the cost the command reported');

$_->signal('TERM') for @workers;
$_->finish for @workers;
is(join(',', map { $_->result(0) } @workers), '0,0', 'both workers stop cleanly');

# a dropped table takes its attachment along
$node->safe_psql('postgres', 'DROP TABLE tickets');
is($node->safe_psql('postgres', 'SELECT count(*) FROM hx_attachment'), '0',
	'DROP TABLE forgets the attachment');

$node->stop;
done_testing();
