/*
 * src/sql/update/0.2--0.3.sql
 *
 * Storage migration from 0.2 to 0.3, run between begin.sql (which dropped
 * the 0.2 code) and the 0.3 code.  0.3 brought the privilege model (an
 * internal schema, who submitted each task and attached each table,
 * departments), isolation of tasks whose worker was lost, bounds on
 * DBA-entered keys and intervals, and the remembered shipped rows that
 * let pg_restore load dumped defaults.
 *
 * Rows from before the update: their tasks count as submitted by the role
 * running the update (so only administrators see them, as 0.2 showed
 * everything to the DBA alone), a watched table as attached by its owner,
 * and their bookings have no submitter.
 */

CREATE SCHEMA _hybridexec;
ALTER TABLE hx_state SET SCHEMA _hybridexec;

/* the queue */
ALTER TABLE hx_task
	ADD COLUMN submitted_by regrole NOT NULL DEFAULT current_user::regrole,
	ADD COLUMN isolated boolean NOT NULL DEFAULT false;
CREATE INDEX hx_task_isolated_idx ON hx_task (priority DESC, id)
	WHERE isolated AND status IN ('queued', 'failed');

ALTER TABLE hx_type
	DROP CONSTRAINT hx_type_micro_batch_check,
	ADD CONSTRAINT hx_type_micro_batch_check
		CHECK ((micro_batch_size IS NULL) = (micro_batch_wait IS NULL)
			   AND micro_batch_size BETWEEN 2 AND 1024
			   AND micro_batch_wait BETWEEN interval '0' AND interval '1 hour'
			   AND (micro_batch_size IS NULL OR batch_handler IS NOT NULL));

CREATE TABLE hx_department_member (
	role			regrole NOT NULL,
	department		text NOT NULL,
	PRIMARY KEY (role, department),
	CONSTRAINT hx_department_member_department_check
		CHECK (department <> '' AND length(department) <= 200)
);
CREATE INDEX hx_department_member_department_idx ON hx_department_member (department);

/* watched tables: the type of the result column is read from the table now */
ALTER TABLE hx_attachment DROP COLUMN result_type, ADD COLUMN attached_by regrole;
UPDATE hx_attachment a SET attached_by = c.relowner::regrole
  FROM pg_class c WHERE c.oid = a.source;
ALTER TABLE hx_attachment ALTER COLUMN attached_by SET NOT NULL;

/* the books */
ALTER TABLE hx_cost ADD COLUMN submitted_by regrole;
ALTER TABLE hx_budget ADD CONSTRAINT hx_budget_department_check CHECK (length(department) <= 200);

/* prices belong to registered types (a price of an unregistered type priced nothing) */
DELETE FROM hx_price p
 WHERE p.task_type IS NOT NULL AND NOT EXISTS (SELECT 1 FROM hx_type y WHERE y.task_type = p.task_type);
ALTER TABLE hx_price ADD CONSTRAINT hx_price_task_type_fkey
	FOREIGN KEY (task_type) REFERENCES hx_type (task_type) ON UPDATE CASCADE ON DELETE CASCADE;
ALTER TABLE hx_price_period ADD CONSTRAINT hx_price_period_name_check CHECK (length(name) <= 200);

/* bounds on what DBAs enter */
ALTER TABLE hx_rule
	ADD CONSTRAINT hx_rule_name_check CHECK (length(name) <= 200),
	ADD CONSTRAINT hx_rule_sla_check CHECK (min_sla <= interval '100 years' AND max_sla <= interval '100 years');
ALTER TABLE hx_window
	DROP CONSTRAINT hx_window_name_check,
	DROP CONSTRAINT hx_window_max_duration_check,
	DROP CONSTRAINT hx_window_margin_check,
	ADD CONSTRAINT hx_window_name_check CHECK (name <> '' AND length(name) <= 200),
	ADD CONSTRAINT hx_window_max_duration_check
		CHECK (max_duration > interval '0' AND max_duration <= interval '7 days'),
	ADD CONSTRAINT hx_window_margin_check CHECK (margin BETWEEN interval '0' AND interval '1 day');

/*
 * The shipped rows, as they are now (0.2 shipped the same ones); a default
 * already deleted gets its tombstone, so that a dump restored into a fresh
 * 0.3 does not bring it back.
 */
WITH shipped (tbl, key, cur) AS (
	SELECT 'hx_rule', k, (SELECT to_jsonb(r) FROM hx_rule r WHERE r.name = k)
	  FROM unnest(ARRAY['user-initiated', 'interactive-sla', 'fast-batch', 'slow-batch']) AS k
	UNION ALL
	SELECT 'hx_window', k, (SELECT to_jsonb(w) FROM hx_window w WHERE w.name = k)
	  FROM unnest(ARRAY['fast', 'nightly']) AS k
	UNION ALL
	SELECT 'hx_price', '1', (SELECT to_jsonb(p) FROM hx_price p WHERE p.id = 1)
)
INSERT INTO _hybridexec.hx_state (key, value)
SELECT format('shipped %s %s', tbl, key), coalesce(cur, '{}'::jsonb)::text FROM shipped
UNION ALL
SELECT format('removed %s %s', tbl, key), NULL FROM shipped WHERE cur IS NULL;
