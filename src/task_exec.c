/*-------------------------------------------------------------------------
 *
 * task_exec.c
 *	  Runs one task's handler and records the outcome, inside the caller's
 *	  transaction:
 *
 *	  - the handler runs through SPI in its own subtransaction, as the role
 *		that registered the type, under the type's timeout; an error (or
 *		the timeout) rolls back only that subtransaction, so one failing
 *		task never undoes another task's work;
 *	  - the successes of a batch are written onto their tasks with one
 *		UPDATE, and each failure (failed/dead + error, a row in hx_error,
 *		NOTIFY hx_alert for a dead task) after its rollback, all in the
 *		transaction that holds the handlers' effects: effects and "done"
 *		commit together or not at all, so they happen exactly once.
 *
 *	  Every booking checks that the task is still running for this worker;
 *	  when one is not, the whole transaction is aborted.
 *
 *	  Callers hold an open transaction with SPI connected and an active
 *	  snapshot.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "hybridexec.h"
#include "task_exec.h"

/* kept plan calling one handler function */
typedef struct HxHandlerPlan
{
	Oid			handler;		/* hash key */
	SPIPlanPtr	plan;
} HxHandlerPlan;

static HTAB *handler_plans = NULL;
static SPIPlanPtr done_plan = NULL;
static SPIPlanPtr fail_plan = NULL;
static Oid	plans_schema = InvalidOid;

static SPIPlanPtr hx_handler_plan(Oid handler, Oid argtype);
static void hx_exec_call(HxTask *task, Oid fn, Oid argtype, Datum arg,
						 int nresults, const char *activity, HxOutcome *out,
						 MemoryContext cxt);
static void hx_check_results(HxTask *task, Datum result, bool isnull,
							 int nresults);
static void hx_alert_dead(HxTask *task, const char *error);

/*
 * hx_exec_prepare
 *		Prepares (once per extension schema) the plans that record outcomes.
 *		Runs inside SPI with the rule cache loaded for that schema.
 */
void
hx_exec_prepare(Oid schema)
{
	Oid			done_types[3] = {INT8ARRAYOID, JSONBARRAYOID, INT4OID};
	Oid			fail_types[11] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, BOOLOID, FLOAT8OID, INT4OID};
	char	   *sql;

	if (done_plan != NULL && plans_schema == schema)
		return;
	if (done_plan != NULL)
	{
		SPI_freeplan(done_plan);
		SPI_freeplan(fail_plan);
		done_plan = fail_plan = NULL;
	}

	sql = psprintf("UPDATE %s t SET status = 'done', result = d.result, "
				   "finished_at = clock_timestamp() "
				   "FROM unnest($1, $2) AS d (id, result) "
				   "WHERE t.id = d.id AND t.status = 'running' AND t.worker_pid = $3",
				   hx_qualified("hx_task"));
	done_plan = hx_prepare(sql, 3, done_types);
	if (done_plan == NULL)
		elog(ERROR, "could not prepare the done update");

	sql = psprintf("WITH e AS (INSERT INTO %s (task_id, task_type, attempt, "
				   "sqlstate, message, detail, hint, context) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)) "
				   "UPDATE %s SET status = CASE WHEN $9 THEN 'dead' ELSE 'failed' END, "
				   "last_error = $5, "
				   "run_after = clock_timestamp() + $10 * interval '1 millisecond', "
				   "finished_at = CASE WHEN $9 THEN clock_timestamp() END "
				   "WHERE id = $1 AND status = 'running' AND worker_pid = $11",
				   hx_qualified("hx_error"), hx_qualified("hx_task"));
	fail_plan = hx_prepare(sql, 11, fail_types);
	if (fail_plan == NULL)
		elog(ERROR, "could not prepare the failure update");

	SPI_keepplan(done_plan);
	SPI_keepplan(fail_plan);
	plans_schema = schema;
}

/*
 * hx_tasks_from_spi
 *		Copies the task rows SPI_tuptable holds into an array allocated in
 *		cxt; returns how many.  The rows' columns are, in this order: id,
 *		task_type, payload, attempts (the one about to run), max_attempts,
 *		handler, run_as, timeout_ms, batch_handler and, optionally,
 *		micro_batch_size.  Every task is marked as the calling worker's.
 */
int
hx_tasks_from_spi(HxTask **tasks, MemoryContext cxt, bool deferred)
{
	HxTask	   *out = MemoryContextAllocZero(cxt, sizeof(HxTask) * Max(SPI_processed, 1));
	TupleDesc	desc = SPI_tuptable->tupdesc;
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		MemoryContext old = MemoryContextSwitchTo(cxt);
		bool		isnull;
		Datum		d;

		out[i].id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		out[i].task_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
		out[i].payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tup, desc, 3, &isnull)));
		out[i].attempts = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
		out[i].max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
		d = SPI_getbinval(tup, desc, 6, &isnull);
		out[i].handler = isnull ? InvalidOid : DatumGetObjectId(d);
		out[i].run_as = DatumGetObjectId(SPI_getbinval(tup, desc, 7, &isnull));
		out[i].timeout_ms = DatumGetFloat8(SPI_getbinval(tup, desc, 8, &isnull));
		d = SPI_getbinval(tup, desc, 9, &isnull);
		out[i].batch_handler = isnull ? InvalidOid : DatumGetObjectId(d);
		if (desc->natts >= 10)
			out[i].micro_batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 10, &isnull));
		out[i].worker_pid = MyProcPid;
		out[i].deferred = deferred;
		MemoryContextSwitchTo(old);
	}
	*tasks = out;
	return (int) SPI_processed;
}

/*
 * hx_handler_plan
 *		The kept plan "SELECT handler($1)" for a handler function taking
 *		argtype (jsonb, or jsonb[] for a batch handler).  A dropped function
 *		makes the plan fail at execution, which fails the task with the
 *		core's own message.
 */
static SPIPlanPtr
hx_handler_plan(Oid handler, Oid argtype)
{
	HxHandlerPlan *entry;
	bool		found;

	if (handler_plans == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(HxHandlerPlan);
		handler_plans = hash_create("hybridexec handler plans", 16, &ctl,
									HASH_ELEM | HASH_BLOBS);
	}

	entry = hash_search(handler_plans, &handler, HASH_ENTER, &found);
	if (!found || entry->plan == NULL)
	{
		char	   *nsp = get_namespace_name(get_func_namespace(handler));
		char	   *name = get_func_name(handler);
		SPIPlanPtr	plan;

		entry->plan = NULL;
		if (nsp == NULL || name == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("handler function with OID %u does not exist", handler),
					 errhint("Register the task type again with hx_register() and an existing handler.")));
		plan = hx_prepare(psprintf("SELECT %s($1)",
									quote_qualified_identifier(nsp, name)),
						   1, &argtype);
		if (plan == NULL)
			elog(ERROR, "could not prepare a call of handler %s.%s: %s",
				 nsp, name, SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		entry->plan = plan;
	}
	return entry->plan;
}

/*
 * hx_exec_handler
 *		Calls the task's handler (or, for a type with only a batch handler,
 *		the batch handler with a one-element array) in a subtransaction with
 *		the type's timeout and role.  Fills *out (allocated in cxt); never
 *		throws for handler errors, only for our own (fatal) problems.
 */
void
hx_exec_handler(HxTask *task, HxOutcome *out, MemoryContext cxt)
{
	char	   *activity = psprintf("hybridexec: task %lld (%s), attempt %d",
									(long long) task->id, task->task_type,
									task->attempts);

	if (OidIsValid(task->handler) || !OidIsValid(task->batch_handler))
		hx_exec_call(task, task->handler, JSONBOID, task->payload, -1, activity,
					 out, cxt);
	else
		hx_exec_batch(task, 1, out, cxt);
}

/*
 * hx_exec_batch
 *		Runs tasks[0..n-1], all of one type with a batch handler, through
 *		one call of the batch handler: outs[i] is task i's result.  When the
 *		call fails - it raises, or returns a result array of the wrong
 *		length, which is an error inside the call so its effects roll back
 *		- the tasks are isolated: each runs alone (through the per-task
 *		handler if there is one), so that one bad task fails alone.
 */
void
hx_exec_batch(HxTask *tasks, int n, HxOutcome *outs, MemoryContext cxt)
{
	Datum	   *payloads = palloc(sizeof(Datum) * n);
	HxOutcome	chunk;
	ArrayType  *arr;
	Datum	   *results;
	bool	   *nulls;
	int			nresults;
	int			i;

	for (i = 0; i < n; i++)
		payloads[i] = tasks[i].payload;
	arr = construct_array(payloads, n, JSONBOID, -1, false, TYPALIGN_INT);

	hx_exec_call(&tasks[0], tasks[0].batch_handler, JSONBARRAYOID,
				 PointerGetDatum(arr), n,
				 psprintf("hybridexec: %d task(s) of %s from %lld, batch handler",
						  n, tasks[0].task_type, (long long) tasks[0].id),
				 &chunk, cxt);

	if (!chunk.ok && n > 1)
	{
		/* isolate the failing tasks */
		for (i = 0; i < n; i++)
			hx_exec_handler(&tasks[i], &outs[i], cxt);
		return;
	}
	if (!chunk.ok)
	{
		outs[0] = chunk;
		return;
	}
	/* hx_check_results made sure there is one result per payload */
	deconstruct_array(DatumGetArrayTypeP(chunk.result), JSONBOID, -1, false,
					  TYPALIGN_INT, &results, &nulls, &nresults);
	for (i = 0; i < n; i++)
	{
		memset(&outs[i], 0, sizeof(HxOutcome));
		outs[i].ok = true;
		outs[i].result_null = nulls[i];
		outs[i].result = nulls[i] ? (Datum) 0 : results[i];
	}
}

/*
 * hx_check_results
 *		Raises (inside the handler's subtransaction, so that the call's
 *		effects roll back) unless a batch handler returned a one-dimensional
 *		array of exactly nresults results.
 */
static void
hx_check_results(HxTask *task, Datum result, bool isnull, int nresults)
{
	int			got = -1;

	if (!isnull)
	{
		ArrayType  *arr = DatumGetArrayTypeP(result);

		got = ARR_NDIM(arr) == 0 ? 0 :
			ARR_NDIM(arr) == 1 ? ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) : -1;
	}
	if (got != nresults)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 got < 0
				 ? errmsg("batch handler of \"%s\" returned no one-dimensional array of results for %d payload(s)",
						  task->task_type, nresults)
				 : errmsg("batch handler of \"%s\" returned %d result(s) for %d payload(s)",
						  task->task_type, got, nresults),
				 errhint("A batch handler must return one result per payload, in the same order; the call's effects were rolled back.")));
}

/*
 * hx_exec_call
 *		Calls fn(arg) for a task (or a chunk led by task) in a
 *		subtransaction with the type's timeout and role; see
 *		hx_exec_handler.  nresults >= 0: fn is a batch handler that must
 *		return that many results.
 */
static void
hx_exec_call(HxTask *task, Oid fn, Oid argtype, Datum arg, int nresults,
			 const char *activity, HxOutcome *out, MemoryContext cxt)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Oid			save_userid;
	int			save_sec_context;
	TimestampTz start = GetCurrentTimestamp();
	volatile bool timeout_armed = false;

	memset(out, 0, sizeof(*out));
	GetUserIdAndSecContext(&save_userid, &save_sec_context);

	pgstat_report_activity(STATE_RUNNING, activity);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		SPIPlanPtr	plan;
		int			rc;
		bool		isnull;

		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(task->run_as)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %u that task type \"%s\" runs as does not exist",
							task->run_as, task->task_type),
					 errhint("Register the type again with hx_register() as an existing role.")));

		plan = hx_handler_plan(fn, argtype);
		SetUserIdAndSecContext(task->run_as,
							   save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
		if (task->timeout_ms > 0)
		{
			enable_timeout_after(STATEMENT_TIMEOUT,
								 (int) Min(task->timeout_ms, (double) INT_MAX));
			timeout_armed = true;
		}

		rc = SPI_execute_plan(plan, &arg, NULL, false, 1);

		if (timeout_armed)
			disable_timeout(STATEMENT_TIMEOUT, false);

		/*
		 * A timeout that fired just as the handler returned has left a
		 * cancel pending: take it here, where it fails this task, rather than
		 * in the bookings that follow.
		 */
		CHECK_FOR_INTERRUPTS();
		timeout_armed = false;
		SetUserIdAndSecContext(save_userid, save_sec_context);

		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "handler call returned %s", SPI_result_code_string(rc));

		out->result = SPI_getbinval(SPI_tuptable->vals[0],
									SPI_tuptable->tupdesc, 1, &isnull);
		out->result_null = isnull;
		if (nresults >= 0)
			hx_check_results(task, out->result, isnull, nresults);
		if (!isnull)
		{
			MemoryContextSwitchTo(cxt);
			out->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(out->result));
		}
		SPI_freetuptable(SPI_tuptable);
		out->ok = true;

		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		double		elapsed_ms;

		if (timeout_armed)
			disable_timeout(STATEMENT_TIMEOUT, false);

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();

		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;

		elapsed_ms = (double) (GetCurrentTimestamp() - start) / 1000.0;
		out->ok = false;
		out->sqlerrcode = edata->sqlerrcode;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && timeout_armed &&
			elapsed_ms >= task->timeout_ms * 0.99)
			out->message = MemoryContextStrdup(cxt,
											   psprintf("handler timed out after %.0f ms (type timeout %.0f ms)",
														elapsed_ms, task->timeout_ms));
		else
			out->message = edata->message ? edata->message : "unknown error";
		out->detail = edata->detail;
		out->hint = edata->hint;
		out->context = edata->context;
	}
	PG_END_TRY();
}

/*
 * hx_record_done
 *		Marks the successful tasks among tasks[0..n-1] done with their
 *		results, in one statement.  Every one of them must still be running
 *		for this worker; anything else aborts the transaction, handlers'
 *		effects included.  Returns how many.
 */
int
hx_record_done(HxTask *tasks, HxOutcome *outs, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *results = palloc(sizeof(Datum) * Max(n, 1));
	bool	   *nulls = palloc(sizeof(bool) * Max(n, 1));
	int			dims[1];
	int			lbs[1] = {1};
	int			ndone = 0;
	int			i;
	int			rc;
	Datum		values[3];

	for (i = 0; i < n; i++)
	{
		if (!outs[i].ok)
			continue;
		ids[ndone] = Int64GetDatum(tasks[i].id);
		results[ndone] = outs[i].result;
		nulls[ndone] = outs[i].result_null;
		ndone++;
	}
	if (ndone == 0)
		return 0;

	dims[0] = ndone;
	values[0] = PointerGetDatum(construct_array(ids, ndone, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_md_array(results, nulls, 1, dims, lbs,
												   JSONBOID, -1, false,
												   TYPALIGN_INT));
	values[2] = Int32GetDatum(MyProcPid);

	rc = hx_execute_plan(done_plan, values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE || SPI_processed != (uint64) ndone)
		elog(ERROR, "could not mark %d tasks done (%llu updated): they are no longer claimed by this worker",
			 ndone, (unsigned long long) SPI_processed);
	return ndone;
}

/*
 * hx_record_failure
 *		Books a failed handler call in the current transaction: the task is
 *		retried after a backoff that doubles with each attempt (*next_retry
 *		is lowered to that moment), or becomes dead when no attempt is left.
 */
void
hx_record_failure(HxTask *task, HxOutcome *out, TimestampTz *next_retry)
{
	int			rc;

	{
		bool		dead = task->attempts >= task->max_attempts;
		double		backoff = task->deferred ? 0.0 : (double) hx_retry_backoff_ms;
		Datum		values[11];
		char		nulls[11];
		int			i;

		for (i = 1; i < task->attempts && backoff < 60000.0; i++)
			backoff *= 2;
		backoff = Min(backoff, 60000.0);

		memset(nulls, ' ', sizeof(nulls));
		values[0] = Int64GetDatum(task->id);
		values[1] = CStringGetTextDatum(task->task_type);
		values[2] = Int32GetDatum(task->attempts);
		values[3] = CStringGetTextDatum(unpack_sql_state(out->sqlerrcode));
		values[4] = CStringGetTextDatum(out->message);
		values[5] = out->detail ? CStringGetTextDatum(out->detail) : (Datum) 0;
		nulls[5] = out->detail ? ' ' : 'n';
		values[6] = out->hint ? CStringGetTextDatum(out->hint) : (Datum) 0;
		nulls[6] = out->hint ? ' ' : 'n';
		values[7] = out->context ? CStringGetTextDatum(out->context) : (Datum) 0;
		nulls[7] = out->context ? ' ' : 'n';
		values[8] = BoolGetDatum(dead);
		values[9] = Float8GetDatum(dead ? 0.0 : backoff);
		values[10] = Int32GetDatum(task->worker_pid);

		rc = hx_execute_plan(fail_plan, values, nulls, false, 0);
		if (rc != SPI_OK_UPDATE || SPI_processed != 1)
			elog(ERROR, "could not record the failure of task %lld: it is no longer claimed by this worker",
				 (long long) task->id);

		if (dead)
			hx_alert_dead(task, out->message);
		else
		{
			TimestampTz at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 (int64) backoff);

			if (*next_retry == 0 || at < *next_retry)
				*next_retry = at;
		}
	}
}

/*
 * hx_alert_dead
 *		NOTIFY hx_alert with a JSON description of a task that gave up; sent
 *		when the current transaction commits.
 */
static void
hx_alert_dead(HxTask *task, const char *error)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfo(&buf, "{\"event\": \"dead\", \"task_id\": %lld, \"task_type\": ",
					 (long long) task->id);
	escape_json(&buf, task->task_type);
	appendStringInfo(&buf, ", \"attempts\": %d, \"error\": ", task->attempts);
	escape_json(&buf, error);
	appendStringInfoChar(&buf, '}');
	/* NOTIFY payloads are limited to 8000 bytes */
	if (buf.len >= 7900)
	{
		buf.len = 0;
		appendStringInfo(&buf, "{\"event\": \"dead\", \"task_id\": %lld}",
						 (long long) task->id);
	}
	Async_Notify("hx_alert", buf.data);
}
