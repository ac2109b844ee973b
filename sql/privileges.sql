--
-- privileges: the role matrix - what each shipped role may do and what it
-- may not - that nothing is open to PUBLIC, that every security-definer
-- function pins its search_path, and that no SQL function of the extension
-- changes a task's status (task_state.c owns that).
--
\set VERBOSITY terse

-- the three roles: no login, no superuser; the administrator holds the others
SELECT rolname, rolcanlogin, rolsuper,
	   pg_has_role('hybridexec_admin', oid, 'MEMBER') AS admin_is_member
  FROM pg_roles WHERE rolname LIKE 'hybridexec\_%' ORDER BY rolname;

CREATE TEMP VIEW ext_proc AS
SELECT p.oid, p.oid::regprocedure AS fn, n.nspname AS schema, p.proname, p.prosecdef,
	   p.proconfig, p.prosrc, l.lanname
  FROM pg_proc p
  JOIN pg_namespace n ON n.oid = p.pronamespace
  JOIN pg_language l ON l.oid = p.prolang
  JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec';

-- nothing is executable by PUBLIC; internals by none of the roles, but
-- the one that unfolds a chunk's bookings for hx_cost, which its readers
-- call (a security_invoker view)
SELECT count(*) AS executable_by_public
  FROM ext_proc WHERE has_function_privilege('public', oid, 'EXECUTE');
SELECT r AS role, has_schema_privilege(r, '_hybridexec', 'USAGE') AS internal_schema,
	   (SELECT string_agg(fn::text, ', ') FROM ext_proc WHERE schema = '_hybridexec'
		   AND has_function_privilege(r, oid, 'EXECUTE')) AS internal_functions
  FROM unnest(ARRAY['hybridexec_submitter', 'hybridexec_executor', 'hybridexec_admin']) r;

-- the API and who may call what
SELECT proname,
	   has_function_privilege('hybridexec_submitter', oid, 'EXECUTE') AS submitter,
	   has_function_privilege('hybridexec_executor', oid, 'EXECUTE') AS executor,
	   has_function_privilege('hybridexec_admin', oid, 'EXECUTE') AS admin
  FROM ext_proc WHERE schema <> '_hybridexec' ORDER BY proname, fn::text;

-- the tables and views, and what each role may do with them
SELECT c.relname,
	   concat_ws(',', CASE WHEN has_table_privilege('hybridexec_submitter', c.oid, 'SELECT') THEN 'select' END,
				 CASE WHEN has_table_privilege('hybridexec_submitter', c.oid, 'INSERT,UPDATE,DELETE') THEN 'write' END) AS submitter,
	   concat_ws(',', CASE WHEN has_table_privilege('hybridexec_executor', c.oid, 'SELECT') THEN 'select' END,
				 CASE WHEN has_table_privilege('hybridexec_executor', c.oid, 'INSERT,UPDATE,DELETE') THEN 'write' END) AS executor,
	   concat_ws(',', CASE WHEN has_table_privilege('hybridexec_admin', c.oid, 'SELECT') THEN 'select' END,
				 CASE WHEN has_table_privilege('hybridexec_admin', c.oid, 'INSERT') THEN 'insert' END,
				 CASE WHEN has_table_privilege('hybridexec_admin', c.oid, 'UPDATE') THEN 'update' END,
				 CASE WHEN has_any_column_privilege('hybridexec_admin', c.oid, 'UPDATE')
						   AND NOT has_table_privilege('hybridexec_admin', c.oid, 'UPDATE') THEN 'update some columns' END,
				 CASE WHEN has_table_privilege('hybridexec_admin', c.oid, 'DELETE') THEN 'delete' END) AS admin,
	   c.relrowsecurity AS row_security
  FROM pg_class c
  JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec'
 WHERE c.relkind IN ('r', 'v')
 ORDER BY c.relnamespace <> e.extnamespace, c.relname;

-- every SECURITY DEFINER function pins its search_path, pg_temp last
SELECT fn AS definer_without_safe_search_path
  FROM ext_proc
 WHERE prosecdef AND NOT EXISTS (SELECT 1 FROM unnest(proconfig) c
								  WHERE c LIKE 'search\_path=%pg\_temp');
-- and so does every SQL function (the inlinable ones aside)
SELECT fn AS sql_function_without_search_path
  FROM ext_proc
 WHERE lanname IN ('sql', 'plpgsql') AND proconfig IS NULL;

-- one owner of task state: no SQL function changes hx_task's status
SELECT fn AS updates_hx_task
  FROM ext_proc
 WHERE lanname IN ('sql', 'plpgsql') AND prosrc ~* 'update\s+(\S+\.)?hx_task\M'
 ORDER BY 1;

-- ------------------------------------------------------------------------
-- The matrix in practice, as roles that hold one shipped role each
-- ------------------------------------------------------------------------
CREATE ROLE regress_hx_sub;
CREATE ROLE regress_hx_sub2;
CREATE ROLE regress_hx_exec;
CREATE ROLE regress_hx_admin;
CREATE ROLE regress_hx_nobody;
GRANT hybridexec_submitter TO regress_hx_sub, regress_hx_sub2;
GRANT hybridexec_executor TO regress_hx_exec;
GRANT hybridexec_admin TO regress_hx_admin;
CREATE FUNCTION private_handler(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
REVOKE EXECUTE ON FUNCTION private_handler(jsonb) FROM PUBLIC;

-- a role with none of them: nothing at all
SET ROLE regress_hx_nobody;
SELECT hx_submit('external', '{}');
SELECT count(*) FROM hx_task;
SELECT * FROM hx_claim('nobody');
RESET ROLE;

-- a submitter submits, classifies, reads and cancels its own task
SET ROLE regress_hx_sub;
SELECT hx_submit('external', '{"who": "sub"}', sla => '12 hours') AS sub_task \gset
SELECT route, status, submitted_by FROM hx_task WHERE id = :sub_task;
SELECT count(*) = 1 AS sees_only_its_task FROM hx_task;
SELECT route, window_name, rule_name FROM hx_classify('external', origin => 'user');
SELECT hx_cancel(:sub_task);
SELECT hx_wait(:sub_task, '0 s');
SELECT status FROM hx_await(ARRAY[:sub_task], '0 s');
-- and nothing else: no table writes, no policy, no executor or admin calls, no internals
INSERT INTO hx_task (task_type, route, window_name) VALUES ('external', 'batch', 'nightly');
UPDATE hx_task SET status = 'queued' WHERE id = :sub_task;
DELETE FROM hx_task;
INSERT INTO hx_rule (name, position, route) VALUES ('mine', 1, 'stream');
SELECT hx_register('sub_type');
SELECT hx_run_window('nightly');
SELECT * FROM hx_claim('sub');
SELECT * FROM hx_cost_report();
SELECT count(*) FROM hx_window_run;
SELECT _hybridexec.hx_launch_run(1, 32);
SELECT _hybridexec.hx_cron_sync_window('nightly', NULL);
RESET ROLE;

-- another submitter sees none of it, and cannot wait for or cancel it
SET ROLE regress_hx_sub2;
SELECT count(*) AS visible FROM hx_task;
\set VERBOSITY sqlstate
SELECT hx_cancel(:sub_task);
SELECT hx_wait(:sub_task, '0 s');
SELECT * FROM hx_await(ARRAY[:sub_task], '0 s');
\set VERBOSITY terse
SELECT count(*) AS visible_errors FROM hx_error;
RESET ROLE;

-- departments: once a membership exists, only members submit for a
-- department, and members see its tasks
INSERT INTO hx_department_member (role, department) VALUES ('regress_hx_sub', 'sales');
SET ROLE regress_hx_sub2;
SELECT hx_submit('external', '{}', sla => '12 hours', department => 'sales');
SELECT count(*) AS own_memberships FROM hx_department_member;
RESET ROLE;
SET ROLE regress_hx_sub;
SELECT hx_submit('external', '{"dept": true}', sla => '12 hours', department => 'sales') AS sales_task \gset
SELECT count(*) AS own_memberships FROM hx_department_member;
RESET ROLE;
INSERT INTO hx_department_member (role, department) VALUES ('regress_hx_sub2', 'sales');
SET ROLE regress_hx_sub2;
SELECT id = :sales_task AS sees_the_department_task FROM hx_task;
SELECT hx_cancel(:sales_task) AS cancels_it;
RESET ROLE;

-- an executor claims, completes and fails; it reads and submits nothing
SELECT hx_submit('external', '{"for": "exec"}', origin => 'user') AS exec_task \gset
SET ROLE regress_hx_exec;
SELECT bool_or(id = :exec_task) AS claimed_it
  FROM hx_claim('regress-exec', ARRAY['external'], 'stream', 100);
SELECT hx_submit('external', '{}');
SELECT count(*) FROM hx_task;
SELECT hx_cancel(:exec_task);
RESET ROLE;
SELECT status, executor FROM hx_task WHERE id = :exec_task;

-- an administrator edits the policy, reads everything, registers types
-- (which then run as itself) - but cannot forge run_as nor reach internals
SELECT count(*) AS all_tasks FROM hx_task \gset
SELECT count(*) AS all_costs FROM hx_cost \gset
SET ROLE regress_hx_admin;
INSERT INTO hx_budget (department, period, amount) VALUES ('regress_dept', 'day', 100);
DELETE FROM hx_budget WHERE department = 'regress_dept';
SELECT count(*) = :all_tasks AS sees_every_task FROM hx_task;
UPDATE hx_type SET latency_value = 1.5 WHERE task_type = 'external';
UPDATE hx_type SET run_as = 'postgres' WHERE task_type = 'external';
UPDATE hx_type SET handler = 'echo_handler(jsonb)' WHERE task_type = 'external';
INSERT INTO hx_type (task_type, handler, run_as) VALUES ('forged', 'echo_handler(jsonb)', 'postgres');
SELECT hx_register('admin_type', 'echo_handler(jsonb)');
SELECT run_as FROM hx_type WHERE task_type = 'admin_type';
SELECT hx_register('private_type', 'private_handler(jsonb)');
SELECT _hybridexec.hx_launch_run(1, 1);
SELECT count(*) = :all_costs AS sees_every_cost FROM hx_cost;
RESET ROLE;
-- a type another role registered is its: a submitter given hx_register
-- (as a DBA may do for a team) changes its own types, not the admin's
GRANT EXECUTE ON FUNCTION hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[], interval, interval, integer, integer, interval, text) TO regress_hx_sub;
GRANT EXECUTE ON FUNCTION private_handler(jsonb) TO regress_hx_sub;
SET ROLE regress_hx_sub;
SELECT hx_register('admin_type');
SELECT hx_register('team_type');
SELECT hx_register('team_type', max_attempts => 5);
SELECT hx_register('team_private', 'private_handler(jsonb)');
RESET ROLE;
SELECT task_type, run_as, max_attempts FROM hx_type WHERE task_type IN ('admin_type', 'team_type') ORDER BY 1;
-- an administrator changing a type becomes its run_as, so a handler the
-- change keeps must be one the administrator may execute
SET ROLE regress_hx_admin;
\set VERBOSITY default
\set SHOW_CONTEXT never
SELECT hx_register('team_private', timeout => '20 seconds');
\set VERBOSITY terse
\set SHOW_CONTEXT errors
SELECT hx_register('team_private', timeout => '20 seconds', clear => ARRAY['handler']);
RESET ROLE;
SELECT task_type, handler, timeout, run_as FROM hx_type WHERE task_type = 'team_private';
REVOKE EXECUTE ON FUNCTION hx_register(text, regprocedure, regprocedure, integer, interval, text, integer, interval, text[], interval, interval, integer, integer, interval, text) FROM regress_hx_sub;

-- clean up
SELECT hx_unregister('admin_type'), hx_unregister('team_type'), hx_unregister('team_private');
DELETE FROM hx_task WHERE submitted_by::text LIKE 'regress_hx%' OR id = :exec_task;
DELETE FROM hx_department_member;
UPDATE hx_type SET latency_value = NULL WHERE task_type = 'external';
DROP FUNCTION private_handler(jsonb);
DROP ROLE regress_hx_sub, regress_hx_sub2, regress_hx_exec, regress_hx_admin, regress_hx_nobody;
