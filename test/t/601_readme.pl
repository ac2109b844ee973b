# 601_readme.pl - the README's SQL examples run as written and print what
# the README says they print.
#
# Every ```sql block of README.md runs, in the README's order, on a fresh
# server with the library preloaded (the first block creates the
# extension), as a superuser would paste them into psql; none may fail.
# A block whose fence says more than sql ("```sql (on the front; ...)")
# runs elsewhere: on several servers, in the test the fence names.
# A statement followed directly by comment lines that start with two
# spaces ("--  a | b | c") shows its output: those lines must be what psql
# prints for it, row by row, cells separated by "|" (spaces around cells
# do not count; "..." stands for any text).  Then a few results the README
# promises in prose are checked.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $readme = "$FindBin::RealBin/../../README.md";
open my $fh, '<', $readme or die "cannot read $readme: $!";
my (@blocks, $cur);
while (my $line = <$fh>)
{
	if (!defined $cur && $line =~ /^```sql\s*$/)
	{
		$cur = '';
	}
	elsif (defined $cur && $line =~ /^```\s*$/)
	{
		push @blocks, $cur;
		undef $cur;
	}
	elsif (defined $cur)
	{
		$cur .= $line;
	}
}
close $fh;
cmp_ok(scalar @blocks, '>=', 5, 'the README has SQL examples (' . scalar(@blocks) . ')');

my $node = HxTest::new_node('readme', create_extension => 0);
# the roles the privileges section grants to ("your login roles")
$node->safe_psql('postgres', 'CREATE ROLE llm_worker LOGIN; CREATE ROLE alice LOGIN;');
# statements of a block, each with the output lines shown after it
sub statements
{
	my ($sql) = @_;
	my (@stmts, $cur, $dollar);
	$cur = '';
	for my $line (split /\n/, $sql)
	{
		if ($cur eq '' && @stmts && $line =~ /^--  (.*)$/)
		{
			push @{ $stmts[-1]{expect} }, $1;
			next;
		}
		if ($cur eq '' && @stmts && $line =~ /^-- columns: (.*)$/)
		{
			$stmts[-1]{columns} = $1;
			next;
		}
		next if $cur eq '' && $line =~ /^\s*(--.*)?$/;
		$cur .= "$line\n";
		my $n = () = $line =~ /\$\$/g;
		$dollar = !$dollar if $n % 2;
		if (!$dollar && $line =~ /;\s*(--.*)?$/)
		{
			push @stmts, { sql => $cur, expect => [] };
			$cur = '';
		}
	}
	push @stmts, { sql => $cur, expect => [] } if $cur =~ /\S/;
	return @stmts;
}

sub cells
{
	my ($line) = @_;
	$line =~ s/^\s+|\s+$//g;
	return join('|', map { s/^\s+|\s+$//gr } split /\|/, $line, -1) =~ s/\|+$//r;
}

my ($i, $checked) = (0, 0);
for my $sql (@blocks)
{
	$i++;
	my @stmts = statements($sql);
	my $script = join('', map { "\\echo '\@\@\@ $_'\n" . $stmts[$_]{sql} } 0 .. $#stmts);
	my ($first) = $sql =~ /^\s*(?:--[^\n]*\n\s*)*([^\n]+)/;
	my ($rc, $out, $err) = $node->psql('postgres', $script,
		extra_params => ['-F', ' | ', '-v', 'ON_ERROR_STOP=1']);
	is($rc, 0, "README example $i runs: $first") or diag $err;
	my (%got, $k);
	for my $line (split /\n/, $out)
	{
		if ($line =~ /^\@\@\@ (\d+)$/) { $k = $1; $got{$k} = []; next; }
		push @{ $got{$k} }, $line if defined $k;
	}
	for my $n (0 .. $#stmts)
	{
		if (my $cols = $stmts[$n]{columns})
		{
			# the columns a "-- columns:" line lists, read off a view of the query
			my $q = $stmts[$n]{sql} =~ s/;\s*(--[^\n]*)?\s*$//r;
			my $have = $node->safe_psql('postgres', qq{
				CREATE TEMP VIEW readme_columns AS $q;
				SELECT string_agg(attname, ', ' ORDER BY attnum) FROM pg_attribute
				 WHERE attrelid = 'readme_columns'::regclass});
			$checked++;
			is($have, $cols, "README example $i lists the columns of: " . ($stmts[$n]{sql} =~ /^\s*([^\n]+)/)[0]);
		}
		my @want = @{ $stmts[$n]{expect} };
		next unless @want;
		$checked++;
		my @have = @{ $got{$n} || [] };
		my $ok = @have == @want;
		for my $j (0 .. $#want)
		{
			last unless $ok;
			my $re = join('.*', map { quotemeta } split /\.\.\./, cells($want[$j]), -1);
			$ok = cells($have[$j]) =~ /^$re$/;
		}
		my ($stmt) = $stmts[$n]{sql} =~ /^\s*([^\n]+)/;
		ok($ok, "README example $i prints what it shows: $stmt")
		  or diag "README shows:\n" . join("\n", @want) . "\npsql prints:\n" . join("\n", @have);
	}
}
cmp_ok($checked, '>=', 5, "the README shows the output (or columns) of $checked statements, all checked");

# what the comments say
is($node->safe_psql('postgres', 'SELECT status FROM hx_task WHERE id = 1'), 'done',
	'task 1 of the tour is done');
is( $node->safe_psql('postgres', q{
		SELECT submitted_by FROM hx_task WHERE payload->>'text' = 'Where is my parcel?'}),
	'support_app', 'the task support_app submitted is its own');
is( $node->safe_psql('postgres', 'SET ROLE support_app; SELECT count(*) FROM hx_task'),
	'1', '... and the only one it sees');
is( $node->safe_psql('postgres', q{
		SELECT route || ' ' || window_name || ' ' || rule_name
		  FROM hx_classify('summarize', sla => '2 hours', at => '2026-06-15 00:30+00')}),
	'batch morning night-to-morning', 'the night-to-morning rule decides as shown');
is( $node->safe_psql('postgres', q{SELECT hx_price_at('summarize', 'batch')}),
	'0.010', 'hx_price_at gives the batch price the comment says');

$node->stop;
done_testing();
