# 501_escalation.pl - every way a non-superuser once could run code with
# more rights than its own, tried as that user, and shown refused.
#
#   1. write-back to a watched table: a trigger the table's owner adds runs
#      as the owner, not as the stream worker (a superuser)
#   2. handlers run sealed: what one handler changes of the session
#      (search_path, settings, session advisory locks) is gone before the
#      next one; SET ROLE and temporary tables are refused inside
#   3. run_as cannot be forged: hx_type is not writable, and a type runs as
#      whoever registered it last
#   4. internals are closed: hx_cron_sync_window, hx_launch_run
#   5. a batch worker never waits forever for the transaction that launched
#      it, so an open transaction cannot hold the batch worker slots
#   6. temporary objects of the caller never stand in for ours inside a
#      SECURITY DEFINER function (hx_batch_report, hx_complete)
#
# The attacker connects as role "app": NOSUPERUSER, a member of
# hybridexec_admin (it may register types and attach its own tables), the
# way a team's DBA would be.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib $FindBin::RealBin;
use HxTest;

my $node = HxTest::new_node('escalation', 'hybridexec.stream_workers' => 1);
$node->safe_psql('postgres', q{
	CREATE ROLE app LOGIN;
	GRANT hybridexec_admin TO app;
	CREATE ROLE app_exec LOGIN;
	GRANT hybridexec_executor TO app_exec;
	CREATE SCHEMA appsch AUTHORIZATION app;
	CREATE TABLE public.probe_log (who text, what text, at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT, SELECT ON public.probe_log TO PUBLIC;
});

# psql as role $role
sub as_role
{
	my ($role, $sql, %opt) = @_;
	return $node->psql('postgres', $sql, extra_params => [ '-U', $role ], %opt);
}

sub is_superuser
{
	my ($role) = @_;
	return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = '$role'");
}

HxTest::wait_workers($node, 1);

# --- 1. write-back runs as the table's owner ---------------------------------
my ($rc, $out, $err) = as_role('app', q{
	CREATE FUNCTION appsch.summarize(p jsonb) RETURNS jsonb LANGUAGE sql
		AS $$ SELECT jsonb_build_object('summary', left(p->>'body', 10)) $$;
	SELECT hx_register('app_summary', 'appsch.summarize(jsonb)');
	CREATE TABLE appsch.tickets (id serial PRIMARY KEY, body text, summary jsonb);
	CREATE FUNCTION appsch.grab() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		BEGIN
			ALTER ROLE app SUPERUSER;
			INSERT INTO public.probe_log VALUES (current_user, 'became superuser');
		EXCEPTION WHEN insufficient_privilege THEN
			INSERT INTO public.probe_log VALUES (current_user, 'refused');
		END;
		RETURN NEW;
	END $$;
	CREATE TRIGGER grab AFTER UPDATE OF summary ON appsch.tickets
		FOR EACH ROW EXECUTE FUNCTION appsch.grab();
	SELECT hx_attach('appsch.tickets', 'app_summary', columns => '{body}',
					 result_column => 'summary', origin => 'user');
	INSERT INTO appsch.tickets (body) VALUES ('the printer is on fire');
});
is($rc, 0, 'app registers, attaches its table and inserts a row') or diag $err;
ok( $node->poll_query_until('postgres',
		"SELECT summary IS NOT NULL FROM appsch.tickets"),
	'the stream worker wrote the result back');
is( $node->safe_psql('postgres', "SELECT who || ' ' || what FROM probe_log ORDER BY at"),
	'app refused', "the owner's trigger ran as the owner, app, and its ALTER ROLE was refused");
is(is_superuser('app'), 'f', 'app is no superuser');
is( $node->safe_psql('postgres',
		"SELECT submitted_by::text || ' ' || status FROM hx_task WHERE task_type = 'app_summary'"),
	'app done', 'the task of the row was submitted by the role that attached the table');
$node->safe_psql('postgres', 'TRUNCATE probe_log');

# --- 2. handlers run sealed --------------------------------------------------
($rc, $out, $err) = as_role('app', q{
	CREATE FUNCTION appsch.lower(t text) RETURNS text LANGUAGE sql
		AS $$ INSERT INTO public.probe_log VALUES (current_user, 'appsch.lower ran') RETURNING 'HIJACKED' $$;
	CREATE FUNCTION appsch.leaky(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM set_config('search_path', 'appsch, pg_catalog, public', false);
		PERFORM set_config('work_mem', '77MB', false);
		SET LOCAL statement_timeout = '1ms';
		PERFORM pg_advisory_lock(424242);
		RETURN '{}';
	END $$;
	CREATE FUNCTION appsch.temp_planter(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		CREATE TEMP TABLE hx_task (id bigint);
		RETURN '{}';
	END $$;
	CREATE FUNCTION appsch.role_setter(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		SET ROLE postgres;
		RETURN '{}';
	END $$;
	SELECT hx_register('leaky', 'appsch.leaky(jsonb)');
	SELECT hx_register('temp_planter', 'appsch.temp_planter(jsonb)', max_attempts => 1);
	SELECT hx_register('role_setter', 'appsch.role_setter(jsonb)', max_attempts => 1);
});
is($rc, 0, 'app registers its handlers') or diag $err;
$node->safe_psql('postgres', q{
	CREATE FUNCTION public.innocent(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
	BEGIN
		RETURN jsonb_build_object('v', lower(p->>'v'), 'search_path', current_setting('search_path'),
								  'work_mem', current_setting('work_mem'), 'user', current_user,
								  'timeout', current_setting('statement_timeout'));
	END $$;
	SELECT hx_register('innocent', 'public.innocent(jsonb)');
});
# one transaction, one worker: the leaky task runs first, in the same batch
$node->safe_psql('postgres', q{
	BEGIN;
	SELECT hx_submit('leaky', '{}', origin => 'user');
	SELECT hx_submit('innocent', '{"v": "ABC"}', origin => 'user');
	SELECT hx_submit('temp_planter', '{}', origin => 'user');
	SELECT hx_submit('role_setter', '{}', origin => 'user');
	COMMIT;
});
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM hx_task WHERE task_type IN ('leaky', 'innocent', 'temp_planter', 'role_setter') AND status NOT IN ('done', 'dead')"),
	'the four tasks finished');
my $default_path = $node->safe_psql('postgres', 'SHOW search_path');
is( $node->safe_psql('postgres',
		"SELECT result->>'v' || '|' || (result->>'search_path') || '|' || (result->>'work_mem') || '|' || (result->>'user') || '|' || (result->>'timeout') FROM hx_task WHERE task_type = 'innocent'"),
	"abc|$default_path|4MB|postgres|0",
	"the next handler saw the worker's own search_path, settings and role: lower() was pg_catalog's");
is($node->safe_psql('postgres', 'SELECT count(*) FROM probe_log'), '0', 'appsch.lower never ran');
is( $node->safe_psql('postgres', q{SELECT status FROM hx_task WHERE task_type = 'leaky'}),
	'done', 'the leaky task itself was done');
ok( $node->poll_query_until('postgres', 'SELECT pg_try_advisory_lock(424242)'),
	'its session advisory lock was released after it returned');
like( $node->safe_psql('postgres', q{SELECT status || ': ' || last_error FROM hx_task WHERE task_type = 'temp_planter'}),
	qr/^dead: cannot create temporary table within security-restricted operation/,
	'a handler cannot plant temporary objects for the next one');
like( $node->safe_psql('postgres', q{SELECT status || ': ' || last_error FROM hx_task WHERE task_type = 'role_setter'}),
	qr/^dead: cannot set parameter "role" within security-definer function/,
	'a handler cannot SET ROLE');

# --- 3. run_as cannot be forged -----------------------------------------------
($rc, $out, $err) = as_role('app',
	q{INSERT INTO hx_type (task_type, handler, run_as) VALUES ('forged', 'appsch.leaky(jsonb)', 'postgres')});
like($err, qr/permission denied for table hx_type/, 'app cannot insert into hx_type');
($rc, $out, $err) = as_role('app', q{UPDATE hx_type SET run_as = 'postgres' WHERE task_type = 'leaky'});
like($err, qr/permission denied for table hx_type/, 'app cannot change run_as');
($rc, $out, $err) = as_role('app', q{UPDATE hx_type SET handler = 'appsch.leaky(jsonb)' WHERE task_type = 'innocent'});
like($err, qr/permission denied for table hx_type/, "app cannot swap the handler of postgres's type");
# re-registering postgres's type makes it app's: the handler runs as app
($rc, $out, $err) = as_role('app', q{SELECT hx_register('innocent', 'appsch.leaky(jsonb)')});
is($rc, 0, 'an administrator may re-register a type') or diag $err;
is( $node->safe_psql('postgres', q{SELECT run_as FROM hx_type WHERE task_type = 'innocent'}),
	'app', '... and it then runs as that administrator, never as its former owner');
is(is_superuser('app'), 'f', 'app is still no superuser');

# --- 4. internals are closed --------------------------------------------------
for my $call ("SELECT _hybridexec.hx_cron_sync_window('nightly', NULL)",
	"SELECT _hybridexec.hx_launch_run(1, 32)",
	"SELECT _hybridexec.hx_put_back(ARRAY[1::bigint], 'x')",
	"SELECT * FROM _hybridexec.hx_stream_claim(0, 10)")
{
	($rc, $out, $err) = as_role('app', $call);
	like($err, qr/permission denied for schema _hybridexec/, "app cannot call $call");
	($rc, $out, $err) = as_role('app_exec', $call);
	like($err, qr/permission denied for schema _hybridexec/, "app_exec cannot call it either");
}

# --- 5. an open transaction does not hold the batch worker slots --------------
$node->safe_psql('postgres', q{
	INSERT INTO hx_window (name, schedule) VALUES ('held', '0 0 1 1 *');
	CREATE FUNCTION public.bnop(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS 'SELECT ps';
	SELECT hx_register('held_type', batch_handler => 'public.bnop(jsonb[])');
	INSERT INTO hx_rule (name, position, task_type, route, window_name)
	VALUES ('held-rule', 1, 'held_type', 'batch', 'held');
	SELECT hx_submit('held_type', '{}');
});
my $holder = $node->background_psql('postgres');
$holder->query_safe("BEGIN; SELECT hx_run_window('held');");
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM hx_batch_workers() WHERE run_id IS NOT NULL"),
	'the open transaction launched a batch worker');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM hx_batch_workers() WHERE run_id IS NOT NULL"),
	'the worker gave its slot back while that transaction stayed open');
$holder->query_safe('COMMIT');
$holder->quit;
ok( $node->poll_query_until('postgres',
		"SELECT status = 'done' FROM hx_window_run WHERE window_name = 'held'"),
	'once it committed, the scheduler ran the run');
is( $node->safe_psql('postgres', "SELECT status FROM hx_task WHERE task_type = 'held_type'"),
	'done', 'and its task');

# --- 6. temporary objects never stand in for ours ------------------------------
$node->safe_psql('postgres', "SELECT hx_register('ext_job')");
my $ext = $node->safe_psql('postgres', "SELECT hx_submit('ext_job', '{}', origin => 'user')");
($rc, $out, $err) = as_role('app_exec', q{
	CREATE FUNCTION pg_temp.grab() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		INSERT INTO public.probe_log VALUES (current_user, 'temp trigger ran');
		RETURN NEW;
	END $$;
	CREATE TEMP TABLE hx_batch_lines (id bigint, token uuid, line jsonb, error text);
	CREATE TRIGGER grab BEFORE INSERT OR UPDATE ON hx_batch_lines FOR EACH ROW EXECUTE FUNCTION pg_temp.grab();
	CREATE TEMP TABLE hx_task (id bigint, status text, lease_token uuid, lease_expires_at timestamptz);
	CREATE TRIGGER grab BEFORE INSERT OR UPDATE ON hx_task FOR EACH ROW EXECUTE FUNCTION pg_temp.grab();
	CREATE TEMP TABLE hx_cost (id bigint);
	CREATE TRIGGER grab BEFORE INSERT ON hx_cost FOR EACH ROW EXECUTE FUNCTION pg_temp.grab();
	SELECT r.status FROM hx_claim('temp-attack', ARRAY['ext_job'], max => 10) c,
		   LATERAL hx_batch_report(ARRAY[c.id], ARRAY[c.lease_token],
				format('{"custom_id": "%s", "result": {"ok": true}}', c.id)) r;
});
is($rc, 0, 'the executor completed the task with a batch report') or diag $err;
like($out, qr/^done$/m, 'the report was booked');
is($node->safe_psql('postgres', "SELECT status FROM hx_task WHERE id = $ext"), 'done', 'the task is done');
is($node->safe_psql('postgres', 'SELECT count(*) FROM probe_log'), '0',
	'no temporary table of the caller was touched by the functions running as the owner');
is(is_superuser('app_exec'), 'f', 'app_exec is no superuser');

$node->stop;
done_testing();
