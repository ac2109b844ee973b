# HxRelease.pm - what the release tests (upgrade, dump and restore) share.
#
#   schema(node, db)            pg_dump --schema-only of db, extension members
#                               included (--binary-upgrade), normalised:
#                               without the binary-upgrade catalog fix-ups,
#                               comments, blank lines and dropped columns
#   tables(node, db)            the extension's tables, schema-qualified
#   rows(node, db, table, cols, where)
#                               every row of table (the given columns, or
#                               all; those where says), as COPY text in a
#                               stable order
#   current_version()           default_version of hybridexec.control
#   released_versions()         the versions whose install scripts are kept
#                               in src/sql/released, oldest first
#   fill(node, db)              a busy database made with the API: types,
#                               rules, windows, prices, budgets, departments,
#                               a watched table, tasks in every status,
#                               errors, runs, checkpoints, bookings and a
#                               rolled-up day of bookings
package HxRelease;

use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;

sub current_version
{
	my $control = PostgreSQL::Test::Utils::slurp_file("$FindBin::RealBin/../../hybridexec.control");
	$control =~ /^default_version = '([^']+)'/m or die "no default_version in hybridexec.control";
	return $1;
}

sub released_versions
{
	my @v = map { m{hybridexec--([0-9.]+)\.sql$} ? ($1) : () }
	  glob("$FindBin::RealBin/../../src/sql/released/hybridexec--*.sql");
	return sort { version_key($a) cmp version_key($b) } @v;
}

sub version_key
{
	return join('.', map { sprintf('%06d', $_) } split /\./, shift);
}

sub schema
{
	my ($node, $db) = @_;
	my $dump = run_dump($node, $db, '--schema-only', '--binary-upgrade');
	my (@out, $skip);
	for (split /\n/, $dump)
	{
		$skip = 1 if /^UPDATE pg_catalog\./;
		if ($skip)
		{
			$skip = 0 if /;\s*$/;
			next;
		}
		next if /binary_upgrade/ || /^\\(un)?restrict / || /^--/ || /pg\.dropped/;
		next if /^SELECT pg_catalog\.setval\(/;	# positions of config sequences
		s/,\s*$//;		# a dropped column moves a list's last comma
		next if /^\s*$/;
		push @out, $_;
	}
	return join("\n", @out) . "\n";
}

# diff(a, b): a unified diff of two texts, '' when they are equal
sub diff
{
	my ($a, $b) = @_;
	return '' if $a eq $b;
	my $dir = PostgreSQL::Test::Utils::tempdir;
	PostgreSQL::Test::Utils::append_to_file("$dir/a", $a);
	PostgreSQL::Test::Utils::append_to_file("$dir/b", $b);
	my $out;
	IPC::Run::run(['diff', '-u', "$dir/a", "$dir/b"], '>', \$out);
	return $out;
}

sub run_dump
{
	my ($node, $db, @opt) = @_;
	my ($out, $err);
	my $ok = IPC::Run::run(['pg_dump', @opt, '-d', $node->connstr($db)], '>', \$out, '2>', \$err);
	die "pg_dump failed: $err" unless $ok;
	return $out;
}

sub tables
{
	my ($node, $db) = @_;
	return split /\n/, $node->safe_psql($db, q{
		SELECT c.oid::regclass FROM pg_depend d JOIN pg_class c ON c.oid = d.objid
		 WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e' AND c.relkind = 'r'
		   AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'hybridexec')
		 ORDER BY 1::text});
}

sub rows
{
	my ($node, $db, $table, $cols, $where) = @_;
	$cols ||= '*';
	$where = $where ? "WHERE $where" : '';
	return $node->safe_psql($db,
		"COPY (SELECT $cols FROM $table t $where ORDER BY t::text COLLATE \"C\") TO STDOUT");
}

# fill(node, db): needs setup_keyed's handler and the extension preloaded
# and created; leaves nothing running in the database's own workers.
sub fill
{
	my ($node, $db) = @_;
	$node->safe_psql($db, q{
		CREATE ROLE hx_rel_member NOLOGIN;
		CREATE TABLE docs (id int PRIMARY KEY, body text, summary jsonb);
		SELECT hx_register('ext', description => 'left to external executors');
		INSERT INTO hx_window (name, schedule, chunk_size, description)
		VALUES ('weekly', '0 3 * * 0', 500, 'a window of the DBA');
		INSERT INTO hx_rule (name, position, task_type, origin, route, window_name, description)
		VALUES ('ext-weekly', 5, 'ext', 'background', 'batch', 'weekly', 'a rule of the DBA');
		UPDATE hx_rule SET position = 25 WHERE name = 'fast-batch';	-- a default, changed
		DELETE FROM hx_rule WHERE name = 'interactive-sla';			-- a default, removed
		UPDATE hx_price SET batch_discount = 0.4 WHERE task_type IS NULL;
		INSERT INTO hx_price (task_type, route, unit_cost, description)
		VALUES ('keyed', 'stream', 0.02, 'list'), ('keyed', 'batch', 0.01, 'batch list');
		INSERT INTO hx_price_period (name, days, local_from, local_until, multiplier)
		VALUES ('weekday-peak', '{1,2,3,4,5}', '09:00', '17:00', 1.5);
		INSERT INTO hx_budget (department, period, amount) VALUES ('support', 'day', 100);
		INSERT INTO hx_department_member (role, department) VALUES ('hx_rel_member', 'support');
		SELECT hx_attach('docs', 'keyed', columns => ARRAY['body'], result_column => 'summary');
	});
	# done, dead (one attempt), cancelled, failed-then-done, and a watched row
	$node->safe_psql($db, q{
		SELECT hx_submit('keyed', jsonb_build_object('k', 'rd' || i), origin => 'user', department => 'support')
		  FROM generate_series(1, 20) i;
		SELECT hx_submit('keyed', '{"k": "rdead", "fail": true}', origin => 'user', department => 'support');
		INSERT INTO docs (id, body) VALUES (1, 'hello'), (2, 'world');
	});
	$node->poll_query_until($db, q{
		SELECT count(*) = 0 FROM hx_task WHERE route = 'stream' AND status IN ('queued', 'running', 'failed')})
	  or die 'stream tasks did not finish';
	# queued for windows (one cancelled), external ones queued and one leased
	$node->safe_psql($db, q{
		SELECT hx_submit('keyed', jsonb_build_object('k', 'rn' || i)) FROM generate_series(1, 30) i;
		SELECT hx_cancel(max(id)) FROM hx_task WHERE payload->>'k' = 'rn30';
		SELECT hx_submit('ext', jsonb_build_object('n', i), dedupe_key => 'e' || i) FROM generate_series(1, 3) i;
		SELECT hx_submit('ext', jsonb_build_object('n', i), origin => 'user') FROM generate_series(4, 6) i;
		SELECT count(*) FROM hx_claim('rel-test', ARRAY['ext'], 'stream', 2, '1 hour');
	});
	# a window run that finishes 20 of the queued keyed tasks
	$node->safe_psql($db, q{
		INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('once', '0 4 1 1 *', 10);
		UPDATE hx_task SET window_name = 'once' WHERE payload->>'k' ~ '^rn([1-9]|1[0-9]|20)$';
	});
	my $run = $node->safe_psql($db, q{SELECT hx_run_window('once')});
	$node->poll_query_until($db, qq{SELECT status NOT IN ('starting', 'running') FROM hx_window_run WHERE id = $run})
	  or die 'window run did not end';
	# a day of bookings rolled up (as after hybridexec.ledger_retention)
	$node->safe_psql($db, q{
		INSERT INTO hx_cost_day (day, task_type, route, department, origin, submitted_by, currency,
								 outcome, bookings, tasks, wall_seconds, cost, baseline_cost, batch_cost,
								 wait_hist, latency_hist)
		VALUES (current_date - 500, 'keyed', 'stream', 'support', 'user', 'hx_rel_member', 'USD',
				'done', 1200, 1100, 60.5, 12.34, 12.34, 6.17, '{0,5,1195}', '{0,0,1200}');
	});
	return;
}

1;
