/*-------------------------------------------------------------------------
 *
 * task_state.c
 *	  The one owner of a task's state.  Every change of hx_task.status is a
 *	  statement of this file, whoever asks for it: the stream workers, the
 *	  batch workers, the external executors' SQL functions, the scheduler.
 *
 *		queued/failed --claim (attempt counted)--> running
 *		running       --done--> done
 *		running       --failed, attempts left--> failed (retried later)
 *		running       --failed, none left (or no retry)--> dead
 *		running       --worker lost (sweep, resumed run)--> queued (isolated:
 *						 it runs alone next time) or dead
 *		queued/failed --its window run's chunk lost--> isolated too
 *		running       --lease expired (reclaim)--> as failed
 *		queued/failed --chunk of a window run--> done (attempt counted with it),
 *						 moved from the queue into hx_task_history (the rows
 *						 written there by history.c, as the move says)
 *		queued/failed --cancel--> cancelled
 *		batch, queued --escalate--> stream, queued
 *		any unfinished --quarantine--> dead (its outcome could not be booked)
 *
 *	  One retry policy decides between failed, queued and dead
 *	  (hx_next_try), one statement books every failure, and every task
 *	  that gives up is announced by the same alert (alert.c).  The claims
 *	  all return the same row (HX_TASK_COLUMNS), decoded in one place.
 *
 *	  Bookings that SQL callers ask for in sets (put back, reclaim,
 *	  external failures and completions) run in a subtransaction; if the
 *	  set fails, each task is booked on its own, and a task whose failure
 *	  cannot be booked at all is quarantined, so one task never stops the
 *	  others.  What external executors report of a window run's tasks
 *	  (done, failed, lease expired) also counts in the run's processed and
 *	  failed, in the same subtransaction.
 *
 *	  Callers hold a transaction with SPI connected, the rule cache loaded
 *	  and, when they are SQL functions called by other roles, the
 *	  extension's owner as current user.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "hybridexec.h"
#include "history.h"
#include "task_state.h"

/*
 * The row every claim returns, in the order hx_tasks_decode reads it;
 * "attempts" is the attempt about to run (t.attempts after a claim,
 * t.attempts + 1 when a chunk reads waiting tasks); throttled attempts
 * (hx_fail's retry_after) come on top of the type's max_attempts.
 */
#define HX_TASK_NCOLUMNS 18
#define HX_TASK_COLUMNS_T(attempts, timeout_ms) \
	"t.id, t.task_type, t.payload, " attempts ", y.max_attempts + t.throttled, y.handler, " \
	"y.batch_handler, y.run_as, " timeout_ms ", " \
	"coalesce(y.micro_batch_size, 0), t.route = 'batch', t.run_id, " \
	"t.lease_token, t.lease_expires_at, t.window_name, t.priority, " \
	"t.deadline, t.submitted_at"
#define HX_TASK_COLUMNS(attempts) \
	HX_TASK_COLUMNS_T(attempts, "extract(epoch FROM y.timeout)::float8 * 1000")

/* the longest lease an external executor may take or extend to */
#define HX_MAX_LEASE_DAYS	7

/* ---- claims ---- */

/*
 * Every statement here but lock_task is about unfinished tasks, none of
 * which is in hx_task_history: they say ONLY hx_task.  Planned as an
 * inheritance tree instead, the stream path ran at half its throughput
 * (perf: the booking's UPDATE scanning, 77% of the time), and tasks found
 * by id were also looked for in hx_task_history.
 */

/*
 * The stream workers' claim, from the head of the queue or (the second
 * form) after a key: hx_claim_stream_next.  Both scan the claim index in
 * its order, ((-priority), id).
 */
#define HX_CLAIM_STREAM(after) \
	"WITH c AS MATERIALIZED (SELECT q.id FROM ONLY @extschema@.hx_task q " \
	"WHERE q.status IN ('queued', 'failed') AND q.route = 'stream' AND NOT q.isolated " \
	after \
	"AND q.run_after <= clock_timestamp() " \
	"AND EXISTS (SELECT 1 FROM @extschema@.hx_type y1 WHERE y1.task_type = q.task_type " \
	"AND (y1.handler IS NOT NULL OR y1.batch_handler IS NOT NULL) " \
	"AND (y1.micro_batch_size IS NULL " \
	"OR _hybridexec.hx_micro_batch_ready(y1.task_type, y1.micro_batch_size, y1.micro_batch_wait))) " \
	"ORDER BY (-q.priority), q.id LIMIT $2 FOR UPDATE OF q SKIP LOCKED) " \
	"UPDATE ONLY @extschema@.hx_task t SET status = 'running', attempts = t.attempts + 1, " \
	"started_at = clock_timestamp(), worker_pid = $1 " \
	"FROM @extschema@.hx_type y " \
	"WHERE t.id = ANY (ARRAY(SELECT c.id FROM c)) AND y.task_type = t.task_type " \
	"RETURNING " HX_TASK_COLUMNS("t.attempts")

static HxStmt claim_stream = {
	HX_CLAIM_STREAM(""),
	2, {INT4OID, INT4OID}, true
};
static HxStmt claim_stream_after = {
	HX_CLAIM_STREAM("AND ((-q.priority), q.id) > ($3, $4) "),
	4, {INT4OID, INT4OID, INT4OID, INT8OID}, true
};

static HxStmt claim_isolated = {
	"WITH c AS MATERIALIZED (SELECT q.id FROM ONLY @extschema@.hx_task q "
	"WHERE q.isolated AND q.status IN ('queued', 'failed') AND q.route = 'stream' "
	"AND q.run_after <= clock_timestamp() "
	"AND EXISTS (SELECT 1 FROM @extschema@.hx_type y1 WHERE y1.task_type = q.task_type "
	"AND (y1.handler IS NOT NULL OR y1.batch_handler IS NOT NULL)) "
	"ORDER BY q.priority DESC, q.id LIMIT 1 FOR UPDATE OF q SKIP LOCKED) "
	"UPDATE ONLY @extschema@.hx_task t SET status = 'running', attempts = t.attempts + 1, "
	"started_at = clock_timestamp(), worker_pid = $1, isolated = false "
	"FROM @extschema@.hx_type y "
	"WHERE t.id = ANY (ARRAY(SELECT c.id FROM c)) AND y.task_type = t.task_type "
	"RETURNING " HX_TASK_COLUMNS("t.attempts"),
	1, {INT4OID}, true
};

static HxStmt claim_ids = {
	"UPDATE ONLY @extschema@.hx_task t SET status = 'running', attempts = t.attempts + 1, "
	"started_at = clock_timestamp(), worker_pid = $2, run_id = $3, isolated = false "
	"FROM @extschema@.hx_type y "
	"WHERE t.id = ANY ($1) AND t.status IN ('queued', 'failed') AND y.task_type = t.task_type "
	"RETURNING " HX_TASK_COLUMNS("t.attempts"),
	3, {INT8ARRAYOID, INT4OID, INT8OID}, true
};

/*
 * A chunk's tasks are read without a lock (nobody but its run takes them)
 * and in run order.  This statement, the chunk booking and the claim by
 * ids name no condition that implies a partial index's predicate (route,
 * say): with statistics from an emptier table the planner would otherwise
 * scan that index and filter by id, quadratic in the chunk.
 */
static HxStmt read_waiting = {
	"SELECT " HX_TASK_COLUMNS("t.attempts + 1") ", t.ctid FROM ONLY @extschema@.hx_task t "
	"JOIN @extschema@.hx_type y ON y.task_type = t.task_type "
	"WHERE t.id = ANY ($1) AND t.status IN ('queued', 'failed') "
	"ORDER BY t.priority DESC, t.deadline, t.id",
	1, {INT8ARRAYOID}, true
};

/*
 * A window run's pick: the run row locked and its cursor read, then the
 * chunk's tasks, read by the index scan that finds them, in run order: a
 * type's due tasks after a key, with the attempt about to run - the
 * cursor's, or where hx_batch_next_key (src/sql/batch.sql) says the next
 * chunk starts when the cursor's type has nothing more.  The type is
 * bounded from above only: with "task_type = $2" the scan would start at
 * the type's first entry (an equality wins over the row comparison) and
 * step over every task of the type done so far.  The type's row is read
 * once, outside the scan (LATERAL, and kept a subquery by OFFSET 0):
 * joined to it, it was looked up again, and its timeout converted, for
 * every task.  Isolated tasks only ever run alone (batch_worker.c's
 * hx_batch_isolate): one of them in a chunk could crash it again, and
 * another part may be running it alone right now.  Each row comes with
 * its ctid, for done_chunk_tid.
 */
static HxStmt lock_cursor = {
	"SELECT r.cursor_type, -r.cursor_priority, r.cursor_deadline, r.cursor_id "
	"FROM @extschema@.hx_window_run r WHERE r.id = $1 FOR UPDATE",
	1, {INT8OID}, false
};
static HxStmt pick_key = {
	"SELECT * FROM _hybridexec.hx_batch_next_key($1, $2, $3, $4)",
	4, {INT8OID, TEXTOID, INT4OID, TEXTARRAYOID}, false
};
static HxStmt read_chunk = {
	"SELECT " HX_TASK_COLUMNS_T("t.attempts + 1", "y.timeout_ms") ", t.ctid "
	"FROM (SELECT x.task_type, x.max_attempts, x.handler, x.batch_handler, x.run_as, "
	"x.micro_batch_size, extract(epoch FROM x.timeout)::float8 * 1000 AS timeout_ms "
	"FROM @extschema@.hx_type x WHERE x.task_type = $2 "
	"AND (x.handler IS NOT NULL OR x.batch_handler IS NOT NULL) OFFSET 0) y "
	"CROSS JOIN LATERAL (SELECT t.*, t.ctid AS ctid FROM ONLY @extschema@.hx_task t "
	"WHERE t.window_name = $1 AND t.route = 'batch' AND t.status IN ('queued', 'failed') "
	"AND (t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id) "
	"> (y.task_type, $3, $4, $5) "
	"AND t.task_type <= y.task_type AND t.run_after <= now() "
	"AND t.run_id IS DISTINCT FROM $6 AND NOT t.isolated "
	"ORDER BY t.task_type, -t.priority, coalesce(t.deadline, 'infinity'::timestamptz), t.id "
	"LIMIT $7) t",
	7, {TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, INT8OID, INT8OID, INT4OID}, true
};

/*
 * the external executors' claim, one per route argument (NULL = both).  The
 * claimed rows are updated where they are (a TID scan over the ctids their
 * ids have, looked up by primary key), not joined to c: planned on the
 * statistics of a queue vacuumed down to a row or two, the join was a
 * nested loop over a full scan of the queue's primary key with c rescanned
 * for every task (10,000,000 comparisons for 500 tasks of a 20,000-task
 * burst; hx_worker fell from 25,000 to 1,300 tasks/s).  A batch task's run
 * is looked up again for the row it updates (same snapshot, same run).
 */
#define HX_CLAIM_EXTERNAL(route_condition) \
	"WITH c AS MATERIALIZED (SELECT t.id FROM ONLY @extschema@.hx_task t " \
	"JOIN @extschema@.hx_type y ON y.task_type = t.task_type " \
	"AND y.handler IS NULL AND y.batch_handler IS NULL " \
	"LEFT JOIN LATERAL (SELECT max(r.id) AS run FROM @extschema@.hx_window_run r " \
	"WHERE t.route = 'batch' AND r.window_name = t.window_name " \
	"AND r.status IN ('starting', 'running')) o ON true " \
	"WHERE t.status IN ('queued', 'failed') AND t.run_after <= now() AND " route_condition " " \
	"AND ($1::text[] IS NULL OR t.task_type = ANY ($1)) " \
	"AND (t.route = 'stream' OR (o.run IS NOT NULL AND t.run_id IS DISTINCT FROM o.run)) " \
	"ORDER BY (-t.priority), t.id LIMIT $2 FOR UPDATE OF t SKIP LOCKED) " \
	"UPDATE ONLY @extschema@.hx_task t SET status = 'running', attempts = t.attempts + 1, " \
	"started_at = clock_timestamp(), finished_at = NULL, worker_pid = NULL, executor = $3, " \
	"lease_token = gen_random_uuid(), lease_expires_at = clock_timestamp() + $4, " \
	"run_id = CASE WHEN t.route = 'batch' THEN (SELECT max(r.id) FROM @extschema@.hx_window_run r " \
	"WHERE r.window_name = t.window_name AND r.status IN ('starting', 'running')) ELSE t.run_id END, " \
	"reported_cost = NULL, isolated = false " \
	"FROM @extschema@.hx_type y WHERE t.ctid = ANY (ARRAY(SELECT x.ctid FROM ONLY @extschema@.hx_task x " \
	"WHERE x.id = ANY (ARRAY(SELECT c.id FROM c)))) AND y.task_type = t.task_type " \
	"RETURNING " HX_TASK_COLUMNS("t.attempts")

static HxStmt claim_external_stream = {
	HX_CLAIM_EXTERNAL("t.route = 'stream'"),
	4, {TEXTARRAYOID, INT4OID, TEXTOID, INTERVALOID}, true
};
static HxStmt claim_external_batch = {
	HX_CLAIM_EXTERNAL("t.route = 'batch'"),
	4, {TEXTARRAYOID, INT4OID, TEXTOID, INTERVALOID}, true
};
static HxStmt claim_external_any = {
	HX_CLAIM_EXTERNAL("true"),
	4, {TEXTARRAYOID, INT4OID, TEXTOID, INTERVALOID}, true
};

/* ---- outcomes ---- */

/*
 * Done tasks leave the queue (hx_task's own heap) for hx_task_history in
 * one statement: each is written once more, not as a new version in the
 * queue, so that the queue's heap and indexes keep only the work still to
 * do.  A statement deletes the tasks as "m" (the columns of hx_task, the
 * result as new_result) and inserts them, done, with HX_MOVE_INSERT, whose
 * arguments are the moved row's attempts, started_at, finished_at,
 * worker_pid, run_id, lease_token and reported_cost.  Every column of
 * hx_task is copied (a new column must be added here).  The inserted rows
 * return HX_BOOK_RETURNING, which hx_move_done books (book.c); the inserts
 * fire the write-back trigger of watched tables (hx_book_moving()).
 */
#define HX_MOVE_INSERT(attempts, started, finished, pid, run, lease, cost) \
	"INSERT INTO @extschema@.hx_task_history (id, task_type, payload, status, route, window_name, " \
	"rule_name, reason, origin, priority, sla, deadline, department, dedupe_key, attempts, result, " \
	"last_error, submitted_at, run_after, started_at, finished_at, worker_pid, run_id, escalated_at, " \
	"executor, lease_token, lease_expires_at, reported_cost, submitted_by, isolated, throttled, " \
	"sample_rule, parent_id, tier) " \
	"SELECT id, task_type, payload, 'done', route, window_name, rule_name, reason, origin, priority, " \
	"sla, deadline, department, dedupe_key, " attempts ", new_result, last_error, submitted_at, " \
	"run_after, " started ", " finished ", " pid ", " run ", escalated_at, executor, " lease ", NULL, " \
	cost ", submitted_by, isolated, throttled, sample_rule, parent_id, tier FROM m"

/*
 * How a move finds its tasks: by where they are (their ctids, one TID scan)
 * and what they must still be, with their results, tokens and costs in the
 * moving set (hx_moving_*: a hash table the caller fills), never by a join.
 * These statements are planned once, generically, often with statistics
 * taken while the queue was empty: a join to the caller's arrays was then
 * planned as a full scan of the queue's primary key, or of a small partial
 * index, for every statement, with the arrays hashed or rescanned for
 * every row (an external executor's completions fell from 20,000 to 1,000
 * tasks/s within a benchmark round).  For the same reason a status is a
 * parameter: status = 'running' would make the partial indexes on running
 * tasks candidates for a full scan.  $1 the task ids: their ctids are
 * looked up by primary key, the only index on id, in the statement's own
 * snapshot.
 */
#define HX_MOVE_BY_ID(which, attempts, started, finished, pid, run, lease, cost) \
	"WITH m AS (DELETE FROM ONLY @extschema@.hx_task t WHERE t.ctid = ANY (ARRAY(" \
	"SELECT x.ctid FROM ONLY @extschema@.hx_task x WHERE x.id = ANY ($1))) AND " which " " \
	"AND _hybridexec.hx_moving_has(t.id) " \
	"RETURNING t.*, _hybridexec.hx_moving_result(t.id) AS new_result, " \
	"_hybridexec.hx_moving_cost(t.id) AS new_cost) " \
	HX_MOVE_INSERT(attempts, started, finished, pid, run, lease, cost) \
	" RETURNING " HX_BOOK_RETURNING

/*
 * tasks a worker claimed and ran: $2 'running', $3 the worker.  Not
 * through hx_task_running_idx: its entries all have the worker's pid for a
 * key, and every task the worker ran since the last vacuum leaves one
 * there (a 1,000,000-task stream backlog drained at a quarter of a small
 * one's speed).
 */
static HxStmt done_running = {
	HX_MOVE_BY_ID("t.status = $2 AND t.worker_pid IS NOT DISTINCT FROM $3",
				  "attempts", "started_at", "clock_timestamp()", "worker_pid", "run_id", "NULL",
				  "reported_cost"),
	3, {INT8ARRAYOID, TEXTOID, INT4OID}, true
};

/*
 * A window run's chunk: its tasks were read while they waited, and only
 * those still waiting ($2: queued, failed) move, attempt counted, started
 * when the chunk's transaction did ($3), run by $4 in run $5.  They finish
 * at one moment ($6), so that the ledger books them as one row
 * (hx_cost_chunk).  Used when the chunk's read did not give every task's
 * ctid (done_chunk_tid).
 */
static HxStmt done_chunk = {
	HX_MOVE_BY_ID("t.status = ANY ($2)", "attempts + 1", "$3", "$6", "$4", "$5", "NULL",
				  "reported_cost"),
	6, {INT8ARRAYOID, TEXTARRAYOID, TIMESTAMPTZOID, INT4OID, INT8OID, TIMESTAMPTZOID}, true
};

/*
 * The same, the rows found where the chunk's read saw them ($1, their
 * ctids) instead of looked up by id: a fifth of the statement.  A row that
 * moved since (another transaction changed the task) is not there, or is
 * another task (its id must be in the moving set): it is left out, and the
 * chunk runs again without it, as for any task that changed.  $2 started,
 * $3 the worker, $4 the run, $5 finished.
 */
static HxStmt done_chunk_tid = {
	"WITH m AS (DELETE FROM ONLY @extschema@.hx_task t WHERE t.ctid = ANY($1) "
	"AND t.status IN ('queued', 'failed') AND _hybridexec.hx_moving_has(t.id) "
	"RETURNING t.*, _hybridexec.hx_moving_result(t.id) AS new_result) "
	HX_MOVE_INSERT("attempts + 1", "$2", "$5", "$3", "$4", "NULL", "reported_cost")
	" RETURNING " HX_BOOK_RETURNING,
	5, {TIDARRAYOID, TIMESTAMPTZOID, INT4OID, INT8OID, TIMESTAMPTZOID}, true
};

/*
 * The two above, when the chunk's rows can be written into
 * hx_task_history directly (history.c: no trigger there, no row
 * security): the DELETE's rows go to hx_history_writer, which makes them
 * done (attempt counted, started, finished, run by whom in which run, the
 * moving set's result) as HX_MOVE_INSERT's SELECT does.  $1 the ctids, or
 * the ids and $2 the statuses they may have.
 */
static HxStmt delete_chunk_tid = {
	"DELETE FROM ONLY @extschema@.hx_task t WHERE t.ctid = ANY($1) "
	"AND t.status IN ('queued', 'failed') AND _hybridexec.hx_moving_has(t.id) RETURNING t.*",
	1, {TIDARRAYOID}, true
};
static HxStmt delete_chunk = {
	"DELETE FROM ONLY @extschema@.hx_task t WHERE t.ctid = ANY (ARRAY("
	"SELECT x.ctid FROM ONLY @extschema@.hx_task x WHERE x.id = ANY ($1))) AND t.status = ANY ($2) "
	"AND _hybridexec.hx_moving_has(t.id) RETURNING t.*",
	2, {INT8ARRAYOID, TEXTARRAYOID}, true
};

/*
 * External executors' successes ($2 'running'): a task moves only with
 * its current, unexpired lease (the moving set's token) and a cost that
 * is not negative (the caller leaves the others out of the set).
 */
static HxStmt done_leased = {
	HX_MOVE_BY_ID("t.status = $2 AND t.lease_expires_at >= clock_timestamp() "
				  "AND t.lease_token = _hybridexec.hx_moving_token(t.id)",
				  "attempts", "started_at", "clock_timestamp()", "worker_pid", "run_id",
				  "lease_token", "new_cost"),
	2, {INT8ARRAYOID, TEXTOID}, true
};

/*
 * What the statements above take from the caller, by task id: set only
 * while one of them runs (hx_move_done).
 */
typedef struct HxMoving
{
	int64		id;				/* the key */
	Datum		result;			/* jsonb */
	bool		result_null;
	bool		has_token;
	pg_uuid_t	token;			/* done_leased: the lease it must still have */
	Datum		cost;			/* done_leased: what the executor reported */
	bool		cost_null;
	bool		moved;			/* filled in after the statement */
	Datum		run;			/* done_leased: its window run, if moved */
	bool		run_null;
} HxMoving;

static HTAB *moving = NULL;

/*
 * Every failed or lost attempt, whoever reports it: $1..$7 one element per
 * task (a NULL message = the attempt was lost with its worker, $11 names
 * the worker kind); $8 the worker the task must be running for (NULL =
 * any); $9 lost; $10 retry allowed; $12 when to retry (the executor said
 * so: not counted against max_attempts, "throttled").  The retry policy is
 * hx_next_try, with the type's backoff.
 * The moment of the failure (f.at) is the hx_error row's and the one the
 * retry's backoff counts from.  $13 'running'.
 *
 * As for the moves (HX_MOVE_BY_ID), the plan must not depend on the
 * statistics: each element finds its task's ctid by primary key (a
 * lateral subquery that OFFSET 0 keeps from being flattened into a join),
 * and the task is updated where that is (a TID scan per element), with no
 * join on id and no status literal (see HX_MOVE_BY_ID); the hx_error rows
 * take the failure's columns from the update's own RETURNING, not from a
 * join of the two CTEs.
 */
static HxStmt fail_set = {
	"WITH f AS (SELECT u.*, clock_timestamp() AS at, k.tid FROM unnest($1::bigint[], $2::text[], "
	"$3::text[], $4::text[], $5::text[], $6::text[], $7::numeric[]) "
	"AS u (id, sqlstate, message, detail, hint, context, cost) "
	"CROSS JOIN LATERAL (SELECT x.ctid AS tid FROM ONLY @extschema@.hx_task x WHERE x.id = u.id "
	"OFFSET 0) k), "
	"upd AS (UPDATE ONLY @extschema@.hx_task t "
	"SET (status, run_after, finished_at, throttled) = (SELECT n.status, "
	"f.at + n.delay_ms * interval '1 millisecond', "
	"CASE WHEN n.status = 'dead' THEN f.at END, "
	"t.throttled + CASE WHEN $12::interval IS NOT NULL AND n.status <> 'dead' THEN 1 ELSE 0 END "
	"FROM _hybridexec.hx_next_try(t.attempts - t.throttled, y.max_attempts, t.route = 'batch', $9, $10, "
	"$12, y.retry_backoff, y.max_backoff) n), "
	"last_error = coalesce(f.message, format('%s %s stopped while running attempt %s (crash or shutdown)', "
	"$11::text, t.worker_pid, t.attempts)), "
	"lease_expires_at = NULL, reported_cost = f.cost, isolated = $9 "
	"FROM f, @extschema@.hx_type y "
	"WHERE t.ctid = f.tid AND y.task_type = t.task_type AND t.status = $13 "
	"AND ($8::integer IS NULL OR t.worker_pid = $8) "
	"RETURNING t.id, t.task_type, t.attempts, t.status, t.last_error, t.run_after, "
	"CASE WHEN t.route = 'batch' THEN t.run_id END AS run, "
	"f.at, f.sqlstate, f.detail, f.hint, f.context), "
	"err AS (INSERT INTO @extschema@.hx_error (task_id, task_type, attempt, at, sqlstate, "
	"message, detail, hint, context) "
	"SELECT upd.id, upd.task_type, upd.attempts, upd.at, coalesce(upd.sqlstate, 'XX000'), "
	"upd.last_error, upd.detail, coalesce(upd.hint, CASE WHEN $9 THEN 'The attempt was rolled "
	"back with its worker; its effects did not happen.' END), upd.context FROM upd) "
	"SELECT upd.id, upd.task_type, upd.attempts, upd.status, upd.last_error, upd.run_after, upd.run FROM upd",
	13, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, NUMERICARRAYOID, INT4OID, BOOLOID, BOOLOID, TEXTOID, INTERVALOID, TEXTOID}, true
};

/*
 * External executors' outcomes of a window run's tasks count in the run
 * (its own batch workers count their chunks in hx_batch_chunk_done): $1
 * one run id per outcome, $2 whether it was done (else a failed attempt).
 * The runs are locked in id order first, so that executors completing
 * tasks of several runs at once never deadlock.
 */
static HxStmt lock_runs = {
	"SELECT r.id FROM @extschema@.hx_window_run r WHERE r.id = ANY ($1) ORDER BY r.id FOR UPDATE",
	1, {INT8ARRAYOID}, true
};

static HxStmt count_runs = {
	"UPDATE @extschema@.hx_window_run r "
	"SET processed = r.processed + k.done, failed = r.failed + k.failed "
	"FROM (SELECT u.run, count(*) FILTER (WHERE u.done) AS done, "
	"count(*) FILTER (WHERE NOT u.done) AS failed "
	"FROM unnest($1::bigint[], $2::boolean[]) AS u (run, done) GROUP BY u.run) k "
	"WHERE r.id = k.run",
	2, {INT8ARRAYOID, BOOLARRAYOID}, true
};

/* run with triggers off (session_replication_role = replica): no booking */
static HxStmt quarantine = {
	"WITH upd AS (UPDATE ONLY @extschema@.hx_task t SET status = 'dead', "
	"finished_at = clock_timestamp(), last_error = $2, lease_expires_at = NULL, isolated = false "
	"WHERE t.id = $1 AND t.status IN ('queued', 'running', 'failed') "
	"RETURNING t.id, t.task_type, t.attempts), "
	"err AS (INSERT INTO @extschema@.hx_error (task_id, task_type, attempt, sqlstate, message, hint) "
	"SELECT upd.id, upd.task_type, upd.attempts, $3, $2, "
	"'The outcome of this attempt could not be booked, so the task was set aside as dead without a booking in hx_cost; fix the cause the message names, then submit it again.' "
	"FROM upd) "
	"SELECT upd.task_type, upd.attempts FROM upd",
	3, {INT8OID, TEXTOID, TEXTOID}, true
};

/*
 * Running stream tasks of in-database handlers whose worker is gone: not
 * this worker ($1, just started: a task of its pid is a former process's),
 * nor one alive while the scan runs (hx_stream_worker_alive reads shared
 * memory after the snapshot, so a worker that started and claimed just
 * before it counts as alive).
 */
static HxStmt lost_stream = {
	"SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}') FROM (SELECT t.id FROM ONLY @extschema@.hx_task t "
	"WHERE t.status = 'running' AND t.route = 'stream' "
	"AND (t.worker_pid IS NULL OR t.worker_pid = $1 "
	"OR NOT _hybridexec.hx_stream_worker_alive(t.worker_pid)) "
	"AND EXISTS (SELECT 1 FROM @extschema@.hx_type y WHERE y.task_type = t.task_type "
	"AND (y.handler IS NOT NULL OR y.batch_handler IS NOT NULL)) "
	"FOR UPDATE OF t SKIP LOCKED) l",
	1, {INT4OID}, true
};

/*
 * Leases that expired, found through hx_task_lease_idx.  No ORDER BY in
 * the scan: with sorts off (index_order) an order by id was planned as a
 * walk of the whole primary key, every scheduler tick.  Expired as of the
 * tick's transaction (now(), stable, so an index condition: with
 * clock_timestamp() every tick read the whole index, every lease held).
 */
static HxStmt expired_leases = {
	"SELECT coalesce(array_agg(l.id ORDER BY l.id), '{}') FROM (SELECT t.id FROM ONLY @extschema@.hx_task t "
	"WHERE t.status = 'running' AND t.lease_expires_at < now() "
	"FOR UPDATE SKIP LOCKED) l",
	0, {0}, true
};

static HxStmt lock_task = {
	"SELECT t.status, t.submitted_by, t.department, t.task_type FROM @extschema@.hx_task t "
	"WHERE t.id = $1 FOR UPDATE",
	1, {INT8OID}, true
};

static HxStmt cancel_task = {
	"UPDATE ONLY @extschema@.hx_task t SET status = 'cancelled', finished_at = now() "
	"WHERE t.id = $1 AND t.status IN ('queued', 'failed')",
	1, {INT8OID}, true
};

/*
 * Dead tasks the caller may see ($2 for the ids in $1, $3 for a type's
 * since $2) go back to the queue as new: attempts from zero, none of their
 * last attempt's traces but last_error; their hx_error rows stay.  One
 * whose dedupe key an unfinished task has taken meanwhile stays dead.
 */
#define HX_RETRY(which, caller) \
	"WITH r AS (UPDATE ONLY @extschema@.hx_task t SET status = 'queued', attempts = 0, " \
	"run_after = now(), started_at = NULL, finished_at = NULL, worker_pid = NULL, run_id = NULL, " \
	"executor = NULL, lease_token = NULL, lease_expires_at = NULL, reported_cost = NULL, " \
	"isolated = false, reason = coalesce(t.reason || '; ', '') || format('retried at %s', now()) " \
	"WHERE t.status = 'dead' AND " which \
	" AND _hybridexec.hx_visible_to(" caller ", t.submitted_by, t.department) " \
	"AND (t.dedupe_key IS NULL OR NOT EXISTS (SELECT 1 FROM ONLY @extschema@.hx_task u " \
	"WHERE u.task_type = t.task_type AND u.dedupe_key = t.dedupe_key " \
	"AND u.status IN ('queued', 'running', 'failed'))) RETURNING t.id) " \
	"SELECT count(*) FROM r"

static HxStmt retry_ids = {
	HX_RETRY("t.id = ANY ($1)", "$2"),
	2, {INT8ARRAYOID, OIDOID}, false
};

static HxStmt retry_type = {
	HX_RETRY("t.task_type = $1 AND t.finished_at >= $2", "$3"),
	3, {TEXTOID, TIMESTAMPTZOID, OIDOID}, false
};

/*
 * Claimed tasks ($1) beyond their type's limit go back as they were
 * before the claim (but for a failed task's status, which becomes queued:
 * a claim does not say it, and a batch task's run, which it leaves, so
 * that the run may still take it), due again after $2 ms; isolated ($3)
 * when they were claimed as such.  In the claim's transaction, so nothing
 * of the claim is ever seen; the ledger books nothing for it.
 */
static HxStmt unclaim = {
	"UPDATE ONLY @extschema@.hx_task t SET status = 'queued', attempts = t.attempts - 1, "
	"started_at = NULL, worker_pid = NULL, executor = NULL, lease_token = NULL, "
	"lease_expires_at = NULL, isolated = $3, "
	"run_id = CASE WHEN t.route = 'batch' THEN NULL ELSE t.run_id END, "
	"run_after = greatest(t.run_after, clock_timestamp() + $2 * interval '1 millisecond') "
	"WHERE t.id = ANY ($1) AND t.status = 'running'",
	3, {INT8ARRAYOID, FLOAT8OID, BOOLOID}, true
};

static HxStmt limit_take = {
	"SELECT allowed, wait_ms FROM _hybridexec.hx_limit_take($1, $2, $3, $4)",
	4, {TEXTOID, INT8ARRAYOID, INT8OID, INT4OID}, true
};

/*
 * A duplicate submission ($1: the unfinished task with its type and
 * dedupe key) that asks for more: the task, while it waits, takes the
 * stream route ($2: the new decision streams; $5 its reason), the higher
 * priority ($3) and the earlier deadline ($4), and reason says so.
 */
static HxStmt upgrade_duplicate = {
	"UPDATE ONLY @extschema@.hx_task t SET "
	"route = CASE WHEN $2 THEN 'stream' ELSE t.route END, "
	"window_name = CASE WHEN $2 THEN NULL ELSE t.window_name END, "
	"priority = greatest(t.priority, $3), deadline = least(t.deadline, $4), "
	"reason = coalesce(t.reason || '; ', '') || 'upgraded by a duplicate submission: ' "
	"|| concat_ws(', ', CASE WHEN $2 AND t.route = 'batch' THEN 'stream (' || $5 || ')' END, "
	"CASE WHEN $3 > t.priority THEN format('priority %s', $3) END, "
	"CASE WHEN $4 < coalesce(t.deadline, 'infinity') THEN format('deadline %s', $4) END) "
	"WHERE t.id = $1 AND t.status IN ('queued', 'failed') "
	"AND (($2 AND t.route = 'batch') OR $3 > t.priority OR $4 < coalesce(t.deadline, 'infinity'))",
	5, {INT8OID, BOOLOID, INT4OID, TIMESTAMPTZOID, TEXTOID}, false
};

/*
 * Batch tasks whose deadline (or SLA) comes before their window would
 * finish them (its expected finish, or next start without history) take
 * the cheapest path that is on time: the window that finishes first, of
 * those that would finish before the deadline, or else the stream path -
 * except those a budget_exhausted rule sent to batch on purpose.
 */
static HxStmt escalate = {
	"WITH plan AS (SELECT p.window_name, coalesce(p.expected_finish, p.next_start) AS done_by "
	"FROM @extschema@.hx_window_plan(now()) p), "
	"late AS (SELECT t.id, plan.done_by, plan.window_name, "
	"coalesce(t.deadline, t.submitted_at + t.sla) AS due, "
	"(SELECT q.window_name FROM plan q WHERE q.done_by <= coalesce(t.deadline, t.submitted_at + t.sla) "
	"ORDER BY q.done_by, q.window_name LIMIT 1) AS on_time "
	"FROM ONLY @extschema@.hx_task t JOIN plan ON plan.window_name = t.window_name "
	"WHERE t.route = 'batch' AND t.status IN ('queued', 'failed') "
	"AND (t.deadline IS NOT NULL OR t.sla IS NOT NULL) "
	"AND coalesce(t.deadline, t.submitted_at + t.sla) < plan.done_by "
	"AND NOT EXISTS (SELECT 1 FROM @extschema@.hx_rule r WHERE r.name = t.rule_name AND r.budget_exhausted) "
	"FOR UPDATE OF t SKIP LOCKED) "
	"UPDATE ONLY @extschema@.hx_task t SET route = CASE WHEN late.on_time IS NULL THEN 'stream' ELSE 'batch' END, "
	"window_name = late.on_time, status = 'queued', "
	"escalated_at = CASE WHEN late.on_time IS NULL THEN now() ELSE t.escalated_at END, "
	"run_after = greatest(t.run_after, now()), "
	"reason = coalesce(t.reason || '; ', '') || CASE WHEN late.on_time IS NULL "
	"THEN format('escalated to stream: window %s would finish at %s, after the deadline %s, and no window before it', "
	"late.window_name, late.done_by, late.due) "
	"ELSE format('moved to window %s: window %s would finish at %s, after the deadline %s', "
	"late.on_time, late.window_name, late.done_by, late.due) END "
	"FROM late WHERE t.id = late.id",
	0, {0}, false
};

static HxStmt move_window = {
	"UPDATE ONLY @extschema@.hx_task t SET window_name = $2 "
	"WHERE t.window_name = $1 AND t.status IN ('queued', 'running', 'failed')",
	2, {TEXTOID, TEXTOID}, false
};

/* tasks of a window run's lost chunk that still wait run alone next */
static HxStmt isolate = {
	"WITH u AS (UPDATE ONLY @extschema@.hx_task t SET isolated = true "
	"WHERE t.id = ANY ($1) AND t.status IN ('queued', 'failed') RETURNING t.id) "
	"SELECT coalesce(array_agg(u.id ORDER BY u.id), '{}') FROM u",
	1, {INT8ARRAYOID}, true
};

static HxStmt claim_check = {
	"SELECT @extschema@.hx_claim_check($1, $2)",
	2, {TEXTARRAYOID, TEXTOID}
};

/* what a booking of failures gives back, for the SQL functions */
typedef struct HxBooked
{
	int			n;
	int64	   *ids;
	char	  **statuses;
} HxBooked;

/* one failed or lost attempt to book */
typedef struct HxFailure
{
	int64		id;
	const char *sqlstate;		/* NULL = XX000 */
	const char *message;		/* NULL = lost with its worker */
	const char *detail;
	const char *hint;
	const char *context;
	Datum		cost;			/* numeric; (Datum) 0 = none */
} HxFailure;

/* what is common to the failures booked together */
typedef struct HxFailKind
{
	int			worker_pid;		/* the worker they run for; 0 = any */
	bool		lost;			/* lost with their worker: back to the queue */
	bool		retry;			/* false: dead at once */
	const char *what;			/* lost: which kind of worker */
	bool		external;		/* reported by (or reclaimed from) external
								 * executors: count in their window runs */
	Interval   *retry_after;	/* the executor said when to retry; NULL =
								 * the retry policy */
} HxFailKind;

PG_FUNCTION_INFO_V1(hx_next_try);
PG_FUNCTION_INFO_V1(hx_moving_has);
PG_FUNCTION_INFO_V1(hx_moving_result);
PG_FUNCTION_INFO_V1(hx_moving_token);
PG_FUNCTION_INFO_V1(hx_moving_cost);
PG_FUNCTION_INFO_V1(hx_put_back);
PG_FUNCTION_INFO_V1(hx_fail_leased);
PG_FUNCTION_INFO_V1(hx_complete_many);
PG_FUNCTION_INFO_V1(hx_claim);
PG_FUNCTION_INFO_V1(hx_cancel);
PG_FUNCTION_INFO_V1(hx_retry_ids);
PG_FUNCTION_INFO_V1(hx_retry_type);
PG_FUNCTION_INFO_V1(hx_reclaim_leases);
PG_FUNCTION_INFO_V1(hx_escalate);
PG_FUNCTION_INFO_V1(hx_move_window);
PG_FUNCTION_INFO_V1(hx_isolate);
PG_FUNCTION_INFO_V1(hx_stream_claim);
PG_FUNCTION_INFO_V1(hx_check_lease_sql);

static int	hx_tasks_decode(HxTask **tasks, MemoryContext cxt);
static int	hx_tasks_decode_claimed(HxTask **tasks, MemoryContext cxt);
static int	hx_claim_order_cmp(const void *a, const void *b);
static void hx_task_decode(HxTask *t, Datum *v, bool *isnull, int natts, MemoryContext cxt);
static int	hx_read_chunk(Datum *args, int64 run_id, HxTask **tasks, MemoryContext cxt);
static bool hx_pick_key(SPITupleTable *tuptable, Datum *key);
static int	hx_limit_claimed(HxTask *tasks, int n, bool isolated, double *wait_ms);
static int	hx_type_name_cmp(const void *a, const void *b);
static int	hx_move_done(HxStmt *stmt, Datum *values, HTAB *set, bool rows_to_caller,
						 int expected);
static int	hx_move_direct(HxStmt *stmt, Datum *values, HTAB *set, DestReceiver *writer);
static Datum hx_moving_result_of(int64 id, bool *isnull);
static int	hx_fail_exec(HxFailure *f, int n, const HxFailKind *kind,
						 TimestampTz *next_retry, HxBooked *booked);
static void hx_fail_robustly(HxFailure *f, int n, const HxFailKind *kind,
							 HxBooked *booked);
static void hx_booked_add(HxBooked *booked, int64 id, const char *status);
static void hx_booked_return(FunctionCallInfo fcinfo, HxBooked *booked);
static HxFailure *hx_failures(ArrayType *ids, const HxFailure *common, int *n);
static Datum hx_fail_sql(FunctionCallInfo fcinfo, ArrayType *ids,
						 const HxFailure *common, const HxFailKind *kind);
static ErrorData *hx_try_fail_exec(HxFailure *f, int n, const HxFailKind *kind,
								   HxBooked *booked);
static ErrorData *hx_in_subxact(void (*fn) (void *arg), void *arg);
static void hx_count_in_runs(Datum *runs, bool *done, int n);
static Oid	hx_enter(FunctionCallInfo fcinfo, HxUserSave *save);
static void hx_check_lease(Interval *lease);
static void hx_leave(HxUserSave *save);

/* ------------------------------------------------------------------------
 * The retry policy
 * ------------------------------------------------------------------------ */

/* an interval in milliseconds (a month as 30 days) */
static double
hx_interval_ms(const Interval *i)
{
	return ((double) i->time + (double) i->day * USECS_PER_DAY +
			(double) i->month * DAYS_PER_MONTH * USECS_PER_DAY) / 1000.0;
}

/*
 * hx_retry_policy
 *		What becomes of a task whose attempt number "attempts" (out of
 *		max_attempts; throttled attempts not counted) failed: dead when
 *		retry is false; failed, retried after retry_after_ms, when the
 *		executor said when (>= 0), however many attempts it made; dead when
 *		no attempt is left; back in the queue at once when the attempt was
 *		lost with its worker; else failed, retried after a backoff that
 *		doubles with each attempt (backoff_ms, or hybridexec.retry_backoff
 *		when < 0; at most max_backoff_ms, or a minute when < 0), or - a
 *		batch task - in the next run of its window.  Returns the status and
 *		sets *delay_ms.
 */
static const char *
hx_retry_policy(int attempts, int max_attempts, bool batch, bool lost,
				bool retry, double retry_after_ms, double backoff_ms,
				double max_backoff_ms, double *delay_ms)
{
	double		backoff = backoff_ms >= 0 ? backoff_ms : (double) hx_retry_backoff_ms;
	double		cap = max_backoff_ms >= 0 ? max_backoff_ms : 60000.0;
	int			i;

	*delay_ms = 0;
	if (!retry)
		return "dead";
	/* the executor said when: not counted against max_attempts */
	if (retry_after_ms >= 0)
	{
		*delay_ms = retry_after_ms;
		return "failed";
	}
	if (attempts >= max_attempts)
		return "dead";
	if (lost)
		return "queued";
	if (!batch)
	{
		for (i = 1; i < attempts && backoff < cap; i++)
			backoff *= 2;
		*delay_ms = Min(backoff, cap);
	}
	return "failed";
}

/*
 * hx_next_try
 *		SQL (_hybridexec.hx_next_try(attempts, max_attempts, batch, lost,
 *		retry, retry_after, backoff, max_backoff, OUT status, OUT
 *		delay_ms)): hx_retry_policy (intervals NULL = -1), for the failure
 *		booking statement.
 */
Datum
hx_next_try(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	double		delay_ms;
	double		ms[3];
	int			i;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "hx_next_try must return a record");
	for (i = 0; i < 5; i++)
		if (PG_ARGISNULL(i))
			elog(ERROR, "hx_next_try: argument %d must not be NULL", i + 1);
	for (i = 5; i < 8; i++)
		ms[i - 5] = PG_ARGISNULL(i) ? -1 : hx_interval_ms(PG_GETARG_INTERVAL_P(i));
	values[0] = CStringGetTextDatum(hx_retry_policy(PG_GETARG_INT32(0), PG_GETARG_INT32(1),
													PG_GETARG_BOOL(2), PG_GETARG_BOOL(3),
													PG_GETARG_BOOL(4), ms[0], ms[1], ms[2],
													&delay_ms));
	values[1] = Float8GetDatum(delay_ms);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}

/* ------------------------------------------------------------------------
 * Claims
 * ------------------------------------------------------------------------ */

/*
 * hx_tasks_decode
 *		Copies the HX_TASK_COLUMNS rows SPI_tuptable holds into an array
 *		allocated in cxt; returns how many.
 */
static int
hx_tasks_decode(HxTask **tasks, MemoryContext cxt)
{
	HxTask	   *out = MemoryContextAllocZero(cxt, sizeof(HxTask) * Max(SPI_processed, 1));
	TupleDesc	desc = SPI_tuptable->tupdesc;
	Datum	   *v = palloc(sizeof(Datum) * desc->natts);
	bool	   *isnull = palloc(sizeof(bool) * desc->natts);
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		/* one pass over the row: the columns after payload have no offsets cached */
		heap_deform_tuple(SPI_tuptable->vals[i], desc, v, isnull);
		hx_task_decode(&out[i], v, isnull, desc->natts, cxt);
	}
	*tasks = out;
	return (int) SPI_processed;
}

/*
 * hx_tasks_decode_claimed
 *		hx_tasks_decode for a claim from the claim index: the tasks in claim
 *		order, higher priority first, then the older.  An UPDATE returns its
 *		rows in the order it updates them, which is the order the rows are
 *		found in (by ctid, or by id from a sorted array), not the one its CTE
 *		chose them in; the order matters to executors that work through what
 *		hx_claim returns, to a worker's batch, and to the types' limits,
 *		which let the first ones go ahead.
 */
static int
hx_tasks_decode_claimed(HxTask **tasks, MemoryContext cxt)
{
	int			n = hx_tasks_decode(tasks, cxt);

	if (n > 1)
		qsort(*tasks, n, sizeof(HxTask), hx_claim_order_cmp);
	return n;
}

/* qsort order of claimed tasks: the claim index's, higher priority, then id */
static int
hx_claim_order_cmp(const void *a, const void *b)
{
	const HxTask *x = (const HxTask *) a;
	const HxTask *y = (const HxTask *) b;

	if (x->priority != y->priority)
		return (x->priority > y->priority) ? -1 : 1;
	if (x->id != y->id)
		return (x->id < y->id) ? -1 : 1;
	return 0;
}

/*
 * hx_task_decode
 *		Copies one HX_TASK_COLUMNS row (values, isnull, natts columns) into
 *		*t, what it points to allocated in cxt.
 */
static void
hx_task_decode(HxTask *t, Datum *v, bool *isnull, int natts, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);

	/* HX_TASK_COLUMNS, and a chunk's reads add the row's ctid */
	if (natts != HX_TASK_NCOLUMNS && natts != HX_TASK_NCOLUMNS + 1)
		elog(ERROR, "a task row has %d columns, not %d", natts, HX_TASK_NCOLUMNS);
	t->id = DatumGetInt64(v[0]);
	t->task_type = TextDatumGetCString(v[1]);
	t->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(v[2]));
	t->attempts = DatumGetInt32(v[3]);
	t->max_attempts = DatumGetInt32(v[4]);
	t->handler = isnull[5] ? InvalidOid : DatumGetObjectId(v[5]);
	t->batch_handler = isnull[6] ? InvalidOid : DatumGetObjectId(v[6]);
	t->run_as = DatumGetObjectId(v[7]);
	t->timeout_ms = DatumGetFloat8(v[8]);
	t->micro_batch_size = DatumGetInt32(v[9]);
	t->batch = DatumGetBool(v[10]);
	t->run_id = isnull[11] ? 0 : DatumGetInt64(v[11]);
	t->has_lease = !isnull[12];
	if (!isnull[12])
		memcpy(&t->lease_token, DatumGetUUIDP(v[12]), sizeof(pg_uuid_t));
	t->lease_expires_at = isnull[13] ? 0 : DatumGetTimestampTz(v[13]);
	t->window_name = isnull[14] ? NULL : TextDatumGetCString(v[14]);
	t->priority = DatumGetInt32(v[15]);
	t->has_deadline = !isnull[16];
	t->deadline = isnull[16] ? 0 : DatumGetTimestampTz(v[16]);
	t->submitted_at = DatumGetTimestampTz(v[17]);
	t->has_tid = natts > HX_TASK_NCOLUMNS && !isnull[HX_TASK_NCOLUMNS];
	if (t->has_tid)
		ItemPointerCopy((ItemPointer) DatumGetPointer(v[HX_TASK_NCOLUMNS]), &t->tid);
	MemoryContextSwitchTo(old);
}

/*
 * A DestReceiver that decodes a chunk read's rows straight from the
 * executor's slots (hx_read_chunk), instead of SPI copying each into its
 * tuple table first (perf: 5% of a batch worker in that copy).
 */
typedef struct HxTaskReceiver
{
	DestReceiver pub;
	MemoryContext cxt;
	HxTask	   *tasks;
	int			n;
	int			room;
} HxTaskReceiver;

/*
 * hx_task_receive
 *		The receiver's receiveSlot: decodes one row into the next HxTask,
 *		growing the array (zeroed) as needed.
 */
static bool
hx_task_receive(TupleTableSlot *slot, DestReceiver *self)
{
	HxTaskReceiver *r = (HxTaskReceiver *) self;

	if (r->n == r->room)
	{
		int			room = Max(r->room * 2, 64);

		if (r->tasks == NULL)
			r->tasks = MemoryContextAllocZero(r->cxt, sizeof(HxTask) * room);
		else
		{
			r->tasks = repalloc(r->tasks, sizeof(HxTask) * room);
			memset(&r->tasks[r->room], 0, sizeof(HxTask) * (room - r->room));
		}
		r->room = room;
	}
	slot_getallattrs(slot);
	hx_task_decode(&r->tasks[r->n++], slot->tts_values, slot->tts_isnull,
				   slot->tts_tupleDescriptor->natts, r->cxt);
	return true;
}

/* the receiver's rStartup, rShutdown and rDestroy: nothing to do */
static void
hx_task_receiver_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
hx_task_receiver_shutdown(DestReceiver *self)
{
}

static void
hx_task_receiver_destroy(DestReceiver *self)
{
}

/*
 * hx_read_chunk
 *		Runs read_chunk with args and decodes its rows into *tasks (in
 *		cxt); returns how many.  In a transaction, SPI connected.
 */
static int
hx_read_chunk(Datum *args, int64 run_id, HxTask **tasks, MemoryContext cxt)
{
	HxTaskReceiver r;
	int			rc;

	memset(&r, 0, sizeof(r));
	r.pub.receiveSlot = hx_task_receive;
	r.pub.rStartup = hx_task_receiver_startup;
	r.pub.rShutdown = hx_task_receiver_shutdown;
	r.pub.rDestroy = hx_task_receiver_destroy;
	r.pub.mydest = DestNone;
	r.cxt = cxt;
	rc = hx_stmt_exec_dest(&read_chunk, args, NULL, &r.pub);
	if (rc < 0)
		elog(ERROR, "reading a chunk of run %lld failed: %s", (long long) run_id,
			 SPI_result_code_string(rc));
	/* the array may have room for more: the caller sees n */
	*tasks = r.tasks != NULL ? r.tasks : MemoryContextAllocZero(cxt, sizeof(HxTask));
	return r.n;
}

/* orders task type names */
static int
hx_type_name_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/*
 * hx_limit_ask
 *		hx_limit_take for nids tasks (ids) of a limited type: how many may
 *		start, and in *wait_ms how long the others should wait.  run_id and
 *		part name the window run's part that picks them as its next chunk
 *		(0 and -1 for a claim).  Locks the type's bucket until the
 *		transaction ends.  In SPI, as the owner.
 */
static int
hx_limit_ask(const char *task_type, Datum *ids, int nids, int64 run_id, int part,
			 double *wait_ms)
{
	Datum		args[4];
	char		nulls[4] = {' ', ' ', part < 0 ? 'n' : ' ', part < 0 ? 'n' : ' '};
	bool		isnull;
	int			allowed;

	args[0] = CStringGetTextDatum(task_type);
	args[1] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = Int64GetDatum(run_id);
	args[3] = Int32GetDatum(part);
	if (hx_stmt_exec(&limit_take, args, nulls, false, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not apply the limits of task type \"%s\"", task_type);
	allowed = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	*wait_ms = DatumGetFloat8(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	return allowed;
}

/*
 * hx_limit_claimed
 *		A claim took tasks[0..n-1] (running, in claim order, not yet
 *		committed).  Per task type with a limit (max_running, rate_limit),
 *		keeps the first ones hx_limit_take allows - it locks the type's
 *		bucket until the claim commits, so that claims of the type count
 *		and take one after the other - and gives the others back
 *		(unclaim), due again when a retry could succeed; *wait_ms (when
 *		given) says how soon that is for the first of them, 0 when none was
 *		given back.  Returns how many are left, compacted in claim order.  A window run's chunks are
 *		limited when they are picked (hx_limit_chunk).  Costs nothing while
 *		no type has a limit.  In SPI, as the owner, in the claim's
 *		transaction, with the rule cache loaded.
 */
static int
hx_limit_claimed(HxTask *tasks, int n, bool isolated, double *wait_ms)
{
	const char **types;
	bool	   *keep;
	Datum	   *ids;
	int			ntypes = 0;
	int			kept = 0;
	int			i;
	int			k;

	if (wait_ms != NULL)
		*wait_ms = 0;
	if (n == 0 || !hx_types_limited())
		return n;

	/* the limited types among them, in name order: buckets are locked in it */
	types = palloc(sizeof(char *) * n);
	for (i = 0; i < n; i++)
	{
		HxTypeInfo *info = hx_type_lookup(tasks[i].task_type);
		bool		seen = false;

		if (info == NULL || !info->limited)
			continue;
		for (k = 0; k < ntypes && !seen; k++)
			seen = strcmp(types[k], tasks[i].task_type) == 0;
		if (!seen)
			types[ntypes++] = tasks[i].task_type;
	}
	if (ntypes == 0)
		return n;
	qsort(types, ntypes, sizeof(char *), hx_type_name_cmp);

	keep = palloc(sizeof(bool) * n);
	ids = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		keep[i] = true;
	for (k = 0; k < ntypes; k++)
	{
		char		back_nulls[3] = {' ', ' ', ' '};
		Datum		back[3];
		int			nids = 0;
		int			allowed;
		double		type_wait_ms;

		for (i = 0; i < n; i++)
			if (strcmp(tasks[i].task_type, types[k]) == 0)
				ids[nids++] = Int64GetDatum(tasks[i].id);
		allowed = hx_limit_ask(types[k], ids, nids, 0, -1, &type_wait_ms);
		if (allowed >= nids)
			continue;
		if (wait_ms != NULL && (*wait_ms == 0 || type_wait_ms < *wait_ms))
			*wait_ms = type_wait_ms;

		/* the first "allowed" of the type go ahead, in claim order */
		nids = 0;
		for (i = 0; i < n; i++)
		{
			if (strcmp(tasks[i].task_type, types[k]) != 0)
				continue;
			if (allowed > 0)
				allowed--;
			else
			{
				keep[i] = false;
				ids[nids++] = Int64GetDatum(tasks[i].id);
			}
		}
		back[0] = PointerGetDatum(construct_array(ids, nids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		back[1] = Float8GetDatum(type_wait_ms);
		back[2] = BoolGetDatum(isolated);
		if (hx_stmt_exec(&unclaim, back, back_nulls, false, 0) != SPI_OK_UPDATE ||
			SPI_processed != (uint64) nids)
			elog(ERROR, "could not give back %d claimed tasks of type \"%s\"", nids, types[k]);
	}
	for (i = 0; i < n; i++)
		if (keep[i])
			tasks[kept++] = tasks[i];
	return kept;
}

/*
 * hx_limit_chunk
 *		A window run's part (run_id, part) picked tasks[0..n-1], all of one
 *		type, as its next chunk (still waiting, not yet recorded as its
 *		started checkpoint).  Returns how many of them, in run order, may
 *		run as the chunk within the type's limits, and when that is none,
 *		in *wait_ms how long until some may.  A chunk that may run takes
 *		its tokens and keeps the type's bucket locked until its checkpoint
 *		commits; a type at its limit is asked in a subtransaction that is
 *		rolled back, so a pick holds at most one bucket (the one of the
 *		type it takes) and never waits for a second while holding it.  In
 *		SPI, as the owner, in the picking transaction, with the rule cache
 *		loaded.
 */
int
hx_limit_chunk(HxTask *tasks, int n, int64 run_id, int part, double *wait_ms)
{
	HxTypeInfo *info;
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Datum	   *ids;
	int			allowed;
	int			i;

	*wait_ms = 0;
	if (n == 0 || !hx_types_limited())
		return n;
	info = hx_type_lookup(tasks[0].task_type);
	if (info == NULL || !info->limited)
		return n;

	ids = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
		ids[i] = Int64GetDatum(tasks[i].id);
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	allowed = hx_limit_ask(tasks[0].task_type, ids, n, run_id, part, wait_ms);
	if (allowed > 0)
		ReleaseCurrentSubTransaction();
	else
		RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcontext);
	CurrentResourceOwner = oldowner;
	return Min(allowed, n);
}

/*
 * hx_claim_stream
 *		Claims up to max due stream tasks of in-database types for
 *		worker_pid (micro-batched types only once their batch is ready;
 *		never isolated tasks) in claim order, counting their attempt.
 *		Looks at the whole queue; the workers claim with
 *		hx_claim_stream_next.
 */
int
hx_claim_stream(int worker_pid, int max, HxTask **tasks, MemoryContext cxt)
{
	Datum		args[2] = {Int32GetDatum(worker_pid), Int32GetDatum(max)};

	if (hx_stmt_exec(&claim_stream, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "stream claim failed");
	return hx_limit_claimed(*tasks, hx_tasks_decode_claimed(tasks, cxt), false, NULL);
}

/*
 * hx_claim_stream_next
 *		A stream worker's claim: hx_claim_stream, but it starts after the
 *		claim floor (shmem.c) rather than at the head of the claim index
 *		while there is one.  Every task a worker claims leaves a dead entry
 *		at the head of that index until the next vacuum, and claims that
 *		start at the head step over all of them: on a backlog of a million
 *		tasks, claims slowed down as it drained.
 *
 *		Claims between rescans may miss a task below the floor that became
 *		due without being queued anew (a retry after its backoff); the
 *		rescan finds it (HX_CLAIM_RESCAN_MS), and so does the next claim
 *		that finds nothing after the floor.  A claim that takes fewer tasks
 *		than it asked for leaves the floor at the end of the index.  Queued
 *		tasks lower the floor themselves (wakeup.c), so priorities keep
 *		their order.  In the claim transaction; the floor moves before it
 *		commits.
 */
int
hx_claim_stream_next(int worker_pid, int max, HxTask **tasks, MemoryContext cxt)
{
	int32		negprio;
	int64		id;
	uint64		gen;
	bool		after = hx_claim_floor_get(&negprio, &id, &gen);
	int			n = 0;

	if (after)
	{
		Datum		args[4] = {Int32GetDatum(worker_pid), Int32GetDatum(max),
		Int32GetDatum(negprio), Int64GetDatum(id)};

		if (hx_stmt_exec(&claim_stream_after, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
			elog(ERROR, "stream claim failed");
		n = hx_limit_claimed(*tasks, hx_tasks_decode_claimed(tasks, cxt), false, NULL);
		if (n == 0)
		{
			/*
			 * nothing after the floor: look at the whole queue (even if
			 * another worker has just set a floor again)
			 */
			hx_claim_floor_clear();
			(void) hx_claim_floor_get(&negprio, &id, &gen);
			after = false;
		}
	}
	if (!after)
		n = hx_claim_stream(worker_pid, max, tasks, cxt);

	if (n < max)
	{
		/*
		 * The claim read to the end of the claim index: nothing it could
		 * see is left there to claim.  The next claims start at the end,
		 * where new tasks are queued (one queued below it lowers the floor
		 * itself), so that a worker woken for a single task does not step
		 * over the dead entries of every task claimed since the last
		 * vacuum first: that walk was on the path of every wake-up after
		 * a burst.  A claim after the floor that finds nothing still looks
		 * at the whole queue (above), for retries that became due.
		 */
		hx_claim_floor_advance(gen, !after, PG_INT32_MAX, PG_INT64_MAX);
		return n;
	}
	/* a full claim: the next one may start after its last task (claim order) */
	hx_claim_floor_advance(gen, !after, -(*tasks)[n - 1].priority, (*tasks)[n - 1].id);
	return n;
}

/*
 * hx_claim_isolated
 *		Claims one stream task that must run alone (its last attempt was
 *		lost with its worker), if one is due.
 */
int
hx_claim_isolated(int worker_pid, HxTask **tasks, MemoryContext cxt)
{
	Datum		arg = Int32GetDatum(worker_pid);

	if (hx_stmt_exec(&claim_isolated, &arg, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claim of an isolated task failed");
	return hx_limit_claimed(*tasks, hx_tasks_decode(tasks, cxt), true, NULL);
}

/*
 * hx_claim_ids
 *		Claims the given tasks that still wait, for a worker of a window run.
 */
int
hx_claim_ids(ArrayType *ids, int worker_pid, int64 run_id, HxTask **tasks,
			 MemoryContext cxt)
{
	Datum		args[3] = {PointerGetDatum(ids), Int32GetDatum(worker_pid),
	Int64GetDatum(run_id)};

	if (hx_stmt_exec(&claim_ids, args, NULL, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claim by id failed");
	return hx_tasks_decode(tasks, cxt);
}

/*
 * hx_claim_isolated_ids
 *		hx_claim_ids for the tasks of an interrupted chunk that a window
 *		run retries one by one, within their types' limits like any claim
 *		(hx_limit_claimed: their chunk's tokens went with the chunk): those
 *		beyond them are given back, still isolated, with *wait_ms saying
 *		when to try again (0 when none was given back).  Returns how many
 *		were kept.  In SPI, as the owner, the rule cache loaded.
 */
int
hx_claim_isolated_ids(ArrayType *ids, int worker_pid, int64 run_id,
					  HxTask **tasks, MemoryContext cxt, double *wait_ms)
{
	return hx_limit_claimed(*tasks, hx_claim_ids(ids, worker_pid, run_id, tasks, cxt),
							true, wait_ms);
}

/*
 * hx_read_waiting
 *		Reads the tasks among ids that still wait, in run order, with the
 *		attempt they are about to make (a chunk books them in one go).
 */
int
hx_read_waiting(ArrayType *ids, HxTask **tasks, MemoryContext cxt)
{
	Datum		arg = PointerGetDatum(ids);

	if (hx_stmt_exec(&read_waiting, &arg, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "chunk read failed");
	return hx_tasks_decode(tasks, cxt);
}

/*
 * hx_pick_chunk
 *		The next chunk of a window run's part, at most chunk_size tasks of
 *		one type, passing over the types in skip (text[]): its waiting
 *		tasks in run order, read without locks, with the attempt they are
 *		about to make, decoded into cxt; returns how many (0: nothing is
 *		left for this part).  Leaves the run row locked (the worker then
 *		moves the run's cursor).  In a transaction, SPI connected.
 */
int
hx_pick_chunk(int64 run_id, const char *window_name, int chunk_size, int part,
			  ArrayType *skip, HxTask **tasks, MemoryContext cxt)
{
	Datum		key_args[4];
	Datum		args[7];
	Datum		arg = Int64GetDatum(run_id);
	bool		skipped = false;
	int			rc;

	args[0] = CStringGetTextDatum(window_name);
	args[5] = Int64GetDatum(run_id);
	args[6] = Int32GetDatum(chunk_size);

	/*
	 * Most picks go on with the type of the run's cursor, right after it:
	 * the run row locked, that read alone.  Only when it finds nothing
	 * (or the type is passed over) does hx_batch_next_key look further.
	 */
	rc = hx_stmt_exec(&lock_cursor, &arg, NULL, false, 0);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not lock window run %lld", (long long) run_id);
	if (hx_pick_key(SPI_tuptable, &args[1]))
	{
		char	   *type = TextDatumGetCString(args[1]);
		Datum	   *types;
		int			ntypes;
		int			i;

		deconstruct_array(skip, TEXTOID, -1, false, TYPALIGN_INT, &types, NULL, &ntypes);
		for (i = 0; i < ntypes && !skipped; i++)
			skipped = strcmp(TextDatumGetCString(types[i]), type) == 0;
		if (!skipped)
		{
			int			n = hx_read_chunk(args, run_id, tasks, cxt);

			if (n > 0)
				return n;
		}
	}

	key_args[0] = arg;
	key_args[1] = args[0];
	key_args[2] = Int32GetDatum(part);
	key_args[3] = PointerGetDatum(skip);
	rc = hx_stmt_exec(&pick_key, key_args, NULL, false, 0);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hx_batch_next_key failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		return 0;
	if (!hx_pick_key(SPI_tuptable, &args[1]))
		elog(ERROR, "hx_batch_next_key returned a NULL key");
	return hx_read_chunk(args, run_id, tasks, cxt);
}

/*
 * hx_pick_key
 *		Copies the key (type, -priority, deadline, id) in the first row of
 *		tuptable into key[0..3]; false when it is NULL (a run without a
 *		cursor yet).
 */
static bool
hx_pick_key(SPITupleTable *tuptable, Datum *key)
{
	HeapTuple	tup = tuptable->vals[0];
	TupleDesc	desc = tuptable->tupdesc;
	int			i;

	for (i = 0; i < 4; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		bool		isnull;
		Datum		d = SPI_getbinval(tup, desc, i + 1, &isnull);

		if (isnull)
			return false;
		key[i] = datumCopy(d, att->attbyval, att->attlen);
	}
	return true;
}

/* ------------------------------------------------------------------------
 * Bookings of in-database attempts
 * ------------------------------------------------------------------------ */

/*
 * hx_moving_create
 *		An empty moving set (HxMoving by task id) for about n tasks, in the
 *		current memory context.
 */
static HTAB *
hx_moving_create(int n)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(HxMoving);
	ctl.hcxt = CurrentMemoryContext;
	return hash_create("hybridexec moving tasks", Max(n, 1), &ctl,
					   HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * hx_moving_add
 *		Adds a task to a moving set (the last entry wins for an id given
 *		twice); returns its entry, result, token and cost NULL.
 */
static HxMoving *
hx_moving_add(HTAB *set, int64 id)
{
	HxMoving   *m = hash_search(set, &id, HASH_ENTER, NULL);

	m->result = (Datum) 0;
	m->result_null = true;
	m->has_token = false;
	m->cost = (Datum) 0;
	m->cost_null = true;
	m->moved = false;
	m->run = (Datum) 0;
	m->run_null = true;
	return m;
}

/*
 * hx_done_set
 *		The successful outcomes among n as a moving set with their results,
 *		and their ids as an array (*ids_arr); returns how many.
 */
static int
hx_done_set(HxTask *tasks, HxOutcome *outs, int n, Datum *ids_arr, HTAB **set)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			nd = 0;
	int			i;

	*set = hx_moving_create(n);
	for (i = 0; i < n; i++)
	{
		HxMoving   *m;

		if (!outs[i].ok)
			continue;
		ids[nd++] = Int64GetDatum(tasks[i].id);
		m = hx_moving_add(*set, tasks[i].id);
		m->result = outs[i].result;
		m->result_null = outs[i].result_null;
	}
	*ids_arr = PointerGetDatum(construct_array(ids, nd, INT8OID, 8, FLOAT8PASSBYVAL,
											   TYPALIGN_DOUBLE));
	return nd;
}

/*
 * hx_book_done
 *		Marks the successful tasks among tasks[0..n-1], running for this
 *		worker, done with their results, in one statement that moves them
 *		into hx_task_history.  Every one must still be running for us;
 *		anything else aborts the transaction, handlers' effects included.
 *		Returns how many.
 */
int
hx_book_done(HxTask *tasks, HxOutcome *outs, int n)
{
	Datum		values[3];
	HTAB	   *set;
	int			nd = hx_done_set(tasks, outs, n, &values[0], &set);

	if (nd == 0)
		return 0;
	values[1] = CStringGetTextDatum("running");
	values[2] = Int32GetDatum(MyProcPid);
	if (hx_move_done(&done_running, values, set, false, nd) != nd)
		elog(ERROR, "could not mark %d tasks done (%llu moved): they are no longer claimed by this worker",
			 nd, (unsigned long long) SPI_processed);
	hash_destroy(set);
	return nd;
}

/*
 * hx_book_chunk_done
 *		A window run's chunk: moves its successful tasks, read while they
 *		waited, into hx_task_history done - attempt counted, started when
 *		the chunk's transaction did - in one statement.  Returns how many
 *		were still waiting (the others changed meanwhile).
 */
int
hx_book_chunk_done(HxTask *tasks, HxOutcome *outs, int n, int64 run_id)
{
	Datum		started = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	Datum		finished = TimestampTzGetDatum(GetCurrentTimestamp());
	Datum		values[6];
	Datum	   *tids;
	HTAB	   *set;
	int			nd = hx_done_set(tasks, outs, n, &values[0], &set);
	HxHistoryDone done;
	DestReceiver *writer;
	bool		by_tid;
	int			nt = 0;
	int			moved;
	int			i;

	if (nd == 0)
		return 0;
	tids = palloc(sizeof(Datum) * nd);
	for (i = 0; i < n; i++)
		if (outs[i].ok && tasks[i].has_tid)
			tids[nt++] = PointerGetDatum(&tasks[i].tid);

	/* $1 the ctids (every task had one), or the ids and $2 what they may be */
	by_tid = nt == nd;
	if (by_tid)
		values[0] = PointerGetDatum(construct_array(tids, nt, TIDOID, sizeof(ItemPointerData),
													false, TYPALIGN_SHORT));
	else
	{
		Datum		waiting[2] = {CStringGetTextDatum("queued"), CStringGetTextDatum("failed")};

		values[1] = PointerGetDatum(construct_array(waiting, 2, TEXTOID, -1, false,
													TYPALIGN_INT));
	}

	done.attempts_add = 1;
	done.result_of = hx_moving_result_of;
	done.started = started;
	done.finished = finished;
	done.pid = Int32GetDatum(MyProcPid);
	done.run = Int64GetDatum(run_id);
	writer = hx_history_writer(&done, nd);
	if (writer != NULL)
		moved = hx_move_direct(by_tid ? &delete_chunk_tid : &delete_chunk, values, set, writer);
	else
	{
		/* the INSERT statements take the rest after the key */
		Datum	   *rest = &values[by_tid ? 1 : 2];

		rest[0] = started;
		rest[1] = done.pid;
		rest[2] = done.run;
		rest[3] = finished;
		moved = hx_move_done(by_tid ? &done_chunk_tid : &done_chunk, values, set, false, nd);
	}
	hash_destroy(set);
	return moved;
}

/*
 * hx_moving_find
 *		The entry of a task in the moving set of the statement running, if
 *		there is one.
 */
static HxMoving *
hx_moving_find(int64 id)
{
	return moving != NULL ? hash_search(moving, &id, HASH_FIND, NULL) : NULL;
}

/*
 * hx_moving_has
 *		SQL: whether a task is in the moving set of the statement this
 *		backend is running (HX_MOVE_BY_ID); false outside of one.
 */
Datum
hx_moving_has(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(hx_moving_find(PG_GETARG_INT64(0)) != NULL);
}

/*
 * hx_moving_result
 *		SQL: the result of a task in the moving set; NULL for any other
 *		task, and outside of a move.
 */
Datum
hx_moving_result(PG_FUNCTION_ARGS)
{
	HxMoving   *m = hx_moving_find(PG_GETARG_INT64(0));

	if (m == NULL || m->result_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(m->result);
}

/*
 * hx_moving_token
 *		SQL: the lease token a task in the moving set must still have (an
 *		external executor's completion); NULL otherwise.
 */
Datum
hx_moving_token(PG_FUNCTION_ARGS)
{
	HxMoving   *m = hx_moving_find(PG_GETARG_INT64(0));

	if (m == NULL || !m->has_token)
		PG_RETURN_NULL();
	PG_RETURN_UUID_P(&m->token);
}

/*
 * hx_moving_cost
 *		SQL: the cost an external executor reported for a task in the
 *		moving set; NULL otherwise.
 */
Datum
hx_moving_cost(PG_FUNCTION_ARGS)
{
	HxMoving   *m = hx_moving_find(PG_GETARG_INT64(0));

	if (m == NULL || m->cost_null)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(m->cost);
}

/*
 * hx_move_done
 *		Runs a statement that moves done tasks (HX_MOVE_INSERT) of a moving
 *		set and books them (hx_book_moved).  Its rows are HX_BOOK_RETURNING:
 *		they go straight to the ledger ("expected" of them, about), or, for
 *		a caller that reads them too, stay in SPI_tuptable.  Returns how many
 *		moved.  In a transaction, SPI connected.
 */
static int
hx_move_done(HxStmt *stmt, Datum *values, HTAB *set, bool rows_to_caller, int expected)
{
	DestReceiver *book = hx_book_receiver(0, expected);
	MemoryContext caller = CurrentMemoryContext;
	uint64		processed;
	int			rc;

	hx_book_moves = true;
	moving = set;
	PG_TRY();
	{
		rc = rows_to_caller ? hx_stmt_exec(stmt, values, NULL, false, 0) :
			hx_stmt_exec_dest(stmt, values, NULL, book);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		hx_book_moves = false;
		moving = NULL;
		hx_book_forget(book);
		PG_RE_THROW();
	}
	PG_END_TRY();
	hx_book_moves = false;
	moving = NULL;
	if (rc != SPI_OK_INSERT_RETURNING)
	{
		hx_book_forget(book);
		elog(ERROR, "moving done tasks to hx_task_history failed: %s", SPI_result_code_string(rc));
	}
	processed = SPI_processed;
	if (rows_to_caller)
		hx_book_tuples(book, SPI_tuptable, processed);
	(void) hx_book_moved(book);
	/* the caller's rows, if any, are still SPI_tuptable's */
	SPI_processed = processed;
	return (int) processed;
}

/*
 * hx_moving_result_of
 *		The result of a task in the moving set (history.c's result_of).
 */
static Datum
hx_moving_result_of(int64 id, bool *isnull)
{
	HxMoving   *m = hx_moving_find(id);

	*isnull = m == NULL || m->result_null;
	return *isnull ? (Datum) 0 : m->result;
}

/*
 * hx_move_direct
 *		Runs a statement that deletes done tasks of a moving set from the
 *		queue (RETURNING t.*), their rows written into hx_task_history by
 *		writer (history.c), and books them.  Returns how many moved.  In a
 *		transaction, SPI connected.
 */
static int
hx_move_direct(HxStmt *stmt, Datum *values, HTAB *set, DestReceiver *writer)
{
	MemoryContext caller = CurrentMemoryContext;
	DestReceiver *book = hx_history_book(writer);
	int			moved = 0;
	int			rc;

	hx_book_moves = true;
	moving = set;
	PG_TRY();
	{
		rc = hx_stmt_exec_dest(stmt, values, NULL, writer);
		if (rc != SPI_OK_DELETE_RETURNING)
			elog(ERROR, "moving done tasks to hx_task_history failed: %s", SPI_result_code_string(rc));
		moved = hx_history_finish(writer);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		hx_book_moves = false;
		moving = NULL;
		hx_history_forget(writer);
		hx_book_forget(book);
		PG_RE_THROW();
	}
	PG_END_TRY();
	hx_book_moves = false;
	moving = NULL;
	(void) hx_book_moved(book);
	return moved;
}

/*
 * hx_book_failures
 *		Books the failed outcomes among tasks[0..n-1], running for this
 *		worker, in one statement: failed (retried after a backoff, or in
 *		the next window run), or dead with an alert.  *next_retry is
 *		lowered to the earliest retry.  Every one must still be running for
 *		us; anything else aborts the transaction.  Returns how many.
 */
int
hx_book_failures(HxTask *tasks, HxOutcome *outs, int n, TimestampTz *next_retry)
{
	HxFailure  *f = palloc0(sizeof(HxFailure) * Max(n, 1));
	HxFailKind	kind = {MyProcPid, false, true, NULL, false};
	int			nf = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (outs[i].ok)
			continue;
		f[nf].id = tasks[i].id;
		f[nf].sqlstate = unpack_sql_state(outs[i].sqlerrcode);
		f[nf].message = outs[i].message;
		f[nf].detail = outs[i].detail;
		f[nf].hint = outs[i].hint;
		f[nf].context = outs[i].context;
		nf++;
	}
	if (nf == 0)
		return 0;
	if (hx_fail_exec(f, nf, &kind, next_retry, NULL) != nf)
		elog(ERROR, "could not record the failure of %d task(s): they are no longer claimed by this worker",
			 nf);
	return nf;
}

/*
 * hx_book_quarantine
 *		Sets a task aside as dead because its outcome could not be booked
 *		(why says what failed), with ledger and write-back triggers off, so
 *		that nothing about the task itself can make this fail; an hx_error
 *		row and the dead alert say so.  The last resort of every path that
 *		books tasks: one task never stops a worker, a run or the scheduler.
 */
void
hx_book_quarantine(int64 id, const char *why, int sqlerrcode)
{
	Datum		values[3];
	int			nest = NewGUCNestLevel();
	int			rc;

	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(psprintf("the outcome could not be booked: %s", why));
	values[2] = CStringGetTextDatum(unpack_sql_state(sqlerrcode));
	(void) set_config_option("session_replication_role", "replica", PGC_SUSET,
							 PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	rc = hx_stmt_exec(&quarantine, values, NULL, false, 0);
	AtEOXact_GUC(true, nest);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not quarantine task %lld", (long long) id);
	if (SPI_processed == 1)
	{
		bool		isnull;

		/* the ledger trigger, which notes the others, was off */
		hx_finish_note(id, SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull),
					   "dead");
		ereport(WARNING,
				(errmsg("hybridexec: task %lld set aside as dead: its outcome could not be booked: %s",
						(long long) id, why)));
		hx_alert_dead(id,
					  TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 1, &isnull)),
					  DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
												  SPI_tuptable->tupdesc, 2, &isnull)),
					  TextDatumGetCString(values[1]));
	}
}

/*
 * hx_fail_exec
 *		Runs the failure statement for f[0..n-1]; sends the dead alerts;
 *		lowers *next_retry (when given) to the earliest retry and adds what
 *		became of each task to *booked (when given); failures of external
 *		executors (kind->external) count in the window runs of their batch
 *		tasks.  Returns how many tasks were booked (those not running, or
 *		not for kind->worker_pid, are left alone).
 */
static int
hx_fail_exec(HxFailure *f, int n, const HxFailKind *kind,
			 TimestampTz *next_retry, HxBooked *booked)
{
	Datum	   *cols[7];
	bool	   *colnulls[7];
	Datum		values[13];
	char		nulls[13];
	int			dims[1] = {n};
	int			lbs[1] = {1};
	Oid			elemtypes[7] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, NUMERICOID};
	uint64		nbooked;
	uint64		k;
	Datum	   *runs;
	bool	   *runs_done;
	int			nruns = 0;
	int			c;
	int			i;

	for (c = 0; c < 7; c++)
	{
		cols[c] = palloc(sizeof(Datum) * n);
		colnulls[c] = palloc0(sizeof(bool) * n);
	}
	for (i = 0; i < n; i++)
	{
		const char *texts[5] = {f[i].sqlstate, f[i].message, f[i].detail, f[i].hint, f[i].context};

		cols[0][i] = Int64GetDatum(f[i].id);
		for (c = 0; c < 5; c++)
		{
			colnulls[c + 1][i] = (texts[c] == NULL);
			cols[c + 1][i] = texts[c] ? CStringGetTextDatum(texts[c]) : (Datum) 0;
		}
		colnulls[6][i] = (f[i].cost == (Datum) 0);
		cols[6][i] = f[i].cost;
	}
	memset(nulls, ' ', sizeof(nulls));
	for (c = 0; c < 7; c++)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		get_typlenbyvalalign(elemtypes[c], &typlen, &typbyval, &typalign);
		values[c] = PointerGetDatum(construct_md_array(cols[c], colnulls[c], 1, dims, lbs,
													   elemtypes[c], typlen, typbyval, typalign));
	}
	values[7] = Int32GetDatum(kind->worker_pid);
	nulls[7] = kind->worker_pid == 0 ? 'n' : ' ';
	values[8] = BoolGetDatum(kind->lost);
	values[9] = BoolGetDatum(kind->retry);
	values[10] = CStringGetTextDatum(kind->what ? kind->what : "worker");
	values[11] = kind->retry_after ? IntervalPGetDatum(kind->retry_after) : (Datum) 0;
	nulls[11] = kind->retry_after ? ' ' : 'n';
	values[12] = CStringGetTextDatum("running");

	if (hx_stmt_exec(&fail_set, values, nulls, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not book failed attempts");
	nbooked = SPI_processed;
	/* only external executors' outcomes count in window runs */
	if (kind->external)
	{
		runs = palloc(sizeof(Datum) * Max(nbooked, 1));
		runs_done = palloc0(sizeof(bool) * Max(nbooked, 1));
	}
	else
	{
		runs = NULL;
		runs_done = NULL;
	}

	for (k = 0; k < nbooked; k++)
	{
		HeapTuple	tup = SPI_tuptable->vals[k];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		char	   *status = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));
		Datum		run = SPI_getbinval(tup, desc, 7, &isnull);

		if (kind->external && !isnull)
			runs[nruns++] = run;

		if (strcmp(status, "dead") == 0)
			hx_alert_dead(id, TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull)),
						  DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull)),
						  TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull)));
		else if (next_retry != NULL && strcmp(status, "failed") == 0)
		{
			TimestampTz at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 6, &isnull));

			if (*next_retry == 0 || at < *next_retry)
				*next_retry = at;
		}
		if (booked != NULL)
			hx_booked_add(booked, id, status);
	}
	/* after the loop: this runs a statement of its own */
	if (nruns > 0)
		hx_count_in_runs(runs, runs_done, nruns);
	return (int) nbooked;
}

/*
 * hx_fail_robustly
 *		Books a set of failures for SQL callers: all at once in a
 *		subtransaction; if that fails, one task at a time, and a task whose
 *		failure cannot be booked is quarantined.  An error escapes only when
 *		even the quarantine fails.
 */
static void
hx_fail_robustly(HxFailure *f, int n, const HxFailKind *kind, HxBooked *booked)
{
	int			from = booked->n;
	ErrorData  *edata;
	int			i;

	edata = hx_try_fail_exec(f, n, kind, booked);
	if (edata == NULL)
		return;					/* all booked together */

	/* drop what the failed set had noted; book one by one */
	booked->n = from;
	ereport(LOG,
			(errmsg("hybridexec: booking %d failed attempt(s) together failed (%s); booking them one by one",
					n, edata->message)));
	for (i = 0; i < n; i++)
	{
		edata = hx_try_fail_exec(&f[i], 1, kind, booked);
		if (edata == NULL)
			continue;
		hx_book_quarantine(f[i].id, edata->message, edata->sqlerrcode);
		hx_booked_add(booked, f[i].id, "dead");
	}
}

/* the arguments of hx_fail_exec, for hx_in_subxact */
typedef struct HxFailCall
{
	HxFailure  *f;
	int			n;
	const HxFailKind *kind;
	HxBooked   *booked;
} HxFailCall;

static void
hx_fail_call(void *arg)
{
	HxFailCall *c = (HxFailCall *) arg;

	(void) hx_fail_exec(c->f, c->n, c->kind, NULL, c->booked);
}

/*
 * hx_try_fail_exec
 *		hx_fail_exec in a subtransaction; returns the error (and has rolled
 *		the subtransaction back) if it failed, else NULL.
 */
static ErrorData *
hx_try_fail_exec(HxFailure *f, int n, const HxFailKind *kind, HxBooked *booked)
{
	HxFailCall	call = {f, n, kind, booked};

	return hx_in_subxact(hx_fail_call, &call);
}

/*
 * hx_in_subxact
 *		Runs fn(arg) in a subtransaction: returns NULL when it succeeded
 *		(the subtransaction released), or its error (copied into the
 *		caller's memory, the subtransaction rolled back).  How the set-based
 *		bookings fall back to one task at a time.
 */
static ErrorData *
hx_in_subxact(void (*fn) (void *arg), void *arg)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return edata;
}

/*
 * hx_count_in_runs
 *		Adds outcomes of external executors to the counters of the window
 *		runs their tasks were claimed in: runs[i] is the run of one outcome,
 *		done[i] whether it was done (else a failed attempt).  In the
 *		transaction (and subtransaction) that books the outcomes, so each
 *		counts exactly once; the runs are locked in id order first.
 */
static void
hx_count_in_runs(Datum *runs, bool *done, int n)
{
	Datum		values[2];
	Datum	   *flags = palloc(sizeof(Datum) * n);
	int			i;

	for (i = 0; i < n; i++)
		flags[i] = BoolGetDatum(done[i]);
	values[0] = PointerGetDatum(construct_array(runs, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(flags, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	if (hx_stmt_exec(&lock_runs, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock window runs");
	if (hx_stmt_exec(&count_runs, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not count outcomes in window runs");
}

/*
 * hx_sweep_stream
 *		Puts back the stream tasks left running by workers that are gone (a
 *		crash, a kill, a shutdown): queued and isolated, their attempt
 *		counted, or dead when it was the last.  Returns how many.
 */
int
hx_sweep_stream(void)
{
	HxFailKind	kind = {0, true, true, "worker", false};
	HxFailure	lost = {0};
	HxBooked	booked = {0};
	HxFailure  *f;
	bool		isnull;
	Datum		arg = Int32GetDatum(MyProcPid);
	int			n;

	f = hx_failures(DatumGetArrayTypePCopy(hx_stmt_value(&lost_stream, &arg, NULL, &isnull)),
					&lost, &n);
	if (n > 0)
		hx_fail_robustly(f, n, &kind, &booked);
	return booked.n;
}

/* ------------------------------------------------------------------------
 * SQL functions: the state changes other parts of the extension and the
 * external executors ask for
 * ------------------------------------------------------------------------ */

/*
 * hx_enter, hx_leave
 *		The bracket of a state SQL function: loads the rule cache, connects
 *		SPI and becomes the extension's owner; returns the caller.  What is
 *		allocated in between lives in SPI's memory, gone at hx_leave.
 */
static Oid
hx_enter(FunctionCallInfo fcinfo, HxUserSave *save)
{
	Oid			caller = GetUserId();

	hx_rules_ensure(hx_schema_for_function(fcinfo->flinfo->fn_oid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(save);
	return caller;
}

static void
hx_leave(HxUserSave *save)
{
	hx_restore_user(save);
	SPI_finish();
}

static void
hx_booked_add(HxBooked *booked, int64 id, const char *status)
{
	if (booked->n % 64 == 0)
	{
		booked->ids = booked->ids ? repalloc(booked->ids, sizeof(int64) * (booked->n + 64))
			: palloc(sizeof(int64) * 64);
		booked->statuses = booked->statuses ? repalloc(booked->statuses, sizeof(char *) * (booked->n + 64))
			: palloc(sizeof(char *) * 64);
	}
	booked->ids[booked->n] = id;
	booked->statuses[booked->n] = pstrdup(status);
	booked->n++;
}

/* returns (id, status) rows from *booked */
static void
hx_booked_return(FunctionCallInfo fcinfo, HxBooked *booked)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	for (i = 0; i < booked->n; i++)
	{
		Datum		values[2] = {Int64GetDatum(booked->ids[i]),
		CStringGetTextDatum(booked->statuses[i])};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/*
 * hx_failures
 *		One failure per task id in ids (a bigint[]) - like "common" but for
 *		its id - and how many in *n.
 */
static HxFailure *
hx_failures(ArrayType *ids, const HxFailure *common, int *n)
{
	Datum	   *elems;
	HxFailure  *f;
	int			i;

	deconstruct_array(ids, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, NULL, n);
	f = palloc(sizeof(HxFailure) * Max(*n, 1));
	for (i = 0; i < *n; i++)
	{
		f[i] = *common;
		f[i].id = DatumGetInt64(elems[i]);
	}
	return f;
}

/*
 * hx_fail_sql
 *		The body of the SQL functions that book failures: one per id, like
 *		common, booked robustly, returned as (id, status) rows.
 */
static Datum
hx_fail_sql(FunctionCallInfo fcinfo, ArrayType *ids, const HxFailure *common,
			const HxFailKind *kind)
{
	HxBooked	booked = {0};
	HxUserSave	save;
	HxFailure  *f;
	int			n;

	(void) hx_enter(fcinfo, &save);
	f = hx_failures(ids, common, &n);
	if (n > 0)
		hx_fail_robustly(f, n, kind, &booked);
	hx_booked_return(fcinfo, &booked);
	hx_leave(&save);
	return (Datum) 0;
}

/*
 * hx_put_back
 *		SQL (_hybridexec.hx_put_back(ids, what) RETURNS TABLE (id, status)):
 *		tasks whose worker (what: its kind) is gone mid-attempt, locked by
 *		the caller, go back to the queue (isolated) or become dead.
 */
Datum
hx_put_back(PG_FUNCTION_ARGS)
{
	HxFailKind	kind = {0, true, true, NULL, false};
	HxFailure	lost = {0};

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	kind.what = PG_ARGISNULL(1) ? "worker" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	return hx_fail_sql(fcinfo, PG_GETARG_ARRAYTYPE_P(0), &lost, &kind);
}

/*
 * hx_fail_leased
 *		SQL (_hybridexec.hx_fail_leased(ids, error, sqlstate, retry, cost,
 *		hint) RETURNS TABLE (id, status)): failed external attempts of
 *		tasks the caller has locked (their lease checked): the retry policy
 *		as for handler failures; retry false makes them dead at once.  A
 *		failed attempt of a window run's task counts in the run's failed.
 */
Datum
hx_fail_leased(PG_FUNCTION_ARGS)
{
	HxFailKind	kind = {0, false, true, NULL, true};
	HxFailure	failure = {0};

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task ids and error must not be NULL")));
	kind.retry = PG_ARGISNULL(3) ? true : PG_GETARG_BOOL(3);
	failure.message = text_to_cstring(PG_GETARG_TEXT_PP(1));
	failure.sqlstate = PG_ARGISNULL(2) ? "38000" : text_to_cstring(PG_GETARG_TEXT_PP(2));
	failure.cost = PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4);
	failure.hint = PG_ARGISNULL(5) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(5));
	kind.retry_after = PG_NARGS() > 6 && !PG_ARGISNULL(6) ? PG_GETARG_INTERVAL_P(6) : NULL;
	return hx_fail_sql(fcinfo, PG_GETARG_ARRAYTYPE_P(0), &failure, &kind);
}

/*
 * The completions hx_complete_call makes, for hx_in_subxact: elements
 * from .. from + count - 1 of hx_complete_many's arguments (n* their
 * lengths; results and costs may be shorter than the ids, or absent).
 */
typedef struct HxCompleteCall
{
	Datum	   *ids;
	Datum	   *tokens;
	bool	   *tnulls;
	int			nt;
	Datum	   *results;
	bool	   *rnulls;
	int			nr;
	Datum	   *costs;
	bool	   *cnulls;
	int			nc;
	int			from;
	int			count;
	ReturnSetInfo *rsinfo;
} HxCompleteCall;

/*
 * hx_complete_call
 *		Moves the completed tasks (done_leased), adds an (id, status) row
 *		per id asked for to the result, and counts the completed tasks of
 *		window runs in them.
 */
static void
hx_complete_call(void *arg)
{
	HxCompleteCall *c = (HxCompleteCall *) arg;
	Datum		zero = NumericGetDatum(int64_to_numeric(0));
	Datum		empty = (Datum) 0;
	HTAB	   *set;
	Datum		args[2];
	Datum	   *runs;
	bool	   *done;
	int			nruns = 0;
	uint64		k;
	int			i;

	/* no token, or a negative cost: refused (left out of the set) */
	set = hx_moving_create(c->count);
	for (i = c->from; i < c->from + c->count; i++)
	{
		HxMoving   *m;

		if (i >= c->nt || c->tnulls[i] ||
			(i < c->nc && !c->cnulls[i] &&
			 DatumGetBool(DirectFunctionCall2(numeric_lt, c->costs[i], zero))))
			continue;
		m = hx_moving_add(set, DatumGetInt64(c->ids[i]));
		m->has_token = true;
		memcpy(&m->token, DatumGetUUIDP(c->tokens[i]), sizeof(pg_uuid_t));
		m->result_null = false;
		if (i < c->nr && !c->rnulls[i])
			m->result = c->results[i];
		else
		{
			if (empty == (Datum) 0)
				empty = DirectFunctionCall1(jsonb_in, CStringGetDatum("{}"));
			m->result = empty;
		}
		m->cost_null = !(i < c->nc && !c->cnulls[i]);
		m->cost = m->cost_null ? (Datum) 0 : c->costs[i];
	}

	args[0] = PointerGetDatum(construct_array(&c->ids[c->from], c->count, INT8OID, 8,
											  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = CStringGetTextDatum("running");
	(void) hx_move_done(&done_leased, args, set, true, c->count);

	/* what moved, with its window run (HX_BOOK_RETURNING: route, run_id) */
	for (k = 0; k < SPI_processed; k++)
	{
		HeapTuple	tup = SPI_tuptable->vals[k];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		HxMoving   *m = hash_search(set, &id, HASH_FIND, NULL);
		char	   *route = TextDatumGetCString(SPI_getbinval(tup, desc, 4, &isnull));

		if (m == NULL)
			elog(ERROR, "task %lld moved but was not asked to", (long long) id);
		m->moved = true;
		m->run = SPI_getbinval(tup, desc, 6, &m->run_null);
		m->run_null |= strcmp(route, "batch") != 0;
	}

	/* each id asked for, in order: done or refused */
	runs = palloc(sizeof(Datum) * Max(c->count, 1));
	done = palloc(sizeof(bool) * Max(c->count, 1));
	for (i = c->from; i < c->from + c->count; i++)
	{
		int64		id = DatumGetInt64(c->ids[i]);
		HxMoving   *m = hash_search(set, &id, HASH_FIND, NULL);
		bool		moved = m != NULL && m->moved;
		Datum		row[2] = {c->ids[i], CStringGetTextDatum(moved ? "done" : "refused")};
		bool		isnull[2] = {false, false};

		tuplestore_putvalues(c->rsinfo->setResult, c->rsinfo->setDesc, row, isnull);
		if (moved && !m->run_null)
		{
			runs[nruns] = m->run;
			done[nruns++] = true;
		}
	}
	hash_destroy(set);
	/* completed tasks of window runs count in them, in this subtransaction */
	if (nruns > 0)
		hx_count_in_runs(runs, done, nruns);
}

/*
 * hx_complete_many
 *		SQL (hx_complete_many(ids, lease_tokens, results, costs) RETURNS
 *		TABLE (id, status)): successful external attempts, in one
 *		statement; a stale or expired lease, or a negative cost, is refused
 *		alone.  Should the statement fail, each task is completed on its
 *		own and one that cannot be is refused (its lease then expires and
 *		the reclaim books it).  A completed task of a window run counts in
 *		the run's processed, with its completion.  Called by executors: the
 *		statements run as the extension's owner (hx_enter).
 */
Datum
hx_complete_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxUserSave	save;
	HxCompleteCall call;
	int			n;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return (Datum) 0;
	memset(&call, 0, sizeof(call));
	call.rsinfo = rsinfo;
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(0), INT8OID, 8, FLOAT8PASSBYVAL,
					  TYPALIGN_DOUBLE, &call.ids, NULL, &n);
	deconstruct_array(PG_GETARG_ARRAYTYPE_P(1), UUIDOID, UUID_LEN, false,
					  TYPALIGN_CHAR, &call.tokens, &call.tnulls, &call.nt);
	if (!PG_ARGISNULL(2))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(2), JSONBOID, -1, false,
						  TYPALIGN_INT, &call.results, &call.rnulls, &call.nr);
	if (!PG_ARGISNULL(3))
		deconstruct_array(PG_GETARG_ARRAYTYPE_P(3), NUMERICOID, -1, false,
						  TYPALIGN_INT, &call.costs, &call.cnulls, &call.nc);

	(void) hx_enter(fcinfo, &save);
	for (i = -1; i < n; i++)
	{
		ErrorData  *edata;

		/* all together first, then one by one */
		call.from = i < 0 ? 0 : i;
		call.count = i < 0 ? n : 1;
		edata = hx_in_subxact(hx_complete_call, &call);
		if (edata == NULL && i < 0)
			break;				/* all completed (or refused) together */
		if (edata != NULL && i < 0)
		{
			/* rows the failed statement wrote are in the tuplestore: start over */
			tuplestore_clear(rsinfo->setResult);
			ereport(LOG,
					(errmsg("hybridexec: completing %d task(s) together failed (%s); completing them one by one",
							n, edata->message)));
		}
		else if (edata != NULL)
		{
			Datum		row[2] = {call.ids[i], CStringGetTextDatum("refused")};
			bool		isnull[2] = {false, false};

			ereport(WARNING,
					(errmsg("could not complete task %lld: %s", (long long) DatumGetInt64(call.ids[i]),
							edata->message),
					 errhint("The task stays running until its lease expires; the reclaim then books the attempt.")));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, isnull);
		}
	}
	hx_leave(&save);
	return (Datum) 0;
}

/*
 * hx_check_lease
 *		A clear error unless lease (NULL = none given) is positive and at
 *		most HX_MAX_LEASE_DAYS: how long an executor may hold a task.
 */
static void
hx_check_lease(Interval *lease)
{
	Interval	zero;
	Interval	longest;

	memset(&zero, 0, sizeof(zero));
	memset(&longest, 0, sizeof(longest));
	longest.day = HX_MAX_LEASE_DAYS;
	if (lease == NULL ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(lease),
										  IntervalPGetDatum(&zero))) <= 0 ||
		DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(lease),
										  IntervalPGetDatum(&longest))) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lease must be a positive interval of at most %d days", HX_MAX_LEASE_DAYS),
				 errhint("The lease is how long the executor may hold a task without a heartbeat, such as '5 minutes'; heartbeats extend it.")));
}

/*
 * hx_check_lease_sql
 *		SQL (_hybridexec.hx_check_lease(lease)): hx_check_lease, for
 *		hx_heartbeat.
 */
Datum
hx_check_lease_sql(PG_FUNCTION_ARGS)
{
	hx_check_lease(PG_ARGISNULL(0) ? NULL : PG_GETARG_INTERVAL_P(0));
	PG_RETURN_VOID();
}

/*
 * hx_claim
 *		SQL: the external executors' claim.  Up to max due tasks of types
 *		without an in-database handler (task_types NULL = all such types;
 *		route NULL = both; batch tasks only while their window is open,
 *		once per run), FOR UPDATE SKIP LOCKED; each attempt counted, with a
 *		lease token that hx_complete, hx_fail and hx_heartbeat must present
 *		before lease_expires_at.  Returns SETOF hx_claimed.
 */
Datum
hx_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxUserSave	save;
	HxStmt	   *stmt = &claim_external_any;
	HxTask	   *tasks;
	Datum		args[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum		check[2];
	char		check_nulls[2];
	MemoryContext callcxt;
	char	   *executor;
	char	   *route = NULL;
	int			max;
	int			n;
	int			i;

	if (PG_ARGISNULL(0) || VARSIZE_ANY_EXHDR(PG_GETARG_TEXT_PP(0)) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("executor must not be empty"),
				 errhint("Name the executor, such as 'summarizer@host-1'; it is recorded in hx_task.executor.")));
	executor = text_to_cstring(PG_GETARG_TEXT_PP(0));
	hx_check_key_length("executor", executor);
	if (!PG_ARGISNULL(2))
		route = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (PG_ARGISNULL(3) || PG_GETARG_INT32(3) < 1 || PG_GETARG_INT32(3) > 10000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max must be between 1 and 10000, not %s",
						PG_ARGISNULL(3) ? "NULL" : psprintf("%d", PG_GETARG_INT32(3))),
				 errhint("Claim fewer tasks per call and call again.")));
	max = PG_GETARG_INT32(3);
	hx_check_lease(PG_ARGISNULL(4) ? NULL : PG_GETARG_INTERVAL_P(4));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	callcxt = CurrentMemoryContext;
	(void) hx_enter(fcinfo, &save);

	check[0] = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	check_nulls[0] = PG_ARGISNULL(1) ? 'n' : ' ';
	check[1] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	check_nulls[1] = PG_ARGISNULL(2) ? 'n' : ' ';
	if (hx_stmt_exec(&claim_check, check, check_nulls, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "hx_claim_check failed");
	if (route != NULL && strcmp(route, "stream") == 0)
		stmt = &claim_external_stream;
	else if (route != NULL && strcmp(route, "batch") == 0)
		stmt = &claim_external_batch;

	args[0] = check[0];
	nulls[0] = check_nulls[0];
	args[1] = Int32GetDatum(max);
	args[2] = CStringGetTextDatum(executor);
	args[3] = PG_GETARG_DATUM(4);
	if (hx_stmt_exec(stmt, args, nulls, false, 0) != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "claim failed");
	n = hx_limit_claimed(tasks, hx_tasks_decode_claimed(&tasks, callcxt), false, NULL);
	hx_leave(&save);

	for (i = 0; i < n; i++)
	{
		HxTask	   *t = &tasks[i];
		Datum		values[13];
		bool		isnull[13];

		memset(isnull, 0, sizeof(isnull));
		values[0] = Int64GetDatum(t->id);
		values[1] = CStringGetTextDatum(t->task_type);
		values[2] = t->payload;
		values[3] = Int32GetDatum(t->attempts);
		values[4] = Int32GetDatum(t->max_attempts);
		values[5] = UUIDPGetDatum(&t->lease_token);
		values[6] = TimestampTzGetDatum(t->lease_expires_at);
		values[7] = CStringGetTextDatum(t->batch ? "batch" : "stream");
		values[8] = t->window_name ? CStringGetTextDatum(t->window_name) : (Datum) 0;
		isnull[8] = (t->window_name == NULL);
		values[9] = Int64GetDatum(t->run_id);
		isnull[9] = (t->run_id == 0);
		values[10] = Int32GetDatum(t->priority);
		values[11] = TimestampTzGetDatum(t->deadline);
		isnull[11] = !t->has_deadline;
		values[12] = TimestampTzGetDatum(t->submitted_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	return (Datum) 0;
}

/*
 * hx_cancel
 *		SQL: cancels a queued task (or one waiting for a retry) that the
 *		caller may see (hx_caller_sees); false, with a notice, when it is
 *		already running or finished.  A task the caller may not see does
 *		not exist for it.
 */
Datum
hx_cancel(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	Oid			caller;
	int64		id;
	Datum		arg;
	HeapTuple	tup;
	TupleDesc	desc;
	Oid			submitted_by;
	Datum		dept;
	char	   *status;
	bool		isnull;
	bool		cancelled = false;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task id must not be NULL")));
	id = PG_GETARG_INT64(0);
	arg = Int64GetDatum(id);
	caller = hx_enter(fcinfo, &save);
	if (hx_stmt_exec(&lock_task, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read task %lld", (long long) id);
	if (SPI_processed != 1)
		hx_task_invisible(id, "cancel");
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	status = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
	submitted_by = DatumGetObjectId(SPI_getbinval(tup, desc, 2, &isnull));
	dept = SPI_getbinval(tup, desc, 3, &isnull);
	if (!hx_caller_sees(caller, submitted_by, isnull ? NULL : TextDatumGetCString(dept)))
		hx_task_invisible(id, "cancel");
	if (strcmp(status, "queued") == 0 || strcmp(status, "failed") == 0)
	{
		Datum		task_type = SPI_getbinval(tup, desc, 4, &isnull);

		if (hx_stmt_exec(&cancel_task, &arg, NULL, false, 0) != SPI_OK_UPDATE)
			elog(ERROR, "could not cancel task %lld", (long long) id);
		cancelled = SPI_processed == 1;
		if (cancelled)
			hx_finish_note(id, task_type, "cancelled");
	}
	else
		ereport(NOTICE,
				(errmsg("task %lld is already %s, nothing to cancel", (long long) id, status),
				 errhint("Only queued tasks and failed tasks waiting for a retry can be cancelled.")));
	hx_leave(&save);
	PG_RETURN_BOOL(cancelled);
}

/*
 * hx_upgrade_duplicate
 *		hx_submit found the unfinished task "id" with the dedupe key of a
 *		new submission: when the new one would stream (stream, why: its
 *		decision and reason), or has a higher priority or an earlier
 *		deadline (has_deadline, deadline), the task takes them while it
 *		waits (upgrade_duplicate).  Returns whether it changed.  In SPI, as
 *		the owner.
 */
bool
hx_upgrade_duplicate(int64 id, bool stream, int32 priority, bool has_deadline,
					 TimestampTz deadline, const char *why)
{
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', has_deadline ? ' ' : 'n', ' '};

	values[0] = Int64GetDatum(id);
	values[1] = BoolGetDatum(stream);
	values[2] = Int32GetDatum(priority);
	values[3] = has_deadline ? TimestampTzGetDatum(deadline) : (Datum) 0;
	values[4] = CStringGetTextDatum(why);
	if (hx_stmt_exec(&upgrade_duplicate, values, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not upgrade task %lld", (long long) id);
	return SPI_processed == 1;
}

/*
 * hx_retry_ids
 *		SQL hx_retry(ids bigint[]): puts the dead tasks among ids that the
 *		caller may see back in the queue (HX_RETRY); returns how many.
 *		Others (not dead, unknown, not the caller's) are left alone.
 */
Datum
hx_retry_ids(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	Datum		values[2];
	bool		isnull;
	int64		n;

	if (PG_ARGISNULL(0) || array_contains_nulls(PG_GETARG_ARRAYTYPE_P(0)))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task ids must not be NULL"),
				 errhint("Pass the ids of dead tasks, e.g. hx_retry(ARRAY(SELECT id FROM hx_dead WHERE ...)).")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = ObjectIdGetDatum(hx_enter(fcinfo, &save));
	n = DatumGetInt64(hx_stmt_value(&retry_ids, values, NULL, &isnull));
	hx_leave(&save);
	PG_RETURN_INT64(n);
}

/*
 * hx_retry_type
 *		SQL hx_retry(task_type text, since timestamptz): puts the dead tasks
 *		of the type that died at or after "since", of those the caller may
 *		see, back in the queue (HX_RETRY); returns how many.
 */
Datum
hx_retry_type(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	Datum		values[3];
	bool		isnull;
	char	   *task_type;
	int64		n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task type must not be NULL"),
				 errhint("Pass the type whose dead tasks to retry.")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("since must not be NULL"),
				 errhint("Pass '-infinity' to retry every dead task of the type.")));
	task_type = text_to_cstring(PG_GETARG_TEXT_PP(0));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = ObjectIdGetDatum(hx_enter(fcinfo, &save));
	if (hx_type_lookup(task_type) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown task type \"%s\"", task_type),
				 errhint("Registered types are listed in hx_type.")));
	n = DatumGetInt64(hx_stmt_value(&retry_type, values, NULL, &isnull));
	hx_leave(&save);
	PG_RETURN_INT64(n);
}

/*
 * hx_reclaim_leases
 *		SQL: books every running external attempt whose lease expired as
 *		failed ("lease expired", 57014; the usual retry policy; counted in
 *		the failed of its window run, if any); returns how many.  One task
 *		that cannot be booked is quarantined, never stops the others.
 */
Datum
hx_reclaim_leases(PG_FUNCTION_ARGS)
{
	HxFailKind	kind = {0, false, true, NULL, true};
	HxFailure	expired = {0, "57014", "lease expired", NULL,
		"The executor neither reported nor sent a heartbeat in time (it crashed, hung or lost its connection); the attempt counts as failed.",
	NULL, (Datum) 0};
	HxBooked	booked = {0};
	HxUserSave	save;
	HxFailure  *f;
	bool		isnull;
	int			n;

	(void) hx_enter(fcinfo, &save);
	f = hx_failures(DatumGetArrayTypeP(hx_stmt_value(&expired_leases, NULL, NULL, &isnull)),
					&expired, &n);
	if (n > 0)
		hx_fail_robustly(f, n, &kind, &booked);
	hx_leave(&save);
	PG_RETURN_INT32(booked.n);
}

/*
 * hx_escalate
 *		SQL (_hybridexec.hx_escalate()): moves batch tasks their window
 *		would make late to the stream path now; returns how many.
 */
Datum
hx_escalate(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	uint64		n;

	(void) hx_enter(fcinfo, &save);
	if (hx_stmt_exec(&escalate, NULL, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "escalation failed");
	n = SPI_processed;
	hx_leave(&save);
	PG_RETURN_INT32((int32) n);
}

/*
 * hx_move_window
 *		SQL (_hybridexec.hx_move_window(old, new)): the unfinished tasks of
 *		a renamed window follow it; returns how many.
 */
Datum
hx_move_window(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	Datum		args[2];
	uint64		n;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_INT32(0);
	args[0] = PG_GETARG_DATUM(0);
	args[1] = PG_GETARG_DATUM(1);
	(void) hx_enter(fcinfo, &save);
	if (hx_stmt_exec(&move_window, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not move the tasks of window \"%s\"", TextDatumGetCString(args[0]));
	n = SPI_processed;
	hx_leave(&save);
	PG_RETURN_INT32((int32) n);
}

/*
 * hx_isolate
 *		SQL (_hybridexec.hx_isolate(ids) RETURNS bigint[]): the tasks among
 *		ids that still wait run alone next time (a window run's chunk that
 *		was interrupted or failed as a whole); returns them, in id order.
 */
Datum
hx_isolate(PG_FUNCTION_ARGS)
{
	HxUserSave	save;
	Datum		arg;
	Datum		result;
	bool		isnull;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	arg = PG_GETARG_DATUM(0);
	(void) hx_enter(fcinfo, &save);
	result = SPI_datumTransfer(hx_stmt_value(&isolate, &arg, NULL, &isnull), false, -1);
	hx_leave(&save);
	PG_RETURN_DATUM(result);
}

/*
 * hx_stream_claim
 *		SQL (_hybridexec.hx_stream_claim(worker_pid, max)): the stream
 *		workers' claim, for the isolation tests and tools: the tasks are
 *		marked running for worker_pid, and only a live stream worker (or
 *		the sweep) ever moves them on.
 */
Datum
hx_stream_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext callcxt;
	HxUserSave	save;
	HxTask	   *tasks;
	int			n;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("worker_pid and max must not be NULL")));
	InitMaterializedSRF(fcinfo, 0);
	callcxt = CurrentMemoryContext;
	(void) hx_enter(fcinfo, &save);
	n = hx_claim_stream(PG_GETARG_INT32(0), PG_GETARG_INT32(1), &tasks, callcxt);
	hx_leave(&save);
	for (i = 0; i < n; i++)
	{
		Datum		values[8];
		bool		isnull[8];

		memset(isnull, 0, sizeof(isnull));
		values[0] = Int64GetDatum(tasks[i].id);
		values[1] = CStringGetTextDatum(tasks[i].task_type);
		values[2] = tasks[i].payload;
		values[3] = Int32GetDatum(tasks[i].attempts);
		values[4] = Int32GetDatum(tasks[i].max_attempts);
		values[5] = ObjectIdGetDatum(tasks[i].handler);
		isnull[5] = !OidIsValid(tasks[i].handler);
		values[6] = ObjectIdGetDatum(tasks[i].run_as);
		values[7] = Float8GetDatum(tasks[i].timeout_ms);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, isnull);
	}
	return (Datum) 0;
}
