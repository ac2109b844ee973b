/*-------------------------------------------------------------------------
 *
 * book.c
 *	  The ledger: books every attempt that finished into hx_cost, and adds
 *	  it to the rolling statistics (hx_stat_minute) and the daily cost per
 *	  department (hx_cost_daily), in the transaction that finished it.
 *
 *	  Two ways in.  The statement trigger on hx_task (hx_cost_book) books
 *	  the rows an UPDATE finished: a row whose new status is done, failed
 *	  or dead and whose status or attempt count changed (failed attempts,
 *	  lost workers, cancellations).  Done tasks instead leave hx_task for
 *	  hx_task_history, and the statement that moves them (task_state.c: a
 *	  stream worker's claims, a window run's chunk, an external executor's
 *	  completions) returns what a booking reads of each (HX_BOOK_RETURNING)
 *	  to hx_book_receiver, whose rows hx_book_moved books the same way.
 *	  Moves are not booked by a trigger on hx_task_history: an INSERT
 *	  trigger's transition table copies whole rows, payload and result
 *	  included, and reading them back cost a batch worker about a sixth of
 *	  its time.  Disabling the trigger on hx_task turns all booking off.
 *
 *	  Attempts one worker finished in one statement ran one after the other
 *	  (a stream batch) or together (a batch chunk): they share the span from
 *	  the first start to the last result equally.  Each attempt is priced by
 *	  the catalog (hx_price_rule) as of the second it started, once per
 *	  task type, second and run time, unless its executor reported a cost.
 *
 *	  The trigger reads the statement's finished rows straight from the
 *	  transition tables (a statement that finishes nothing, such as a
 *	  claim, costs no query); run times, prices, statistics and daily sums
 *	  are worked out here, and written with one INSERT into hx_cost (an
 *	  array of its rows, unnested; a chunk's as one hx_cost_chunk row) and
 *	  one upsert per minute/type/route and per department/day/currency.
 *	  The price rules of a type and second are kept by the backend until
 *	  prices change.  The rules are those of the
 *	  plpgsql trigger of 0.3, which this replaces: at 64 attempts per
 *	  statement it booked an attempt in 10-12 us, mostly window functions,
 *	  joins, aggregates and catalog lookups of one big statement; this
 *	  takes 4-5 us, 3-4 us in 5,000-task chunks (test/bench/ledger.sql).
 *
 *	  Runs as the extension's owner (the trigger is SECURITY DEFINER,
 *	  hx_book_moved switches), in the transaction of the statement that
 *	  finished the attempts.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "catalog/dependency.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/rel.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

#include "hybridexec.h"

/*
 * The columns of hx_task a booking reads from the new rows, in the order
 * of the F_* constants (F_WAS_RUNNING comes from the old row).
 */
static const char *const task_columns[] = {
	"id", "task_type", "status", "route", "window_name", "run_id", "rule_name",
	"department", "origin", "executor", "submitted_by", "submitted_at", "sla", "deadline",
	"attempts", "started_at", "worker_pid", "reported_cost", "finished_at"
};

/* the stream and batch price rules of an attempt: task type, second it started */
static HxStmt price_rules = {
	"SELECT s.price_id, s.currency, s.unit_cost, s.per_second, s.factor, "
	"b.price_id, b.currency, b.unit_cost, b.per_second, b.factor "
	"FROM (SELECT) k "
	"LEFT JOIN LATERAL _hybridexec.hx_price_rule($1, 'stream', $2) s ON true "
	"LEFT JOIN LATERAL _hybridexec.hx_price_rule($1, 'batch', $2) b ON true",
	2, {TEXTOID, TIMESTAMPTZOID}, false
};

/*
 * Every booking of the statement, as one array of hx_cost rows (the
 * parameter's type, hx_cost[], is looked up when it is prepared); the
 * columns a booking sets, in the order of book_columns.
 */
#define BOOK_COLUMNS 25

static const char *const book_columns[BOOK_COLUMNS] = {
	"at", "task_id", "attempt", "outcome", "task_type", "route", "window_name", "run_id",
	"rule_name", "department", "origin", "executor", "submitted_by", "submitted_at", "sla",
	"deadline", "wait_seconds", "wall_seconds", "latency_seconds", "price_id", "currency",
	"cost", "baseline_cost", "batch_cost", "reported"
};

static HxStmt insert_bookings = {
	"INSERT INTO @extschema@.hx_cost_attempt (at, task_id, attempt, outcome, task_type, route, "
	"window_name, run_id, rule_name, department, origin, executor, submitted_by, "
	"submitted_at, sla, deadline, wait_seconds, wall_seconds, latency_seconds, price_id, "
	"currency, cost, baseline_cost, batch_cost, reported) "
	"SELECT b.at, b.task_id, b.attempt, b.outcome, b.task_type, b.route, b.window_name, "
	"b.run_id, b.rule_name, b.department, b.origin, b.executor, b.submitted_by, "
	"b.submitted_at, b.sla, b.deadline, b.wait_seconds, b.wall_seconds, b.latency_seconds, "
	"b.price_id, b.currency, b.cost, b.baseline_cost, b.batch_cost, b.reported "
	"FROM unnest($1) b",
	1, {InvalidOid}, false
};

/*
 * A chunk's done attempts that share every booking column but the task's
 * own: one hx_cost_chunk row (hx_book_chunks).
 */
static HxStmt insert_chunk = {
	"INSERT INTO @extschema@.hx_cost_chunk (at, started_at, task_type, route, window_name, "
	"run_id, rule_name, department, origin, executor, submitted_by, sla, wall_seconds, price_id, "
	"currency, cost, baseline_cost, batch_cost, ids, task_ids, attempts, submitted_ats, deadlines) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, "
	"$19, $20, $21, $22, $23)",
	23, {TIMESTAMPTZOID, TIMESTAMPTZOID, TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, REGROLEOID, INTERVALOID, FLOAT8OID, INT8OID, TEXTOID, NUMERICOID,
		NUMERICOID, NUMERICOID, INT8ARRAYOID, INT8ARRAYOID, INT4ARRAYOID, TIMESTAMPTZARRAYOID,
	TIMESTAMPTZARRAYOID}, false
};

static HxStmt add_minute = {
	"INSERT INTO @extschema@.hx_stat_minute AS s (minute, task_type, route, shard, done, "
	"failed, dead, wall_seconds, cost, wait_hist, run_hist) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
	"ON CONFLICT (minute, task_type, route, shard) DO UPDATE "
	"SET done = s.done + EXCLUDED.done, failed = s.failed + EXCLUDED.failed, "
	"dead = s.dead + EXCLUDED.dead, wall_seconds = s.wall_seconds + EXCLUDED.wall_seconds, "
	"cost = s.cost + EXCLUDED.cost, "
	"wait_hist = _hybridexec.hx_hist_merge(s.wait_hist, EXCLUDED.wait_hist), "
	"run_hist = _hybridexec.hx_hist_merge(s.run_hist, EXCLUDED.run_hist)",
	11, {TIMESTAMPTZOID, TEXTOID, TEXTOID, INT2OID, INT8OID, INT8OID, INT8OID, FLOAT8OID,
	NUMERICOID, INT8ARRAYOID, INT8ARRAYOID}, false
};

static HxStmt add_day = {
	"INSERT INTO @extschema@.hx_cost_daily AS d (day, department, currency, shard, cost) "
	"VALUES ($1, $2, $3, $4, $5) "
	"ON CONFLICT (department, day, currency, shard) DO UPDATE SET cost = d.cost + EXCLUDED.cost",
	5, {DATEOID, TEXTOID, TEXTOID, INT2OID, NUMERICOID}, false
};

/* columns of "finished", 0-based */
enum
{
	F_ID, F_TASK_TYPE, F_STATUS, F_ROUTE, F_WINDOW, F_RUN_ID, F_RULE, F_DEPARTMENT,
	F_ORIGIN, F_EXECUTOR, F_SUBMITTED_BY, F_SUBMITTED_AT, F_SLA, F_DEADLINE,
	F_ATTEMPTS, F_STARTED_AT, F_WORKER_PID, F_REPORTED_COST, F_FINISHED_AT,
	F_WAS_RUNNING, F_NCOLS
};

StaticAssertDecl(lengthof(task_columns) == F_WAS_RUNNING,
				 "task_columns must match the F_* constants before F_WAS_RUNNING");

/* one finished attempt */
typedef struct HxAttempt
{
	Datum		v[F_NCOLS];
	bool		n[F_NCOLS];
	TimestampTz fin_at;			/* finished_at, or the trigger's moment */
	int			group;			/* its worker/run group (wall time share) */
	double		wall;			/* its share of the group's span, seconds */
	int			priced;			/* its entry in the price list */
	const char *status;
	bool		stream;
	Datum		cost;			/* what it is booked at, and the rest of */
	Datum		baseline;		/* its booking */
	Datum		batch;
	Datum		currency;
	Datum		price_id;
	bool		price_id_null;
} HxAttempt;

/* attempts one worker finished together */
typedef struct HxBookGroup
{
	int32		worker_pid;
	bool		pid_null;
	int64		run_id;
	bool		run_null;
	bool		was_running;
	int			count;
	TimestampTz first_start;	/* DT_NOBEGIN: none started */
	TimestampTz last_fin;
} HxBookGroup;

/* the price rule of one route (hx_price_rule), if any */
typedef struct HxPriceRule
{
	bool		found;
	int64		price_id;
	Datum		currency;		/* text */
	Datum		unit_cost;		/* numeric */
	Datum		per_second;
	Datum		factor;
} HxPriceRule;

/*
 * The price rules of a task type for attempts started in one second, kept
 * by the backend: a stream worker books hundreds of statements a second
 * of the same type.  Emptied when hx_price or hx_price_period change (a
 * relcache invalidation their statement triggers send) and when
 * hybridexec.time_zone (which the periods may use) changes.
 */
typedef struct HxPriceRules
{
	char	   *task_type;
	TimestampTz at;
	HxPriceRule		stream;
	HxPriceRule		batch;
} HxPriceRules;

#define HX_RULE_CACHE_SIZE 64

static HxPriceRules rule_cache[HX_RULE_CACHE_SIZE];
static int	rule_cache_n = 0;
static int	rule_cache_next = 0;
static MemoryContext rule_cache_cxt = NULL;
static char *rule_cache_zone = NULL;
static Oid	price_relid = InvalidOid;
static Oid	period_relid = InvalidOid;
static bool rule_callback_registered = false;

/*
 * The price of the attempts of one type, second and run time, in the
 * trigger call's memory: the backend's cache may drop its entry before
 * the bookings are written (more seconds than it holds, or prices changed
 * while a lookup took a lock).
 */
typedef struct HxPriced
{
	char	   *task_type;
	TimestampTz at;
	double		wall;
	bool		s_found;		/* the routes' price rows, if any */
	bool		b_found;
	int64		s_id;
	int64		b_id;
	Datum		s_cur;			/* text; valid when found */
	Datum		b_cur;
	Datum		s_cost;			/* numeric */
	Datum		b_cost;
} HxPriced;

/* an old row's id and its place in the old transition table */
typedef struct HxOldRow
{
	int64		id;
	int64		index;
} HxOldRow;

/* the old rows of an UPDATE: what a booking compares the new ones with */
typedef struct HxOldRows
{
	int64		nrows;
	int64	   *id;
	char	  **status;
	int32	   *attempts;
	HTAB	   *by_id;			/* id -> place, built on first use */
} HxOldRows;

/* one hx_stat_minute or hx_cost_daily row to add */
typedef struct HxSum
{
	TimestampTz minute;			/* minute (statistics) */
	DateADT		day;			/* local day (daily cost) */
	const char *task_type;		/* or department */
	const char *route;			/* or currency */
	int64		done,
				failed,
				dead;
	double		wall;
	Datum		cost;
	int64		wait_hist[HX_HIST_BUCKETS];
	int64		run_hist[HX_HIST_BUCKETS];
} HxSum;

/*
 * Set around the statements that move done tasks into hx_task_history (a
 * window run's chunk, a worker's finished claims: task_state.c): only then
 * are the rows inserted there done tasks whose results the write-back
 * trigger of watched tables writes back (hx_book_moving).  A restore
 * loading hx_task_history writes nothing back.
 */
bool		hx_book_moves = false;

/* the trigger function last called, and its extension's schema */
static Oid	book_fn_oid = InvalidOid;
static Oid	book_schema = InvalidOid;

PG_FUNCTION_INFO_V1(hx_cost_book);
PG_FUNCTION_INFO_V1(hx_book_moving);

static int	hx_book_read(TriggerData *trigdata, HxAttempt **out);
static void hx_attempt_fill(HxAttempt *t, HxAttempt *prev, TupleTableSlot *slot,
							const AttrNumber *attnum, bool was_running, TimestampTz now);
static void hx_book_attempts(HxAttempt *a, int n, bool moved);
static bool hx_ledger_on(void);
static void hx_book_read_olds(Tuplestorestate *olds, TupleTableSlot *slot,
							  AttrNumber *attnum, HxOldRows *o);
static int64 hx_book_old_row(HxOldRows *o, int64 id);
static void hx_book_group(HxAttempt *a, int n);
static void hx_book_price(HxAttempt *a, int n);
static Datum hx_route_cost(HxPriceRule *r, double wall);
static HxPriceRules *hx_price_rules(Datum task_type, TimestampTz at);
static void hx_rule_read(HxPriceRule *r, int from);
static void hx_rule_free(HxPriceRules *e);
static void hx_rule_cache_callback(Datum arg, Oid relid);
static void hx_book_insert(HxAttempt *a, int n);
static int	hx_book_chunks(HxAttempt *a, int n);
static bool hx_chunk_mate(HxAttempt *x, HxAttempt *y);
static void hx_book_sums(HxAttempt *a, int n);
static void hx_sums_grow(HxSum **m, HxSum **d, int *room);
static int	hx_minute_cmp(const void *x, const void *y);
static int	hx_day_cmp(const void *x, const void *y);
static double hx_seconds(TimestampTz from, TimestampTz to);
static Datum hx_numeric_zero(void);

/*
 * hx_cost_book
 *		AFTER UPDATE ... FOR EACH STATEMENT trigger on hx_task, with the old
 *		and new rows as transition tables hx_cost_old and hx_cost_new: books
 *		the attempts the statement finished (done tasks that move to
 *		hx_task_history are booked by hx_book_moved instead).
 */
Datum
hx_cost_book(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	HxAttempt  *a;
	int			n;
	MemoryContext cxt;
	MemoryContext old;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_STATEMENT(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ||
		trigdata->tg_newtable == NULL || trigdata->tg_oldtable == NULL)
		elog(ERROR, "hx_cost_book: not called as an AFTER UPDATE statement trigger with transition tables");

	/* everything below lives until the end of the call */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "hx_cost_book", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(cxt);

	/* most statements (claims, put-backs) finish nothing: no SPI for them */
	n = hx_book_read(trigdata, &a);
	if (n > 0)
	{
		/*
		 * Its schema is looked up once per function (a new extension, or
		 * an updated one, has new functions).
		 */
		if (fcinfo->flinfo->fn_oid != book_fn_oid)
		{
			book_schema = hx_schema_for_function(fcinfo->flinfo->fn_oid);
			book_fn_oid = fcinfo->flinfo->fn_oid;
		}
		hx_rules_ensure(book_schema);
		hx_book_attempts(a, n, false);
	}

	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return PointerGetDatum(NULL);
}

/*
 * hx_book_attempts
 *		Books finished attempts: hx_cost (one hx_cost_chunk row per group of
 *		a chunk's done attempts when "moved", hx_cost_attempt rows for the
 *		rest), hx_stat_minute and hx_cost_daily; announces the done and dead
 *		ones at commit and submits the follow-ups of refined and
 *		dead-lettered types.  As the extension's owner, the rule cache
 *		loaded, in the caller's memory context (which a may be reordered
 *		in).
 */
static void
hx_book_attempts(HxAttempt *a, int n, bool moved)
{
	int			single;
	int			i;

	/*
	 * The done and dead tasks are announced at commit (finished.c): noted
	 * here, where they are read anyway.
	 */
	for (i = 0; i < n; i++)
		if (strcmp(a[i].status, "failed") != 0)
			hx_finish_note(DatumGetInt64(a[i].v[F_ID]), a[i].v[F_TASK_TYPE],
						   strcmp(a[i].status, "done") == 0 ? "done" : "dead");

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_book_group(a, n);
	hx_book_price(a, n);
	single = moved ? hx_book_chunks(a, n) : n;
	if (single > 0)
		hx_book_insert(a, single);
	hx_book_sums(a, n);
	SPI_finish();

	/* next tiers of done tasks, dead letters of dead ones */
	if (hx_types_followed())
	{
		int64	   *done = palloc(sizeof(int64) * n);
		int64	   *dead = palloc(sizeof(int64) * n);
		int			ndone = 0;
		int			ndead = 0;

		for (i = 0; i < n; i++)
		{
			HxTypeInfo *info = hx_type_lookup(TextDatumGetCString(a[i].v[F_TASK_TYPE]));

			if (info == NULL)
				continue;
			if (info->refined && strcmp(a[i].status, "done") == 0)
				done[ndone++] = DatumGetInt64(a[i].v[F_ID]);
			else if (info->dead_letter && strcmp(a[i].status, "dead") == 0)
				dead[ndead++] = DatumGetInt64(a[i].v[F_ID]);
		}
		if (ndone > 0)
			hx_submit_follow_ups(done, ndone, false);
		if (ndead > 0)
			hx_submit_follow_ups(dead, ndead, true);
	}
}

/*
 * hx_book_moving
 *		Whether this backend is moving a chunk's done tasks into
 *		hx_task_history: the condition of the write-back trigger there.
 */
Datum
hx_book_moving(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(hx_book_moves);
}

/*
 * hx_book_read
 *		The attempts the statement finished, read straight from the
 *		transition tables (a join planned once could be a nested loop over
 *		5,000-row chunks): the new rows whose status is done, failed or
 *		dead and whose status or attempt count changed.  The two tables
 *		hold the old and new version of each row in the same order; should
 *		they not, the old rows are found by id.  Each transition table is
 *		read through a read pointer of its own, so other triggers' readers
 *		are not disturbed.  In the caller's memory context.
 */
static int
hx_book_read(TriggerData *trigdata, HxAttempt **out)
{
	TupleDesc	desc = RelationGetDescr(trigdata->tg_relation);
	Tuplestorestate *olds = trigdata->tg_oldtable;
	Tuplestorestate *news = trigdata->tg_newtable;
	int64		nrows = tuplestore_tuple_count(news);
	TupleTableSlot *slot = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TimestampTz now = GetCurrentTimestamp();
	AttrNumber	attnum[F_WAS_RUNNING];
	HxOldRows	old = {0};
	HxAttempt  *a;
	int			n = 0;
	int64		r;
	int			c;

	for (c = 0; c < lengthof(task_columns); c++)
	{
		attnum[c] = SPI_fnumber(desc, task_columns[c]);
		if (attnum[c] <= 0)
			elog(ERROR, "hx_cost_book: hx_task has no column %s", task_columns[c]);
	}
	if (nrows == 0 || tuplestore_tuple_count(olds) != nrows)
	{
		ExecDropSingleTupleTableSlot(slot);
		if (nrows == 0)
			return 0;
		elog(ERROR, "hx_cost_book: %lld new rows but %lld old ones",
			 (long long) nrows, (long long) tuplestore_tuple_count(olds));
	}

	hx_book_read_olds(olds, slot, attnum, &old);

	a = palloc0(sizeof(HxAttempt) * nrows);
	tuplestore_select_read_pointer(news, tuplestore_alloc_read_pointer(news, EXEC_FLAG_REWIND));
	tuplestore_rescan(news);
	for (r = 0; r < nrows && tuplestore_gettupleslot(news, true, false, slot); r++)
	{
		HxAttempt  *t = &a[n];
		bool		isnull;
		char	   *status = TextDatumGetCString(slot_getattr(slot, attnum[F_STATUS], &isnull));
		int64		id = DatumGetInt64(slot_getattr(slot, attnum[F_ID], &isnull));
		int32		attempts = DatumGetInt32(slot_getattr(slot, attnum[F_ATTEMPTS], &isnull));
		int64		o = r;
		bool		was_running = false;

		if (strcmp(status, "done") != 0 && strcmp(status, "failed") != 0 &&
			strcmp(status, "dead") != 0)
			continue;
		if (old.id[o] != id)
			o = hx_book_old_row(&old, id);
		if (strcmp(old.status[o], status) == 0 && old.attempts[o] == attempts)
			continue;
		was_running = (strcmp(old.status[o], "running") == 0);

		hx_attempt_fill(t, n > 0 ? &a[n - 1] : NULL, slot, attnum, was_running, now);
		n++;
	}
	ExecDropSingleTupleTableSlot(slot);
	if (old.by_id != NULL)
		hash_destroy(old.by_id);
	*out = a;
	return n;
}

/*
 * hx_book_read_olds
 *		Reads the id, status and attempts of an UPDATE's old rows, in their
 *		order, into *o.  In the caller's memory context.
 */
static void
hx_book_read_olds(Tuplestorestate *olds, TupleTableSlot *slot, AttrNumber *attnum,
				  HxOldRows *o)
{
	int64		nrows = tuplestore_tuple_count(olds);
	int64		r;

	o->nrows = nrows;
	o->id = palloc(sizeof(int64) * nrows);
	o->status = palloc(sizeof(char *) * nrows);
	o->attempts = palloc(sizeof(int32) * nrows);
	tuplestore_select_read_pointer(olds, tuplestore_alloc_read_pointer(olds, EXEC_FLAG_REWIND));
	tuplestore_rescan(olds);
	for (r = 0; r < nrows && tuplestore_gettupleslot(olds, true, false, slot); r++)
	{
		bool		isnull;

		o->id[r] = DatumGetInt64(slot_getattr(slot, attnum[F_ID], &isnull));
		o->status[r] = TextDatumGetCString(slot_getattr(slot, attnum[F_STATUS], &isnull));
		o->attempts[r] = DatumGetInt32(slot_getattr(slot, attnum[F_ATTEMPTS], &isnull));
	}
}

/*
 * hx_book_old_row
 *		The place of the old version of row "id", through a hash table of
 *		the old rows built on first use.
 */
static int64
hx_book_old_row(HxOldRows *o, int64 id)
{
	HxOldRow   *e;
	bool		found;

	if (o->by_id == NULL)
	{
		HASHCTL		ctl;
		int64		r;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(HxOldRow);
		ctl.hcxt = CurrentMemoryContext;
		o->by_id = hash_create("hx_cost_book old rows", o->nrows, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
		for (r = 0; r < o->nrows; r++)
		{
			e = hash_search(o->by_id, &o->id[r], HASH_ENTER, &found);
			e->index = r;
		}
	}
	e = hash_search(o->by_id, &id, HASH_FIND, &found);
	if (!found)
		elog(ERROR, "hx_cost_book: no old version of task %lld", (long long) id);
	return e->index;
}

/*
 * hx_book_group
 *		Each attempt's share of its group's span (worker pid, run, whether
 *		it was running): the span from the group's first start to its last
 *		result, divided by the group's attempts; 0 for attempts that never
 *		started (lost before they ran).
 */
static void
hx_book_group(HxAttempt *a, int n)
{
	HxBookGroup *g = palloc(sizeof(HxBookGroup) * n);
	int			ng = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		bool		pid_null = a[i].n[F_WORKER_PID];
		int32		pid = pid_null ? 0 : DatumGetInt32(a[i].v[F_WORKER_PID]);
		bool		run_null = a[i].n[F_RUN_ID];
		int64		run = run_null ? 0 : DatumGetInt64(a[i].v[F_RUN_ID]);
		bool		running = !a[i].n[F_WAS_RUNNING] && DatumGetBool(a[i].v[F_WAS_RUNNING]);
		int			k;

		/* groups are few (one per worker and run in a statement) */
		for (k = ng - 1; k >= 0; k--)
			if (g[k].pid_null == pid_null && g[k].worker_pid == pid &&
				g[k].run_null == run_null && g[k].run_id == run &&
				g[k].was_running == running)
				break;
		if (k < 0)
		{
			k = ng++;
			g[k].worker_pid = pid;
			g[k].pid_null = pid_null;
			g[k].run_id = run;
			g[k].run_null = run_null;
			g[k].was_running = running;
			g[k].count = 0;
			g[k].first_start = DT_NOBEGIN;
			g[k].last_fin = a[i].fin_at;
		}
		g[k].count++;
		if (!a[i].n[F_STARTED_AT])
		{
			TimestampTz s = DatumGetTimestampTz(a[i].v[F_STARTED_AT]);

			if (TIMESTAMP_IS_NOBEGIN(g[k].first_start) || s < g[k].first_start)
				g[k].first_start = s;
		}
		if (a[i].fin_at > g[k].last_fin)
			g[k].last_fin = a[i].fin_at;
		a[i].group = k;
	}
	for (i = 0; i < n; i++)
	{
		HxBookGroup *gr = &g[a[i].group];

		if (a[i].n[F_STARTED_AT] || TIMESTAMP_IS_NOBEGIN(gr->first_start))
			a[i].wall = 0;
		else
			a[i].wall = Max(hx_seconds(gr->first_start, gr->last_fin), 0) / gr->count;
	}
}

/*
 * hx_book_price
 *		Prices every attempt: the catalog's rules as of the second it
 *		started (or finished, if it never started) and its run time; a
 *		cost the executor reported wins over the catalog's.  The cost of a
 *		route is round(coalesce((unit_cost + per_second * wall) * factor,
 *		0), 6), as numeric, once per rules and run time.
 */
static void
hx_book_price(HxAttempt *a, int n)
{
	HxPriced   *p = palloc(sizeof(HxPriced) * n);
	int			np = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		TimestampTz at = a[i].n[F_STARTED_AT] ? a[i].fin_at : DatumGetTimestampTz(a[i].v[F_STARTED_AT]);
		char	   *type = TextDatumGetCString(a[i].v[F_TASK_TYPE]);
		HxPriced   *pr;
		int			k;

		/* date_trunc('second', at): every zone's offset is whole seconds */
		at -= ((at % USECS_PER_SEC) + USECS_PER_SEC) % USECS_PER_SEC;
		for (k = np - 1; k >= 0; k--)
			if (p[k].at == at && p[k].wall == a[i].wall && strcmp(p[k].task_type, type) == 0)
				break;
		if (k < 0)
		{
			HxPriceRules *rules = hx_price_rules(a[i].v[F_TASK_TYPE], at);

			/* copied out of the cache before anything else can evict it */
			k = np++;
			pr = &p[k];
			pr->task_type = type;
			pr->at = at;
			pr->wall = a[i].wall;
			pr->s_found = rules->stream.found;
			pr->b_found = rules->batch.found;
			pr->s_id = rules->stream.price_id;
			pr->b_id = rules->batch.price_id;
			pr->s_cur = pr->s_found ? datumCopy(rules->stream.currency, false, -1) : (Datum) 0;
			pr->b_cur = pr->b_found ? datumCopy(rules->batch.currency, false, -1) : (Datum) 0;
			pr->s_cost = hx_route_cost(&rules->stream, a[i].wall);
			pr->b_cost = hx_route_cost(&rules->batch, a[i].wall);
		}
		pr = &p[k];

		/* the route's price, else the stream row's currency, else the setting */
		if (a[i].stream ? pr->s_found : pr->b_found)
			a[i].currency = a[i].stream ? pr->s_cur : pr->b_cur;
		else if (pr->s_found)
			a[i].currency = pr->s_cur;
		else
			a[i].currency = CStringGetTextDatum(hx_currency != NULL ? hx_currency : "USD");

		if (!a[i].n[F_REPORTED_COST])
		{
			Datum		reported = a[i].v[F_REPORTED_COST];

			a[i].price_id_null = true;
			a[i].cost = reported;
			a[i].baseline = a[i].stream ? reported : pr->s_cost;
			a[i].batch = a[i].stream ? pr->b_cost : reported;
		}
		else
		{
			a[i].price_id = Int64GetDatum(a[i].stream ? pr->s_id : pr->b_id);
			a[i].price_id_null = !(a[i].stream ? pr->s_found : pr->b_found);
			a[i].cost = a[i].stream ? pr->s_cost : pr->b_cost;
			a[i].baseline = pr->s_cost;
			a[i].batch = pr->b_cost;
		}
	}
}

/*
 * hx_route_cost
 *		round(coalesce((unit_cost + per_second * wall::numeric) * factor,
 *		0), 6) of a route's rule.
 */
static Datum
hx_route_cost(HxPriceRule *r, double wall)
{
	Datum		x;

	if (!r->found)
		x = hx_numeric_zero();
	else
		x = DirectFunctionCall2(numeric_mul,
								DirectFunctionCall2(numeric_add, r->unit_cost,
													DirectFunctionCall2(numeric_mul, r->per_second,
																		DirectFunctionCall1(float8_numeric,
																							Float8GetDatum(wall)))),
								r->factor);
	return DirectFunctionCall2(numeric_round, x, Int32GetDatum(6));
}

/*
 * hx_price_rules
 *		The price rules of a task type for attempts started in the second
 *		"at", from the backend's cache or the catalog (hx_price_rule).
 */
static HxPriceRules *
hx_price_rules(Datum task_type, TimestampTz at)
{
	char	   *type = TextDatumGetCString(task_type);
	const char *zone = hx_time_zone != NULL ? hx_time_zone : "";
	HxPriceRules *e;
	MemoryContext old;
	Datum		args[2];
	int			i;

	if (!rule_callback_registered)
	{
		CacheRegisterRelcacheCallback(hx_rule_cache_callback, (Datum) 0);
		rule_callback_registered = true;
	}
	if (rule_cache_cxt == NULL)
		rule_cache_cxt = AllocSetContextCreate(TopMemoryContext, "hybridexec price rules",
											   ALLOCSET_SMALL_SIZES);
	if (rule_cache_zone != NULL && strcmp(rule_cache_zone, zone) != 0)
		hx_rule_cache_callback((Datum) 0, InvalidOid);
	if (!OidIsValid(price_relid))
	{
		Oid			schema = hx_cached_schema();

		price_relid = get_relname_relid("hx_price", schema);
		period_relid = get_relname_relid("hx_price_period", schema);
	}

	for (i = 0; i < rule_cache_n; i++)
	{
		e = &rule_cache[(rule_cache_next - 1 - i + HX_RULE_CACHE_SIZE) % HX_RULE_CACHE_SIZE];
		if (e->at == at && strcmp(e->task_type, type) == 0)
			return e;
	}

	args[0] = task_type;
	args[1] = TimestampTzGetDatum(at);
	if (hx_stmt_exec(&price_rules, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "hx_cost_book: looking up the price rules failed");

	old = MemoryContextSwitchTo(rule_cache_cxt);
	if (rule_cache_zone == NULL)
		rule_cache_zone = pstrdup(zone);
	e = &rule_cache[rule_cache_next];
	if (rule_cache_n == HX_RULE_CACHE_SIZE)
		hx_rule_free(e);
	else
		rule_cache_n++;
	rule_cache_next = (rule_cache_next + 1) % HX_RULE_CACHE_SIZE;
	e->task_type = pstrdup(type);
	e->at = at;
	hx_rule_read(&e->stream, 0);
	hx_rule_read(&e->batch, 5);
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	return e;
}

/*
 * hx_rule_read
 *		One route's rule from the columns from+1 .. from+5 of the lookup's
 *		row, copied into the current memory context.
 */
static void
hx_rule_read(HxPriceRule *r, int from)
{
	HeapTuple	tup = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	Datum	   *field[4] = {&r->currency, &r->unit_cost, &r->per_second, &r->factor};
	bool		isnull;
	Datum		d;
	int			i;

	d = SPI_getbinval(tup, desc, from + 1, &isnull);
	r->found = !isnull;
	r->price_id = isnull ? 0 : DatumGetInt64(d);
	if (!r->found)
		return;
	for (i = 0; i < 4; i++)
	{
		d = SPI_getbinval(tup, desc, from + 2 + i, &isnull);
		if (isnull)				/* cannot be: the columns are NOT NULL */
			elog(ERROR, "hx_cost_book: price %lld has a NULL column", (long long) r->price_id);
		*field[i] = datumCopy(d, false, -1);
	}
}

/* frees what a cache entry holds */
static void
hx_rule_free(HxPriceRules *e)
{
	HxPriceRule *r[2] = {&e->stream, &e->batch};
	int			i;

	pfree(e->task_type);
	for (i = 0; i < 2; i++)
		if (r[i]->found)
		{
			pfree(DatumGetPointer(r[i]->currency));
			pfree(DatumGetPointer(r[i]->unit_cost));
			pfree(DatumGetPointer(r[i]->per_second));
			pfree(DatumGetPointer(r[i]->factor));
		}
}

/*
 * hx_rule_cache_callback
 *		Relcache callback: hx_price or hx_price_period changed (or every
 *		relation, or the extension may be another one now): forget the
 *		cached rules.
 */
static void
hx_rule_cache_callback(Datum arg, Oid relid)
{
	if (relid != InvalidOid && relid != price_relid && relid != period_relid)
		return;
	if (rule_cache_cxt != NULL)
		MemoryContextReset(rule_cache_cxt);
	rule_cache_n = 0;
	rule_cache_next = 0;
	rule_cache_zone = NULL;
	price_relid = period_relid = InvalidOid;
}

/*
 * hx_book_insert
 *		One INSERT of every booking: an array of hx_cost rows, with the
 *		columns a booking sets (by name: whatever their order in the table).
 */
static void
hx_book_insert(HxAttempt *a, int n)
{
	Oid			type = get_rel_type_id(get_relname_relid("hx_cost_attempt", hx_cached_schema()));
	Oid			array_type = get_array_type(type);
	TupleDesc	desc = lookup_rowtype_tupdesc_copy(type, -1);
	Datum	   *rows = palloc(sizeof(Datum) * n);
	int		   *from = palloc(sizeof(int) * desc->natts);
	Datum		v[BOOK_COLUMNS];
	bool		isnull[BOOK_COLUMNS];
	Datum	   *values = palloc(sizeof(Datum) * desc->natts);
	bool	   *nulls = palloc(sizeof(bool) * desc->natts);
	Datum		arg;
	int			i;
	int			c;

	int			found = 0;

	for (c = 0; c < desc->natts; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, c);

		from[c] = -1;
		for (i = 0; i < BOOK_COLUMNS && !att->attisdropped; i++)
			if (strcmp(NameStr(att->attname), book_columns[i]) == 0)
			{
				from[c] = i;
				found++;
			}
	}
	if (found != BOOK_COLUMNS)
		elog(ERROR, "hx_cost_book: hx_cost lacks %d of the columns a booking sets",
			 BOOK_COLUMNS - found);
	for (i = 0; i < n; i++)
	{
		HxAttempt  *t = &a[i];
		TimestampTz start = t->n[F_STARTED_AT] ? t->fin_at : DatumGetTimestampTz(t->v[F_STARTED_AT]);
		static const int from_task[] = {
			-1, F_ID, F_ATTEMPTS, F_STATUS, F_TASK_TYPE, F_ROUTE, F_WINDOW, F_RUN_ID,
			F_RULE, F_DEPARTMENT, F_ORIGIN, F_EXECUTOR, F_SUBMITTED_BY, F_SUBMITTED_AT,
			F_SLA, F_DEADLINE
		};

		for (c = 0; c < lengthof(from_task); c++)
		{
			isnull[c] = from_task[c] >= 0 && t->n[from_task[c]];
			v[c] = from_task[c] < 0 ? TimestampTzGetDatum(t->fin_at) :
				(isnull[c] ? (Datum) 0 : t->v[from_task[c]]);
		}
		/* wait: submission to the start of the attempt (or its end) */
		isnull[16] = t->n[F_SUBMITTED_AT];
		v[16] = isnull[16] ? (Datum) 0 :
			Float8GetDatum(hx_seconds(DatumGetTimestampTz(t->v[F_SUBMITTED_AT]), start));
		isnull[17] = false;
		v[17] = Float8GetDatum(t->wall);
		/* latency: submission to the result, for done and dead attempts */
		isnull[18] = t->n[F_SUBMITTED_AT] || strcmp(t->status, "failed") == 0;
		v[18] = isnull[18] ? (Datum) 0 :
			Float8GetDatum(hx_seconds(DatumGetTimestampTz(t->v[F_SUBMITTED_AT]), t->fin_at));
		isnull[19] = t->price_id_null;
		v[19] = t->price_id;
		isnull[20] = isnull[21] = isnull[22] = isnull[23] = isnull[24] = false;
		v[20] = t->currency;
		v[21] = t->cost;
		v[22] = t->baseline;
		v[23] = t->batch;
		v[24] = BoolGetDatum(!t->n[F_REPORTED_COST]);
		for (c = 0; c < desc->natts; c++)
		{
			nulls[c] = from[c] < 0 || isnull[from[c]];
			values[c] = nulls[c] ? (Datum) 0 : v[from[c]];
		}
		rows[i] = HeapTupleGetDatum(heap_form_tuple(desc, values, nulls));
	}
	arg = PointerGetDatum(construct_array(rows, n, type, -1, false, TYPALIGN_DOUBLE));

	if (insert_bookings.argtypes[0] != array_type)
	{
		/* first use, or the extension was created again */
		if (insert_bookings.plan != NULL)
			SPI_freeplan(insert_bookings.plan);
		insert_bookings.plan = NULL;
		insert_bookings.argtypes[0] = array_type;
	}
	if (hx_stmt_exec(&insert_bookings, &arg, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "hx_cost_book: booking the attempts failed");
}

/*
 * The columns of a task that the attempts of one hx_cost_chunk row share
 * (besides their moment, run time and price), with their types' storage,
 * in the order of insert_chunk's $2 to $12.
 */
static const struct
{
	int			col;
	bool		byval;
	int16		len;
}			chunk_key[] =
{
	{F_STARTED_AT, true, 8}, {F_TASK_TYPE, false, -1}, {F_ROUTE, false, -1},
	{F_WINDOW, false, -1}, {F_RUN_ID, true, 8}, {F_RULE, false, -1},
	{F_DEPARTMENT, false, -1}, {F_ORIGIN, false, -1}, {F_EXECUTOR, false, -1},
	{F_SUBMITTED_BY, true, 4}, {F_SLA, false, 16}
};

/* $1 is the moment, chunk_key fills $2 to $12, wall_seconds is $13 */
StaticAssertDecl(lengthof(chunk_key) == 11, "chunk_key must match insert_chunk's $2 to $12");

/*
 * hx_book_chunks
 *		Books the done attempts a chunk moved (an INSERT into
 *		hx_task_history) as hx_cost_chunk rows: one per group of attempts
 *		that share every booking column but the task's own, which go into
 *		its arrays with booking numbers drawn from hx_cost_attempt's
 *		sequence, one per attempt, as a single booking's would be.  A
 *		chunk's tasks usually make one group.  Attempts with a cost their
 *		executor reported, or without a start or submission time, are
 *		moved to the front of a and left to hx_book_insert: returns how
 *		many.  In SPI, in the trigger's memory.
 */
static int
hx_book_chunks(HxAttempt *a, int n)
{
	int		   *group = palloc(sizeof(int) * n);
	int		   *first = palloc(sizeof(int) * n);	/* each group's first attempt */
	int		   *count = palloc0(sizeof(int) * n);
	int			ng = 0;
	int			single = 0;
	Oid			seq = InvalidOid;
	int			i;
	int			k;

	for (i = 0; i < n; i++)
	{
		group[i] = -1;
		if (a[i].stream || strcmp(a[i].status, "done") != 0 || !a[i].n[F_REPORTED_COST] ||
			a[i].n[F_STARTED_AT] || a[i].n[F_SUBMITTED_AT])
			continue;
		for (k = ng - 1; k >= 0; k--)
			if (hx_chunk_mate(&a[first[k]], &a[i]))
				break;
		if (k < 0)
		{
			k = ng++;
			first[k] = i;
		}
		group[i] = k;
		count[k]++;
	}

	for (k = 0; k < ng; k++)
	{
		HxAttempt  *f = &a[first[k]];
		Datum	   *ids = palloc(sizeof(Datum) * count[k]);
		Datum	   *tasks = palloc(sizeof(Datum) * count[k]);
		Datum	   *attempts = palloc(sizeof(Datum) * count[k]);
		Datum	   *submitted = palloc(sizeof(Datum) * count[k]);
		Datum	   *deadlines = palloc(sizeof(Datum) * count[k]);
		bool	   *no_deadline = palloc(sizeof(bool) * count[k]);
		int			dims[1] = {count[k]};
		int			lbs[1] = {1};
		Datum		v[23];
		char		nulls[23];
		int			m = 0;
		int			c;

		if (!OidIsValid(seq))
		{
			Oid			rel = get_relname_relid("hx_cost_attempt", hx_cached_schema());

			seq = getIdentitySequence(rel, get_attnum(rel, "id"), false);
		}
		for (i = first[k]; i < n && m < count[k]; i++)
		{
			if (group[i] != k)
				continue;
			ids[m] = Int64GetDatum(nextval_internal(seq, false));
			tasks[m] = a[i].v[F_ID];
			attempts[m] = a[i].v[F_ATTEMPTS];
			submitted[m] = a[i].v[F_SUBMITTED_AT];
			no_deadline[m] = a[i].n[F_DEADLINE];
			deadlines[m] = a[i].n[F_DEADLINE] ? (Datum) 0 : a[i].v[F_DEADLINE];
			m++;
		}

		memset(nulls, ' ', sizeof(nulls));
		v[0] = TimestampTzGetDatum(f->fin_at);
		for (c = 0; c < lengthof(chunk_key); c++)
		{
			int			col = chunk_key[c].col;

			v[1 + c] = f->v[col];
			nulls[1 + c] = f->n[col] ? 'n' : ' ';
		}
		v[12] = Float8GetDatum(f->wall);
		v[13] = f->price_id;
		nulls[13] = f->price_id_null ? 'n' : ' ';
		v[14] = f->currency;
		v[15] = f->cost;
		v[16] = f->baseline;
		v[17] = f->batch;
		v[18] = PointerGetDatum(construct_array(ids, m, INT8OID, 8, true, TYPALIGN_DOUBLE));
		v[19] = PointerGetDatum(construct_array(tasks, m, INT8OID, 8, true, TYPALIGN_DOUBLE));
		v[20] = PointerGetDatum(construct_array(attempts, m, INT4OID, 4, true, TYPALIGN_INT));
		v[21] = PointerGetDatum(construct_array(submitted, m, TIMESTAMPTZOID, 8, true,
												TYPALIGN_DOUBLE));
		v[22] = PointerGetDatum(construct_md_array(deadlines, no_deadline, 1, dims, lbs,
												   TIMESTAMPTZOID, 8, true, TYPALIGN_DOUBLE));
		if (hx_stmt_exec(&insert_chunk, v, nulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hx_cost_book: booking a chunk failed");
	}

	/* the rest first, for hx_book_insert; every attempt stays in a for the sums */
	for (i = 0; i < n; i++)
		if (group[i] < 0)
		{
			HxAttempt	t = a[single];

			a[single++] = a[i];
			a[i] = t;
		}
	return single;
}

/*
 * hx_chunk_mate
 *		Whether two attempts can share an hx_cost_chunk row: the same
 *		moment, run time, price and task columns of chunk_key.
 */
static bool
hx_chunk_mate(HxAttempt *x, HxAttempt *y)
{
	int			c;

	/* attempts priced alike share the price's datums (hx_book_price) */
#define HX_SAME_VARLENA(a, b) ((a) == (b) || datumIsEqual((a), (b), false, -1))
	if (x->fin_at != y->fin_at || x->wall != y->wall ||
		x->price_id_null != y->price_id_null ||
		(!x->price_id_null && DatumGetInt64(x->price_id) != DatumGetInt64(y->price_id)) ||
		!HX_SAME_VARLENA(x->currency, y->currency) ||
		!HX_SAME_VARLENA(x->cost, y->cost) ||
		!HX_SAME_VARLENA(x->baseline, y->baseline) ||
		!HX_SAME_VARLENA(x->batch, y->batch))
		return false;
#undef HX_SAME_VARLENA
	for (c = 0; c < lengthof(chunk_key); c++)
	{
		int			col = chunk_key[c].col;

		if (x->n[col] != y->n[col] ||
			(!x->n[col] && !datumIsEqual(x->v[col], y->v[col], chunk_key[c].byval, chunk_key[c].len)))
			return false;
	}
	return true;
}

/*
 * hx_book_sums
 *		Adds the bookings to hx_stat_minute (per minute, task type and
 *		route) and, for tasks with a department, to hx_cost_daily (per
 *		local day, department and currency), in the writer's shard; rows in
 *		key order, so that concurrent writers never deadlock.
 */
static void
hx_book_sums(HxAttempt *a, int n)
{
	int			room = 8;		/* sums are few: minutes, types, departments */
	HxSum	   *m = palloc0(sizeof(HxSum) * room);
	HxSum	   *d = palloc0(sizeof(HxSum) * room);
	int			nm = 0;
	int			nd = 0;
	int16		shard = MyProcPid % 16;
	Datum		zone = CStringGetTextDatum(hx_time_zone != NULL ? hx_time_zone : "UTC");
	TimestampTz minute_from = 0;
	TimestampTz day_from = 0;
	TimestampTz day_to = 0;
	DateADT		day = 0;
	bool		have_minute = false;
	bool		have_day = false;
	int			i;
	int			k;

	for (i = 0; i < n; i++)
	{
		TimestampTz at = a[i].fin_at;
		TimestampTz minute;
		const char *type = TextDatumGetCString(a[i].v[F_TASK_TYPE]);
		const char *route = a[i].stream ? "stream" : "batch";
		TimestampTz start = a[i].n[F_STARTED_AT] ? a[i].fin_at : DatumGetTimestampTz(a[i].v[F_STARTED_AT]);
		const char *department;
		const char *currency;
		HxSum	   *s;

		/* date_trunc('minute', at), computed once per minute */
		if (!have_minute || at < minute_from || at >= minute_from + USECS_PER_MINUTE)
		{
			minute_from = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_trunc,
																  CStringGetTextDatum("minute"),
																  TimestampTzGetDatum(at)));
			have_minute = true;
		}
		minute = minute_from;
		for (k = 0; k < nm; k++)
			if (m[k].minute == minute && strcmp(m[k].task_type, type) == 0 &&
				strcmp(m[k].route, route) == 0)
				break;
		if (k == nm)
		{
			if (nm == room || nd == room)
				hx_sums_grow(&m, &d, &room);
			s = &m[nm++];
			s->minute = minute;
			s->task_type = type;
			s->route = route;
			s->cost = hx_numeric_zero();
		}
		s = &m[k];
		if (strcmp(a[i].status, "done") == 0)
			s->done++;
		else if (strcmp(a[i].status, "failed") == 0)
			s->failed++;
		else
			s->dead++;
		s->wall += a[i].wall;
		s->cost = DirectFunctionCall2(numeric_add, s->cost, a[i].cost);
		if (!a[i].n[F_SUBMITTED_AT])
			s->wait_hist[hx_hist_bucket_of(hx_seconds(DatumGetTimestampTz(a[i].v[F_SUBMITTED_AT]),
													  start) * 1000)]++;
		s->run_hist[hx_hist_bucket_of(a[i].wall * 1000)]++;

		if (a[i].n[F_DEPARTMENT])
			continue;

		/* (at AT TIME ZONE zone)::date, computed once per local day */
		if (!have_day || at < day_from || at >= day_to)
		{
			Timestamp	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone, zone,
																	  TimestampTzGetDatum(at)));

			day = DatumGetDateADT(DirectFunctionCall1(timestamp_date, TimestampGetDatum(local)));
			day_from = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, zone,
															   DirectFunctionCall1(date_timestamp, DateADTGetDatum(day))));
			day_to = DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, zone,
															 DirectFunctionCall1(date_timestamp, DateADTGetDatum(day + 1))));
			have_day = true;
		}
		department = TextDatumGetCString(a[i].v[F_DEPARTMENT]);
		currency = TextDatumGetCString(a[i].currency);
		for (k = 0; k < nd; k++)
			if (d[k].day == day && strcmp(d[k].task_type, department) == 0 &&
				strcmp(d[k].route, currency) == 0)
				break;
		if (k == nd)
		{
			if (nm == room || nd == room)
				hx_sums_grow(&m, &d, &room);
			s = &d[nd++];
			s->day = day;
			s->task_type = department;
			s->route = currency;
			s->cost = hx_numeric_zero();
		}
		d[k].cost = DirectFunctionCall2(numeric_add, d[k].cost, a[i].cost);
	}

	/* in key order: minute, type, route; department, day, currency */
	qsort(m, nm, sizeof(HxSum), hx_minute_cmp);
	qsort(d, nd, sizeof(HxSum), hx_day_cmp);
	for (i = 0; i < nm; i++)
	{
		Datum		args[11];

		args[0] = TimestampTzGetDatum(m[i].minute);
		args[1] = CStringGetTextDatum(m[i].task_type);
		args[2] = CStringGetTextDatum(m[i].route);
		args[3] = Int16GetDatum(shard);
		args[4] = Int64GetDatum(m[i].done);
		args[5] = Int64GetDatum(m[i].failed);
		args[6] = Int64GetDatum(m[i].dead);
		args[7] = Float8GetDatum(m[i].wall);
		args[8] = m[i].cost;
		args[9] = PointerGetDatum(hx_hist_array(m[i].wait_hist));
		args[10] = PointerGetDatum(hx_hist_array(m[i].run_hist));
		if (hx_stmt_exec(&add_minute, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hx_cost_book: adding to hx_stat_minute failed");
	}
	for (i = 0; i < nd; i++)
	{
		Datum		args[5];

		args[0] = DateADTGetDatum(d[i].day);
		args[1] = CStringGetTextDatum(d[i].task_type);
		args[2] = CStringGetTextDatum(d[i].route);
		args[3] = Int16GetDatum(shard);
		args[4] = d[i].cost;
		if (hx_stmt_exec(&add_day, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "hx_cost_book: adding to hx_cost_daily failed");
	}
}

/*
 * hx_attempt_fill
 *		Fills t with a finished attempt's columns from slot (attnum: where
 *		each of task_columns is).  Values equal to the previous attempt's
 *		(a chunk's rows share most of theirs) share its copy, which
 *		hx_chunk_mate then compares by pointer.  In the caller's memory
 *		context.
 */
static void
hx_attempt_fill(HxAttempt *t, HxAttempt *prev, TupleTableSlot *slot, const AttrNumber *attnum,
				bool was_running, TimestampTz now)
{
	TupleDesc	desc = slot->tts_tupleDescriptor;
	int			c;

	slot_getallattrs(slot);
	for (c = 0; c < F_WAS_RUNNING; c++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, attnum[c] - 1);
		Datum		v = slot->tts_values[attnum[c] - 1];

		t->n[c] = slot->tts_isnull[attnum[c] - 1];
		if (t->n[c])
			t->v[c] = (Datum) 0;
		else if (att->attbyval)
			t->v[c] = v;
		else if (prev != NULL && !prev->n[c] && datumIsEqual(prev->v[c], v, false, att->attlen))
			t->v[c] = prev->v[c];
		else
			t->v[c] = datumCopy(v, false, att->attlen);
	}
	t->n[F_WAS_RUNNING] = false;
	t->v[F_WAS_RUNNING] = BoolGetDatum(was_running);
	t->fin_at = t->n[F_FINISHED_AT] ? now : DatumGetTimestampTz(t->v[F_FINISHED_AT]);
	if (prev != NULL && prev->v[F_STATUS] == t->v[F_STATUS])
		t->status = prev->status;
	else
		t->status = TextDatumGetCString(t->v[F_STATUS]);
	if (prev != NULL && prev->v[F_ROUTE] == t->v[F_ROUTE])
		t->stream = prev->stream;
	else
		t->stream = strcmp(TextDatumGetCString(t->v[F_ROUTE]), "stream") == 0;
}

/*
 * What a statement that moves done tasks into hx_task_history returns
 * (HX_BOOK_RETURNING, from column "offset" on): every row an attempt that
 * finished, gathered by hx_book_receive for hx_book_moved.  Moves are
 * booked this way, not by a trigger on hx_task_history: an INSERT trigger
 * with a transition table copies every inserted row, payload and result
 * included, into a tuplestore, and reading it back cost a batch worker
 * about a sixth of its time.
 */
typedef struct HxBookReceiver
{
	DestReceiver pub;
	int			offset;
	AttrNumber	attnum[F_WAS_RUNNING];
	MemoryContext cxt;			/* the attempts' values */
	HxAttempt  *a;
	int			n;
	int			room;
	bool		kept;			/* a is the backend's kept array */
	TimestampTz now;
} HxBookReceiver;

/*
 * The attempts' array of the last booking of a move, kept (up to
 * HX_BOOK_KEEP attempts) for the next: a chunk's is over a megabyte, and
 * fresh memory of that size costs a page fault per page every time.
 */
#define HX_BOOK_KEEP 8192
static HxAttempt *book_kept = NULL;
static int	book_kept_room = 0;
static bool book_kept_busy = false;

static bool hx_book_receive(TupleTableSlot *slot, DestReceiver *self);
static void hx_book_startup(DestReceiver *self, int operation, TupleDesc typeinfo);
static void hx_book_nothing(DestReceiver *self);

/*
 * hx_book_receiver
 *		A receiver for the rows of a statement that moves done tasks, whose
 *		columns from "offset" (0-based) on are HX_BOOK_RETURNING; room for
 *		"expected" of them to begin with.  Rows whose id is NULL (a
 *		completion refused, in a join) are not attempts.  hx_book_moved
 *		books what it gathered and frees it.
 */
DestReceiver *
hx_book_receiver(int offset, int expected)
{
	HxBookReceiver *r = palloc0(sizeof(HxBookReceiver));
	int			c;

	r->pub.receiveSlot = hx_book_receive;
	r->pub.rStartup = hx_book_startup;
	r->pub.rShutdown = hx_book_nothing;
	r->pub.rDestroy = hx_book_nothing;
	r->pub.mydest = DestNone;
	r->offset = offset;
	for (c = 0; c < F_WAS_RUNNING; c++)
		r->attnum[c] = offset + c + 1;
	r->cxt = AllocSetContextCreate(CurrentMemoryContext, "hx_book moved", ALLOCSET_DEFAULT_SIZES);
	r->room = Max(expected, 16);
	if (!book_kept_busy && r->room <= HX_BOOK_KEEP)
	{
		if (book_kept_room < r->room)
		{
			if (book_kept != NULL)
				pfree(book_kept);
			book_kept = MemoryContextAlloc(TopMemoryContext, sizeof(HxAttempt) * r->room);
			book_kept_room = r->room;
		}
		r->a = book_kept;
		r->room = book_kept_room;
		r->kept = true;
		book_kept_busy = true;
	}
	else
		r->a = MemoryContextAlloc(r->cxt, sizeof(HxAttempt) * r->room);
	r->now = GetCurrentTimestamp();
	return (DestReceiver *) r;
}

/*
 * hx_book_receiver_for
 *		The same for rows of desc, which has the booking columns by their
 *		names (hx_task_history's rows, written by history.c): its rows are
 *		given to receiveSlot directly, without a statement's startup.
 */
DestReceiver *
hx_book_receiver_for(TupleDesc desc, int expected)
{
	HxBookReceiver *r = (HxBookReceiver *) hx_book_receiver(0, expected);
	int			c;

	for (c = 0; c < F_WAS_RUNNING; c++)
	{
		r->attnum[c] = SPI_fnumber(desc, task_columns[c]);
		if (r->attnum[c] <= 0)
		{
			hx_book_forget((DestReceiver *) r);
			elog(ERROR, "hx_book_receiver_for: no column %s", task_columns[c]);
		}
	}
	return (DestReceiver *) r;
}

/*
 * hx_book_startup
 *		Checks that the statement returns the booking columns where the
 *		receiver expects them.
 */
static void
hx_book_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	HxBookReceiver *r = (HxBookReceiver *) self;
	int			c;

	for (c = 0; c < F_WAS_RUNNING; c++)
		if (r->offset + c >= typeinfo->natts ||
			strcmp(NameStr(TupleDescAttr(typeinfo, r->offset + c)->attname), task_columns[c]) != 0)
			elog(ERROR, "hx_book_receiver: column %d is not %s", r->offset + c + 1, task_columns[c]);
}

static void
hx_book_nothing(DestReceiver *self)
{
}

/*
 * hx_book_receive
 *		Gathers one row: an attempt, unless its id is NULL.
 */
static bool
hx_book_receive(TupleTableSlot *slot, DestReceiver *self)
{
	HxBookReceiver *r = (HxBookReceiver *) self;
	MemoryContext old;

	if (slot_attisnull(slot, r->offset + F_ID + 1))
		return true;
	old = MemoryContextSwitchTo(r->cxt);
	if (r->n == r->room)
	{
		HxAttempt  *grown = palloc(sizeof(HxAttempt) * r->room * 2);

		memcpy(grown, r->a, sizeof(HxAttempt) * r->n);
		if (r->kept)
			book_kept_busy = false;
		else
			pfree(r->a);
		r->a = grown;
		r->room *= 2;
		r->kept = false;
	}
	hx_attempt_fill(&r->a[r->n], r->n > 0 ? &r->a[r->n - 1] : NULL, slot, r->attnum, false, r->now);
	r->n++;
	MemoryContextSwitchTo(old);
	return true;
}

/*
 * hx_book_tuples
 *		Gathers rows a statement returned into SPI's tuple table (n of
 *		them) into a receiver of hx_book_receiver, as if they had gone to
 *		it.
 */
void
hx_book_tuples(DestReceiver *dest, SPITupleTable *tuptable, uint64 n)
{
	TupleTableSlot *slot;
	uint64		k;

	if (n == 0)
		return;
	slot = MakeSingleTupleTableSlot(tuptable->tupdesc, &TTSOpsHeapTuple);
	dest->rStartup(dest, CMD_SELECT, tuptable->tupdesc);
	for (k = 0; k < n; k++)
	{
		ExecStoreHeapTuple(tuptable->vals[k], slot, false);
		dest->receiveSlot(slot, dest);
	}
	ExecDropSingleTupleTableSlot(slot);
}

/*
 * hx_book_moved
 *		Books the attempts a receiver of hx_book_receiver gathered, unless
 *		the ledger is off (its trigger on hx_task, hx_cost_book, disabled
 *		or not firing for session_replication_role), and frees them.
 *		Returns how many it gathered.  In a transaction, the rule cache
 *		loaded; runs the bookings as the extension's owner.
 */
int
hx_book_moved(DestReceiver *dest)
{
	HxBookReceiver *r = (HxBookReceiver *) dest;
	MemoryContext caller = CurrentMemoryContext;
	int			n = r->n;

	PG_TRY();
	{
		if (n > 0 && hx_ledger_on())
		{
			HxUserSave save;

			MemoryContextSwitchTo(r->cxt);
			hx_become_owner(&save);
			hx_book_attempts(r->a, n, true);
			hx_restore_user(&save);
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(caller);
		hx_book_forget(dest);
		PG_RE_THROW();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller);
	hx_book_forget(dest);
	return n;
}

/*
 * hx_book_forget
 *		Frees a receiver of hx_book_receiver and what it gathered, booking
 *		nothing (the statement failed).  Not in the receiver's memory
 *		context.
 */
void
hx_book_forget(DestReceiver *dest)
{
	HxBookReceiver *r = (HxBookReceiver *) dest;

	if (r->kept)
		book_kept_busy = false;
	MemoryContextDelete(r->cxt);
	pfree(r);
}

/*
 * hx_ledger_on
 *		Whether the ledger books: its trigger on hx_task would fire in this
 *		session.  Disabling it (ALTER TABLE hx_task DISABLE TRIGGER
 *		hx_cost_book) stops every booking, the moves' included; so does
 *		session_replication_role = replica (hx_book_quarantine).
 */
static bool
hx_ledger_on(void)
{
	Oid			relid = get_relname_relid("hx_task", hx_cached_schema());
	Relation	rel;
	bool		on = false;
	int			i;

	if (!OidIsValid(relid))
		return false;
	rel = relation_open(relid, AccessShareLock);
	for (i = 0; rel->trigdesc != NULL && i < rel->trigdesc->numtriggers; i++)
	{
		Trigger    *tg = &rel->trigdesc->triggers[i];

		if (strcmp(tg->tgname, "hx_cost_book") != 0)
			continue;
		if (tg->tgenabled == TRIGGER_FIRES_ALWAYS)
			on = true;
		else if (tg->tgenabled == TRIGGER_FIRES_ON_ORIGIN)
			on = SessionReplicationRole != SESSION_REPLICATION_ROLE_REPLICA;
		else if (tg->tgenabled == TRIGGER_FIRES_ON_REPLICA)
			on = SessionReplicationRole == SESSION_REPLICATION_ROLE_REPLICA;
	}
	relation_close(rel, AccessShareLock);
	return on;
}

/* qsort order of statistics rows: minute, task type, route */
static int
hx_minute_cmp(const void *x, const void *y)
{
	const HxSum *a = x;
	const HxSum *b = y;
	int			c;

	if (a->minute != b->minute)
		return a->minute < b->minute ? -1 : 1;
	c = strcmp(a->task_type, b->task_type);
	return c != 0 ? c : strcmp(a->route, b->route);
}

/* qsort order of daily cost rows: department, day, currency */
static int
hx_day_cmp(const void *x, const void *y)
{
	const HxSum *a = x;
	const HxSum *b = y;
	int			c = strcmp(a->task_type, b->task_type);

	if (c != 0)
		return c;
	if (a->day != b->day)
		return a->day < b->day ? -1 : 1;
	return strcmp(a->route, b->route);
}

/*
 * hx_sums_grow
 *		Doubles the room of both lists of sums (new entries zeroed).
 */
static void
hx_sums_grow(HxSum **m, HxSum **d, int *room)
{
	*m = repalloc(*m, sizeof(HxSum) * *room * 2);
	*d = repalloc(*d, sizeof(HxSum) * *room * 2);
	memset(*m + *room, 0, sizeof(HxSum) * *room);
	memset(*d + *room, 0, sizeof(HxSum) * *room);
	*room *= 2;
}

/*
 * hx_seconds
 *		extract(epoch FROM to - from)::double precision: the same double.
 */
static double
hx_seconds(TimestampTz from, TimestampTz to)
{
	return (double) (to - from) / (double) USECS_PER_SEC;
}

static Datum
hx_numeric_zero(void)
{
	return DirectFunctionCall1(int4_numeric, Int32GetDatum(0));
}
