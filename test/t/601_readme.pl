# 601_readme.pl - the README's SQL examples run as written.
#
# Every ```sql block of README.md runs, in the README's order, on a fresh
# server with the library preloaded (the first block creates the
# extension), as a superuser would paste them; none may fail.  Then a few
# of the results the README promises in its comments are checked.
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
my $i = 0;
for my $sql (@blocks)
{
	$i++;
	my ($first) = $sql =~ /^\s*(?:--[^\n]*\n\s*)*([^\n]+)/;
	my ($rc, $out, $err) = $node->psql('postgres', $sql);
	is($rc, 0, "README example $i runs: $first") or diag $err;
}

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
