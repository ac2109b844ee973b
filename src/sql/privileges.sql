/*
 * src/sql/privileges.sql
 *
 * Last part of the install script: who may do what.
 *
 * hybridexec ships three roles a DBA grants to others.  Applications,
 * executors and DBAs need nothing else: no role is granted more than
 * reading some tables, the API functions check and act (they run as the
 * extension's owner: SECURITY DEFINER, or C that switches, with
 * search_path pinned).  Nothing is executable by PUBLIC, and the internal
 * functions (schema _hybridexec) are the owner's alone.
 *
 *	hybridexec_submitter	submit, classify, wait, cancel; read its own
 *							tasks, errors and costs (row security), or its
 *							department's (hx_department_member)
 *	hybridexec_executor		claim, complete, fail, heartbeat, batch reports
 *	hybridexec_admin		both of the above, types, rules, windows, prices,
 *							budgets, departments, watched tables, every
 *							report and every table to read
 */

/* ------------------------------------------------------------------------
 * The roles (cluster-wide: the first CREATE EXTENSION makes them, DROP
 * EXTENSION leaves them)
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['hybridexec_submitter', 'hybridexec_executor', 'hybridexec_admin'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('CREATE ROLE %I NOLOGIN', r);
		END IF;
	END LOOP;
	FOREACH r IN ARRAY ARRAY['hybridexec_submitter', 'hybridexec_executor'] LOOP
		IF NOT pg_has_role('hybridexec_admin', r, 'MEMBER') THEN
			EXECUTE format('GRANT %I TO hybridexec_admin', r);
		END IF;
	END LOOP;
END
$$;

COMMENT ON ROLE hybridexec_submitter IS
'hybridexec: submit, classify, wait for and cancel tasks; read its own tasks, errors and costs (or its department''s)';
COMMENT ON ROLE hybridexec_executor IS
'hybridexec: external executors - claim, complete, fail and heartbeat tasks of types without an in-database handler';
COMMENT ON ROLE hybridexec_admin IS
'hybridexec: everything a submitter and an executor may, plus task types, rules, windows, prices, budgets, departments, watched tables and every report';

/* ------------------------------------------------------------------------
 * Nothing for PUBLIC; the internal schema for the owner only
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	f regprocedure;
BEGIN
	FOR f IN SELECT p.oid::regprocedure
			   FROM pg_proc p
			   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec' LOOP
		EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
	END LOOP;
END
$$;

REVOKE ALL ON SCHEMA _hybridexec FROM PUBLIC;
GRANT USAGE ON SCHEMA @extschema@ TO hybridexec_submitter, hybridexec_executor, hybridexec_admin;

/* ------------------------------------------------------------------------
 * Submitters
 * ------------------------------------------------------------------------ */

GRANT EXECUTE ON FUNCTION
	hx_submit(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz, interval),
	hx_submit_batch(text, jsonb[], interval, text, integer, text, timestamptz, timestamptz),
	hx_classify(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	hx_sample_point(text, text),
	hx_rollout_report(timestamptz, timestamptz),
	hx_decide(text, jsonb, interval, text, integer, text, text, timestamptz, timestamptz),
	hx_wait(bigint, interval),
	hx_result(bigint),
	hx_quality(bigint, text, numeric),
	hx_precompute(text, jsonb, text, timestamptz, interval, text),
	hx_await(bigint[], interval),
	hx_cancel(bigint),
	hx_retry(bigint[]),
	hx_retry(text, timestamptz),
	hx_schedule(text, text, text, jsonb, interval, text, integer, text),
	hx_unschedule(text)
TO hybridexec_submitter;

GRANT SELECT ON hx_task, hx_dead, hx_schedule, hx_error, hx_cost, hx_cost_day, hx_department_member TO hybridexec_submitter;
/* hx_cost reads its tables as its reader (security_invoker), under their row security */
GRANT SELECT ON hx_cost_attempt, hx_cost_chunk TO hybridexec_submitter;
GRANT EXECUTE ON FUNCTION _hybridexec.hx_cost_unfold(hx_cost_chunk) TO hybridexec_submitter, hybridexec_admin;

/* ------------------------------------------------------------------------
 * Executors
 * ------------------------------------------------------------------------ */

GRANT EXECUTE ON FUNCTION
	hx_claim(text, text[], text, integer, interval),
	hx_claim_check(text[], text),
	hx_complete(bigint, uuid, jsonb, numeric),
	hx_complete_many(bigint[], uuid[], jsonb[], numeric[]),
	hx_fail(bigint, uuid, text, boolean, numeric, interval),
	hx_heartbeat(bigint[], uuid[], interval),
	hx_batch_report(bigint[], uuid[], text, text),
	hx_result_cost(jsonb, text)
TO hybridexec_executor;

/* ------------------------------------------------------------------------
 * Administrators: every API function, every table and view to read, the
 * policy to edit.  hx_type changes only through hx_register() (a type
 * runs as the role that registered it), but for its descriptive columns.
 * ------------------------------------------------------------------------ */

DO $$
DECLARE
	f regprocedure;
	t regclass;
BEGIN
	FOR f IN SELECT p.oid::regprocedure
			   FROM pg_proc p
			   JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec'
			  WHERE p.pronamespace = e.extnamespace LOOP
		EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO hybridexec_admin', f);
	END LOOP;
	FOR t IN SELECT c.oid::regclass
			   FROM pg_class c
			   JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
			   JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'hybridexec'
			  WHERE c.relnamespace = e.extnamespace AND c.relkind IN ('r', 'v', 'p') LOOP
		EXECUTE format('GRANT SELECT ON %s TO hybridexec_admin', t);
	END LOOP;
END
$$;

GRANT INSERT, UPDATE, DELETE ON hx_rule, hx_window, hx_price, hx_price_period, hx_budget,
	hx_department_member, hx_fixed_cost TO hybridexec_admin;
GRANT UPDATE (latency_value, description, min_quality, dead_letter_type) ON hx_type TO hybridexec_admin;
GRANT UPDATE (max_lag) ON hx_attachment TO hybridexec_admin;

/* ------------------------------------------------------------------------
 * Row security: a role that is not an administrator reads the tasks,
 * errors and costs submitted by itself (or a role it is a member of), or
 * for a department it belongs to.  The extension's owner, who runs every
 * API function, is not subject to it.  pg_has_role() errs on a dropped
 * role, so the policies look only at roles that exist.
 * ------------------------------------------------------------------------ */

/* the extension's policies are named hx_*: an update drops and re-creates those, and keeps a DBA's own */
ALTER TABLE hx_task ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_task_visible ON hx_task FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
									 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER'))
		   OR department IN (SELECT m.department FROM @extschema@.hx_department_member m));
COMMENT ON POLICY hx_task_visible ON hx_task IS
'Administrators see every task; others the tasks submitted by a role they are a member of, or for a department they belong to';

ALTER TABLE hx_error ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_error_visible ON hx_error FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR EXISTS (SELECT 1 FROM @extschema@.hx_task t WHERE t.id = task_id));
COMMENT ON POLICY hx_error_visible ON hx_error IS
'The errors of the tasks the reader may see (hx_task_visible)';

/* hx_cost is a view over these two, read with the reader's rights */
DO $$
DECLARE
	t text;
BEGIN
	FOREACH t IN ARRAY ARRAY['hx_cost_attempt', 'hx_cost_chunk'] LOOP
		EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
		EXECUTE format($p$CREATE POLICY hx_cost_visible ON %I FOR SELECT
			USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
				   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
											 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER'))
				   OR department IN (SELECT m.department FROM @extschema@.hx_department_member m))$p$, t);
		EXECUTE format('COMMENT ON POLICY hx_cost_visible ON %I IS %L', t,
					   'Administrators see every booking; others those of tasks submitted by a role they are a member of, or for a department they belong to');
	END LOOP;
END
$$;

ALTER TABLE hx_schedule ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_schedule_visible ON hx_schedule FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
									 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER')));
COMMENT ON POLICY hx_schedule_visible ON hx_schedule IS
'Administrators see every schedule; others those of roles they are a member of';

ALTER TABLE hx_cost_day ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_cost_day_visible ON hx_cost_day FOR SELECT
	USING ((SELECT pg_catalog.pg_has_role('hybridexec_admin', 'MEMBER'))
		   OR submitted_by::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
									 WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER'))
		   OR department IN (SELECT m.department FROM @extschema@.hx_department_member m));
COMMENT ON POLICY hx_cost_day_visible ON hx_cost_day IS
'The rolled-up days of the bookings the reader may see (hx_cost_visible)';

ALTER TABLE hx_department_member ENABLE ROW LEVEL SECURITY;
CREATE POLICY hx_department_member_own ON hx_department_member FOR SELECT
	USING (role::oid IN (SELECT r.oid FROM pg_catalog.pg_roles r
						  WHERE pg_catalog.pg_has_role(r.oid, 'MEMBER')));
COMMENT ON POLICY hx_department_member_own ON hx_department_member IS
'A role sees the memberships of roles it is a member of (its own departments)';
CREATE POLICY hx_department_member_admin ON hx_department_member FOR ALL TO hybridexec_admin
	USING (true) WITH CHECK (true);
COMMENT ON POLICY hx_department_member_admin ON hx_department_member IS
'Administrators see and edit every membership';
