/*
 * src/sql/update/0.3--0.4.sql
 *
 * Storage migration from 0.3 to 0.4, run between begin.sql (which dropped
 * the 0.3 code) and the 0.4 code.  The storage new in 0.4 is created by
 * its parts' [storage 0.4] blocks, which the update runs as a fresh
 * install does: hx_cost_day (ledger.sql), the daily totals that bookings
 * older than hybridexec.ledger_retention roll up into, and hx_task_history
 * (queue.sql), where window runs move their done tasks.  Tasks finished
 * under 0.3 stay in hx_task, where they are found as before.
 */

/*
 * The stream claim index orders by the expression (-priority), so that a
 * claim can start after a key (the claim floor, task_state.c).
 */
DROP INDEX hx_task_stream_claim_idx;
CREATE INDEX hx_task_stream_claim_idx ON hx_task ((-priority), id)
	WHERE status IN ('queued', 'failed') AND route = 'stream';

/*
 * The ledger becomes a view (ledger.sql): its table keeps the single
 * attempts' bookings as hx_cost_attempt, next to hx_cost_chunk (a
 * [storage 0.4] block), and the view takes its name.  Rows, ids and
 * grants stay; its sequence takes the name a fresh install gives it.
 */
ALTER TABLE hx_cost RENAME TO hx_cost_attempt;
ALTER SEQUENCE hx_cost_id_seq RENAME TO hx_cost_attempt_id_seq;

/*
 * Retention keeps dead tasks longer than the others
 * (hybridexec.retention_dead): they get an index of their own (queue.sql).
 */
DROP INDEX hx_task_finished_idx;
CREATE INDEX hx_task_finished_idx ON hx_task (finished_at)
	WHERE status IN ('done', 'cancelled');
CREATE INDEX hx_task_dead_idx ON hx_task (finished_at)
	WHERE status = 'dead';

/*
 * Retries: a type may set its own backoff, and an attempt the executor
 * said to retry later (hx_fail's retry_after) is counted apart.
 */
ALTER TABLE hx_type ADD COLUMN retry_backoff interval, ADD COLUMN max_backoff interval,
	ADD CONSTRAINT hx_type_backoff_check
		CHECK (retry_backoff BETWEEN interval '0' AND interval '1 hour'
			   AND max_backoff BETWEEN interval '0' AND interval '1 day');
ALTER TABLE hx_task ADD COLUMN throttled integer NOT NULL DEFAULT 0;

/*
 * Per-type limits (the buckets are a [storage 0.4] block of queue.sql);
 * their claims count the chunks in flight through a partial index.
 */
CREATE INDEX hx_checkpoint_started_idx ON hx_checkpoint (task_type)
	WHERE state = 'started';
ALTER TABLE hx_type ADD COLUMN max_running integer, ADD COLUMN rate_limit integer,
	ADD COLUMN rate_period interval,
	ADD CONSTRAINT hx_type_limits_check
		CHECK (max_running BETWEEN 1 AND 100000
			   AND (rate_limit IS NULL) = (rate_period IS NULL)
			   AND rate_limit BETWEEN 1 AND 1000000
			   AND rate_period BETWEEN interval '1 millisecond' AND interval '1 day');

/* a submission may reuse a done task's result (hx_submit's reuse_within): booked as "reused" */
ALTER TABLE hx_cost_attempt DROP CONSTRAINT hx_cost_outcome_check,
	ADD CONSTRAINT hx_cost_outcome_check CHECK (outcome IN ('done', 'failed', 'dead', 'correction', 'reused'));
ALTER TABLE hx_stat_minute ADD COLUMN reused bigint NOT NULL DEFAULT 0;

/* percentage rollouts: a rule may take a share of its tasks, and a task says which sampled rule saw it */
ALTER TABLE hx_rule ADD COLUMN sample numeric,
	ADD CONSTRAINT hx_rule_sample_check CHECK (sample > 0 AND sample <= 1);
ALTER TABLE hx_task ADD COLUMN sample_rule text;

/* tiered results: a type may name the type that refines its results, and a refinement its parent */
ALTER TABLE hx_type ADD COLUMN refine_with text REFERENCES hx_type (task_type);
ALTER TABLE hx_task ADD COLUMN parent_id bigint, ADD COLUMN tier integer NOT NULL DEFAULT 1;
CREATE INDEX hx_task_parent_idx ON hx_task (parent_id) WHERE parent_id IS NOT NULL;

/* quality and dead letters for people (hx_quality is a [storage 0.4] block of quality.sql) */
ALTER TABLE hx_type ADD COLUMN min_quality numeric,
	ADD COLUMN dead_letter_type text REFERENCES hx_type (task_type) ON DELETE SET NULL,
	ADD CONSTRAINT hx_type_dead_letter_check CHECK (dead_letter_type <> task_type);
/* freshness of watched tables */
ALTER TABLE hx_attachment ADD COLUMN max_lag interval,
	ADD CONSTRAINT hx_attachment_max_lag_check CHECK (max_lag > interval '0');
/* a parallel run's workers share one place in run order instead of id modulo parts */
ALTER TABLE hx_window_run ADD COLUMN cursor_type text, ADD COLUMN cursor_priority integer,
	ADD COLUMN cursor_deadline timestamptz, ADD COLUMN cursor_id bigint;
/* the queue's checks stay on the queue; hx_task_history (created below) has its own */
ALTER TABLE hx_task DROP CONSTRAINT hx_task_status_check, DROP CONSTRAINT hx_task_route_check,
	DROP CONSTRAINT hx_task_window_check,
	ADD CONSTRAINT hx_task_status_check
		CHECK (status IN ('queued', 'running', 'done', 'failed', 'dead', 'cancelled')) NO INHERIT,
	ADD CONSTRAINT hx_task_route_check CHECK (route IN ('stream', 'batch')) NO INHERIT,
	ADD CONSTRAINT hx_task_window_check CHECK ((route = 'batch') = (window_name IS NOT NULL)) NO INHERIT;
