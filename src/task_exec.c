/*-------------------------------------------------------------------------
 *
 * task_exec.c
 *	  Runs one task's handler (or one batch handler call for many tasks),
 *	  inside the caller's transaction:
 *
 *	  - the handler runs through SPI in its own subtransaction, under the
 *		type's timeout, sealed (hx_seal): as the role that registered the
 *		type, in a security-restricted operation (no SET ROLE, no temporary
 *		objects for the next handler to trip over), and whatever settings
 *		it changed - search_path included, SET or SET LOCAL - and session
 *		advisory locks it took are undone when it returns or fails, so
 *		every handler starts with the worker's own settings;
 *	  - an error (or the timeout) rolls back only that subtransaction, so
 *		one failing task never undoes another task's work.
 *
 *	  Bookings of the outcomes are task_state.c's.  hx_exec_alone runs one
 *	  task in a transaction of its own and makes sure its outcome is
 *	  booked one way or another.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
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

static SPIPlanPtr hx_handler_plan(Oid handler, Oid argtype);
static void hx_exec_call(HxTask *task, Oid fn, Oid argtype, Datum arg,
						 int nresults, const char *activity, HxOutcome *out,
						 MemoryContext cxt);
static void hx_check_results(HxTask *task, Datum result, bool isnull,
							 int nresults);

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
 *		Calls fn(arg) for a task (or a chunk led by task), sealed, in a
 *		subtransaction with the type's timeout; see hx_exec_handler and the
 *		file's header.  nresults >= 0: fn is a batch handler that must
 *		return that many results.
 */
static void
hx_exec_call(HxTask *task, Oid fn, Oid argtype, Datum arg, int nresults,
			 const char *activity, HxOutcome *out, MemoryContext cxt)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	TimestampTz start = GetCurrentTimestamp();
	volatile bool timeout_armed = false;

	memset(out, 0, sizeof(*out));
	pgstat_report_activity(STATE_RUNNING, activity);

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);

	PG_TRY();
	{
		SPIPlanPtr	plan;
		HxSeal		seal;
		int			rc;
		bool		isnull;

		if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(task->run_as)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("role with OID %u that task type \"%s\" runs as does not exist",
							task->run_as, task->task_type),
					 errhint("Register the type again with hx_register() as an existing role.")));

		plan = hx_handler_plan(fn, argtype);
		hx_seal(&seal, task->run_as, NULL);
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
		hx_unseal(&seal);

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

	/* session advisory locks the handler kept would outlive its task */
	LockReleaseSession(USER_LOCKMETHOD);
}

/*
 * hx_exec_alone
 *		Runs one claimed task in a transaction of its own and books its
 *		outcome there; book, when not NULL, runs in the transaction that
 *		books the task, with how many were done and failed.  Should that
 *		transaction fail - the outcome cannot be booked - its effects roll
 *		back and the attempt is booked as failed with that error in a new
 *		transaction; should that fail too, the task is quarantined
 *		(hx_book_quarantine).  So one task never stops the worker that runs
 *		it.  Returns whether the task is done.  No transaction may be open;
 *		cxt must outlive the transactions.
 */
bool
hx_exec_alone(HxTask *task, MemoryContext cxt, HxBookHook book, void *arg)
{
	HxOutcome	out;
	ErrorData  *volatile first = NULL;
	ErrorData  *volatile again = NULL;
	TimestampTz no_retry = 0;

	PG_TRY();
	{
		hx_worker_begin_xact("running a task alone");
		hx_exec_handler(task, &out, cxt);
		if (out.ok)
			(void) hx_book_done(task, &out, 1);
		else
			(void) hx_book_failures(task, &out, 1, &no_retry);
		if (book != NULL)
			book(arg, out.ok ? 1 : 0, out.ok ? 0 : 1);
		hx_worker_end_xact();
	}
	PG_CATCH();
	{
		first = hx_worker_catch(cxt);
	}
	PG_END_TRY();
	if (first == NULL)
		return out.ok;

	memset(&out, 0, sizeof(out));
	out.sqlerrcode = first->sqlerrcode;
	out.message = psprintf("the outcome could not be booked: %s", first->message);
	PG_TRY();
	{
		hx_worker_begin_xact("booking a task that could not be booked");
		(void) hx_book_failures(task, &out, 1, &no_retry);
		if (book != NULL)
			book(arg, 0, 1);
		hx_worker_end_xact();
	}
	PG_CATCH();
	{
		again = hx_worker_catch(cxt);
	}
	PG_END_TRY();
	if (again == NULL)
		return false;

	hx_worker_begin_xact("setting aside a task that could not be booked");
	hx_book_quarantine(task->id, first->message, first->sqlerrcode);
	if (book != NULL)
		book(arg, 0, 1);
	hx_worker_end_xact();
	return false;
}

