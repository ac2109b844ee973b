# 701_upgrade.pl - ALTER EXTENSION hybridexec UPDATE from every released
# version keeps everything and ends where a fresh install of the current
# version starts.
#
# For each released version (the install scripts kept in
# src/sql/released), its script is installed next to the current
# library, as after a package upgrade; the workers wait for the update
# and the API refuses with a hint meanwhile.  The database is filled
# through the old version's own objects with types, rules (one default
# changed, one removed), windows, prices, a budget, a watched table, and
# tasks in every status with their errors, runs and bookings.  After the
# update (PostgreSQL chains the update scripts): the schema equals a
# fresh install's (pg_dump --schema-only of both, normalised), every row
# of every table survived (the columns both versions have), pg_dump's
# configuration covers the same tables, and the workers run the old
# queue - stream tasks, tasks whose old worker was lost, a window, the
# watched table - each exactly once.  An update that would drop a user's
# object refuses and changes nothing.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;
use HxRelease;

my $cur = HxRelease::current_version();
my @released = HxRelease::released_versions();
ok(scalar(@released) >= 2, 'released versions to update from: ' . join(', ', @released));

for my $from (@released)
{
	note("update from $from to $cur");
	my $node = HxTest::new_node("upgrade_$from",
		shared_preload_libraries => 'hybridexec,pg_cron',
		'cron.database_name' => 'postgres',
		'cron.use_background_workers' => 'on',
		create_extension => 0);
	$node->safe_psql('postgres', qq{CREATE EXTENSION pg_cron; CREATE EXTENSION hybridexec VERSION '$from'});
	is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'hybridexec'}),
		$from, "version $from installed from its kept script");

	# $from with the current library: workers wait, the API says what to do
	ok( $node->wait_for_log(qr/is at version \Q$from\E, but the library is version \Q$cur\E: its workers wait for ALTER EXTENSION hybridexec UPDATE/),
		'the workers say they wait for the update');
	my ($ret, $out, $err) = $node->psql('postgres', q{SELECT hx_submit('x', '{}')}, extra_params => ['-v', 'VERBOSITY=verbose']);
	like($err, qr/55000: extension hybridexec is at version \Q$from\E, but its library is version \Q$cur\E/,
		'hx_submit before the update: 55000, names both versions');
	like($err, qr/HINT:  Run ALTER EXTENSION hybridexec UPDATE/, '... and the hint says what to run');

	# fill it through the old version's objects (hx_submit is the library's, so tasks are rows)
	my $user_objects = q{
		CREATE TABLE docs (id int PRIMARY KEY, body text, summary jsonb);
		CREATE TABLE seen (k text, at timestamptz DEFAULT clock_timestamp());
		CREATE FUNCTION summarize(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
		BEGIN
			INSERT INTO seen (k) VALUES (p->>'body');
			RETURN jsonb_build_object('len', length(p->>'body'));
		END $$;
	};
	# since 0.3, hx_attach is the library's (which refuses until the
	# update): attach as it does, through the old version's objects
	my $attach = $from eq '0.2'
	  ? q{SELECT hx_attach('docs', 'summarize', columns => ARRAY['body'], result_column => 'summary');}
	  : q{INSERT INTO hx_attachment (source, task_type, columns, result_column, key_columns, attached_by)
		  VALUES ('docs', 'summarize', ARRAY['body'], 'summary', ARRAY['id'], current_user::regrole);
		  SELECT _hybridexec.hx_attach_trigger('docs');
		  SELECT _hybridexec.hx_attach_sync_write_back();};
	$node->safe_psql('postgres', $user_objects . qq{
		UPDATE hx_window SET schedule = '0 5 1 1 *' WHERE name = 'fast';	-- no run in the middle
		SELECT hx_register('summarize', 'summarize(jsonb)', max_attempts => 2, timeout => '30 seconds', description => 'from an old version');
		SELECT hx_register('ext', description => 'external');
		INSERT INTO hx_window (name, schedule, chunk_size, description) VALUES ('weekly', '0 3 * * 0', 500, 'user window');
		INSERT INTO hx_rule (name, position, task_type, route, window_name, description)
		VALUES ('ext-weekly', 5, 'ext', 'batch', 'weekly', 'user rule');
		UPDATE hx_rule SET position = 25 WHERE name = 'fast-batch';
		DELETE FROM hx_rule WHERE name = 'interactive-sla';
		INSERT INTO hx_price (task_type, route, unit_cost, description)
		VALUES ('summarize', 'stream', 0.02, 'list'), ('summarize', 'batch', 0.01, 'batch list');
		INSERT INTO hx_price_period (name, days, local_from, local_until, multiplier)
		VALUES ('weekday-peak', '{1,2,3,4,5}', '09:00', '17:00', 1.5);
		INSERT INTO hx_budget (department, period, amount) VALUES ('support', 'day', 100);
		$attach
		INSERT INTO hx_task (task_type, payload, route, window_name, rule_name, department, dedupe_key, priority)
		SELECT 'summarize', jsonb_build_object('body', 'text ' || i), CASE WHEN i % 2 = 0 THEN 'stream' ELSE 'batch' END,
			   CASE WHEN i % 2 = 0 THEN NULL ELSE 'nightly' END, 'fill', 'support', 'k' || i, i % 3
		  FROM generate_series(1, 40) i;
		INSERT INTO hx_task (task_type, payload, route, window_name, rule_name)
		SELECT 'ext', '{"x": 1}', 'batch', 'weekly', 'ext-weekly' FROM generate_series(1, 5);
		-- through the states, booked by the old ledger trigger; ids 17-20 stay
		-- "running" on a worker that is gone
		UPDATE hx_task SET status = 'running', attempts = 1, started_at = now(), worker_pid = 1 WHERE id BETWEEN 1 AND 20;
		UPDATE hx_task SET status = 'done', result = '{"len": 6}', finished_at = now() WHERE id BETWEEN 1 AND 10;
		UPDATE hx_task SET status = 'failed', last_error = 'boom', run_after = now() WHERE id BETWEEN 11 AND 13;
		UPDATE hx_task SET status = 'dead', last_error = 'boom', finished_at = now() WHERE id BETWEEN 14 AND 15;
		UPDATE hx_task SET status = 'cancelled', finished_at = now() WHERE id = 16;
		INSERT INTO hx_error (task_id, task_type, attempt, message) SELECT id, task_type, 1, 'boom' FROM hx_task WHERE id BETWEEN 11 AND 15;
		INSERT INTO hx_window_run (window_name, started_by, status, processed, finished_at) VALUES ('nightly', 'manual', 'done', 3, now());
		INSERT INTO hx_checkpoint (run_id, chunk, task_type, task_ids, last_task_id)
		SELECT max(id), 1, 'summarize', ARRAY[1, 3, 5]::bigint[], 5 FROM hx_window_run;
	});
	is( $node->safe_psql('postgres', q{SELECT string_agg(status || ':' || n, ' ' ORDER BY status)
			FROM (SELECT status, count(*) n FROM hx_task GROUP BY status) s}),
		'cancelled:1 dead:2 done:10 failed:3 queued:25 running:4', "$from holds tasks in every status");
	cmp_ok($node->safe_psql('postgres', 'SELECT count(*) FROM hx_cost'), '>=', 15, '... and their bookings');

	# what must survive: every table's rows, in the columns both versions
	# have, as a digest per table computed by one query - after the update in
	# the update's own transaction, before any worker sees the new version
	my @tables = HxRelease::tables($node, 'postgres');
	my $digest_sql = sub {
		my (%where) = @_;
		return join("\nUNION ALL\n", map {
			my $t = $_;
			my $name = $t =~ s/^public\.//r;
			my $cols = $node->safe_psql('postgres', qq{
				SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute
				 WHERE attrelid = '$t'::regclass AND attnum > 0 AND NOT attisdropped
				   AND NOT (attrelid = 'hx_attachment'::regclass AND attname = 'result_type')});
			my $at = $where{$name} || $t;
			"SELECT '$name', count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text COLLATE \"C\"), '')) "
			  . "FROM (SELECT $cols FROM $at) t"
		} @tables) . ";\n";
	};
	my $before_sql = $digest_sql->();
	# (since 0.3 hx_state remembers the shipped rows: new rows after an
	# update from 0.2, not changed ones)
	my $after_sql = $from eq '0.2'
	  ? $digest_sql->('hx_state' => q{_hybridexec.hx_state WHERE key !~ '^(shipped|removed) '})
	  : $before_sql;
	my $before = $node->safe_psql('postgres', $before_sql);
	cmp_ok(scalar(split /\n/, $before), '>=', 17, 'digests of every table (' . scalar(@tables) . ')');

	# a DBA's own policy on a table of the extension outlives the update
	$node->safe_psql('postgres', q{CREATE POLICY dba_own ON hx_task FOR SELECT TO pg_monitor USING (true)});

	# a user's view over the extension's code stops the update, which changes nothing
	$node->safe_psql('postgres', 'CREATE VIEW my_stats AS SELECT * FROM hx_stats');
	($ret, $out, $err) = $node->psql('postgres', 'ALTER EXTENSION hybridexec UPDATE',
		extra_params => ['-v', 'VERBOSITY=verbose']);
	like($err, qr/2BP01: cannot update extension hybridexec: other objects depend on its functions, views or types/,
		'a view over hx_stats stops the update (2BP01)');
	like($err, qr/view my_stats/, '... naming the view');
	like($err, qr/HINT:  Drop them \(keep their definitions\), run ALTER EXTENSION hybridexec UPDATE, then create them again/,
		'... with a hint');
	is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'hybridexec'}),
		$from, "... and the extension is still $from");
	$node->safe_psql('postgres', 'DROP VIEW my_stats');

	my $after = $node->safe_psql('postgres', "BEGIN;\nALTER EXTENSION hybridexec UPDATE;\n$after_sql COMMIT;");
	for my $line (split /\n/, $before)
	{
		my ($name) = split /\|/, $line;
		my ($got) = grep { /^\Q$name\E\|/ } split /\n/, $after;
		is($got, $line, "$name: every row survived the update");
	}
	is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'hybridexec'}),
		$cur, "ALTER EXTENSION hybridexec UPDATE took it from $from to $cur");

	# the same schema as a fresh install, on a server set up alike
	my $fresh = HxTest::new_node("fresh_$from",
		shared_preload_libraries => 'hybridexec,pg_cron',
		'cron.database_name' => 'postgres',
		'cron.use_background_workers' => 'on',
		create_extension => 0);
	$fresh->safe_psql('postgres', $user_objects . q{
		CREATE EXTENSION pg_cron;
		CREATE EXTENSION hybridexec;
		SELECT hx_register('summarize', 'summarize(jsonb)');
		CREATE POLICY dba_own ON hx_task FOR SELECT TO pg_monitor USING (true);
		SELECT hx_attach('docs', 'summarize', columns => ARRAY['body'], result_column => 'summary');
	});
	my $updated_schema = HxRelease::schema($node, 'postgres');
	my $fresh_schema = HxRelease::schema($fresh, 'postgres');
	cmp_ok(scalar(split /\n/, $fresh_schema), '>', 1000,
		'the schema dump includes the extension\'s objects (' . scalar(split /\n/, $fresh_schema) . ' lines)');
	is(HxRelease::diff($updated_schema, $fresh_schema), '', 'the updated schema is that of a fresh install');
	is($node->safe_psql('postgres', q{
			SELECT array_agg(c::text ORDER BY c::text) FROM pg_extension, unnest(extconfig::regclass[]) c WHERE extname = 'hybridexec'}),
		$fresh->safe_psql('postgres', q{
			SELECT array_agg(c::text ORDER BY c::text) FROM pg_extension, unnest(extconfig::regclass[]) c WHERE extname = 'hybridexec'}),
		'pg_dump keeps the same tables and sequences');

	is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_policy WHERE polname = 'dba_own'}), '1',
		'the DBA\'s own policy on hx_task is still there');
	is($node->safe_psql('postgres', q{
			SELECT string_agg(DISTINCT attached_by::text, ',') FROM hx_attachment}),
		'postgres', 'a watched table counts as attached by its owner');

	# the workers run the old queue: stream tasks, those lost with an old
	# worker, the watched table, and a window
	ok( $node->poll_query_until('postgres', q{
			SELECT count(*) = 0 FROM hx_task WHERE task_type = 'summarize' AND route = 'stream'
			   AND status IN ('queued', 'running', 'failed')}),
		'the stream workers ran the queued, failed and lost stream tasks');
	$node->safe_psql('postgres', q{INSERT INTO docs (id, body) VALUES (1, 'watched after the update')});
	my $run = $node->safe_psql('postgres', q{SELECT hx_run_window('nightly')});
	ok( $node->poll_query_until('postgres', qq{SELECT status = 'done' FROM hx_window_run WHERE id = $run}),
		'a window ran the batch tasks queued under the old version');
	is($node->safe_psql('postgres', q{SELECT summary->>'len' FROM docs WHERE id = 1}), '24',
		'a row of the watched table became a task (in the window) whose result was written back');
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FILTER (WHERE status NOT IN ('done', 'dead', 'cancelled')) || ' ' ||
				   count(*) FILTER (WHERE status = 'done')
			  FROM hx_task WHERE task_type = 'summarize'}),
		'0 38', 'every summarize task ended: 38 done (2 dead, 1 cancelled under the old version)');
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM (SELECT k FROM seen GROUP BY k HAVING count(*) <> 1) d}),
		'0', 'each task ran exactly once after the update');
	is( $node->safe_psql('postgres', q{
			SELECT count(*) FROM hx_task t WHERE t.status = 'done'
			   AND (SELECT count(*) FROM hx_cost c WHERE c.task_id = t.id AND c.outcome = 'done') <> 1}),
		'0', 'every done task has exactly one done booking');
	is( $node->safe_psql('postgres', q{
			SELECT string_agg(jobname || ' ' || command, '; ' ORDER BY jobname) FROM cron.job}),
		"hybridexec window fast SELECT public.hx_run_window('fast', 'cron'); "
		  . "hybridexec window nightly SELECT public.hx_run_window('nightly', 'cron'); "
		  . "hybridexec window weekly SELECT public.hx_run_window('weekly', 'cron')",
		'the windows keep their pg_cron jobs');
	$node->stop;
	$fresh->stop;
}

done_testing();
