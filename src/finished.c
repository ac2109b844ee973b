/*-------------------------------------------------------------------------
 *
 * finished.c
 *	  Telling those who wait that a task finished (done, dead or
 *	  cancelled): NOTIFY hx_done for clients that LISTEN, and the waiters
 *	  of hx_await() and hx_wait(), woken by the finishing commit.
 *
 *	  Whoever finishes tasks notes them here (hx_finish_note): the ledger
 *	  trigger for done and dead attempts, since it reads them anyway
 *	  (book.c), hx_cancel and the quarantine for the others (task_state.c).
 *	  A note belongs to the (sub)transaction that made it: a
 *	  subtransaction that rolls back takes its notes with it.  Just before
 *	  the commit the notes become as few NOTIFY hx_done payloads as the
 *	  8,000 bytes of one allow, when hybridexec.notify_done is on; once the
 *	  commit is visible, the waiters whose tasks may be among them are
 *	  woken.
 *
 *	  A waiter registers in shared memory with its latch and a 256-bit
 *	  filter of the ids it waits for; a committer that finished a task
 *	  whose bit is set sets its latch, and the waiter looks again with a
 *	  new snapshot.  The waiter registers before it looks, and the
 *	  committer looks for waiters after its commit is visible (with a
 *	  memory barrier between on each side), so no wake-up is lost.  A look
 *	  every hybridexec.poll_interval anyway is only a safety net; a waiter
 *	  that finds every slot taken looks every 5 ms instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "hybridexec.h"

/* a NOTIFY payload must be shorter than this (async.c) */
#define HX_NOTIFY_PAYLOAD_MAX	8000

/* how often a waiter without a slot looks */
#define HX_WAIT_POLL_MS		5

/* most tasks one hx_await() waits for */
#define HX_AWAIT_MAX_IDS	100000

/* one finished task, noted by the (sub)transaction at "level" */
typedef struct HxNote
{
	int64		id;
	const char *task_type;		/* in TopTransactionContext */
	const char *status;			/* a constant string */
	int			level;
} HxNote;

/* the current transaction's notes, in TopTransactionContext */
static HxNote *notes = NULL;
static int	nnotes = 0;
static int	notes_room = 0;

/* the filter bits of the tasks that the committing transaction finished */
static uint64 commit_mask[HX_WAIT_MASK_WORDS];
static bool commit_mask_set = false;

/* this backend's waiter slot, -1 = none */
static int	my_waiter = -1;
static bool waiter_exit_hooked = false;

/* one task hx_await waits for */
typedef struct HxAwaited
{
	int64		id;
	int			pos;			/* first place in the caller's array */
	bool		finished;
	bool		gone;			/* retention deleted it meanwhile */
	char	   *status;			/* last seen, in the caller's context */
	Datum		result;			/* when finished */
	bool		result_null;
} HxAwaited;

static HxStmt await_status = {
	"SELECT t.id, t.status, t.result, t.xmin, t.submitted_by, t.department "
	"FROM @extschema@.hx_task t WHERE t.id = ANY ($1)",
	1, {INT8ARRAYOID}
};

static void hx_finished_xact(XactEvent event, void *arg);
static void hx_finished_subxact(SubXactEvent event, SubTransactionId mySubid,
								SubTransactionId parentSubid, void *arg);
static void hx_notes_forget(void);
static void hx_notes_notify(void);
static inline int hx_filter_bit(int64 id);
static void hx_wake_waiters(const uint64 *mask);
static bool hx_waiter_register(const uint64 *mask);
static void hx_waiter_update(const uint64 *mask);
static void hx_waiter_unregister(void);
static void hx_waiter_exit(int code, Datum arg);
static int	hx_awaited_cmp(const void *a, const void *b);
static HxAwaited *hx_awaited_find(HxAwaited *w, int n, int64 id);
static void hx_await_loop(HxAwaited *w, int n, Interval *timeout,
						  Oid fn_oid, const char *function);
static bool hx_await_mask(HxAwaited *w, int n, uint64 *mask);

PG_FUNCTION_INFO_V1(hx_await);
PG_FUNCTION_INFO_V1(hx_wait);

/*
 * hx_finished_init
 *		Installs the transaction callbacks; called from _PG_init.
 */
void
hx_finished_init(void)
{
	RegisterXactCallback(hx_finished_xact, NULL);
	RegisterSubXactCallback(hx_finished_subxact, NULL);
}

/*
 * hx_finish_note
 *		Notes that the current (sub)transaction finished task "id" of type
 *		task_type (a text Datum) with status ("done", "dead" or
 *		"cancelled", a constant string).  In a transaction; cheap: a run's
 *		chunk notes thousands at once.
 */
void
hx_finish_note(int64 id, Datum task_type, const char *status)
{
	text	   *t = DatumGetTextPP(task_type);
	HxNote	   *n;

	if (nnotes == notes_room)
	{
		notes_room = notes_room == 0 ? 256 : notes_room * 2;
		notes = notes == NULL ?
			MemoryContextAlloc(TopTransactionContext, sizeof(HxNote) * notes_room) :
			repalloc(notes, sizeof(HxNote) * notes_room);
	}
	n = &notes[nnotes];
	n->id = id;
	n->status = status;
	n->level = GetCurrentTransactionNestLevel();
	/* most neighbours share their type: keep one copy of it */
	if (nnotes > 0 &&
		strlen(notes[nnotes - 1].task_type) == VARSIZE_ANY_EXHDR(t) &&
		memcmp(notes[nnotes - 1].task_type, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t)) == 0)
		n->task_type = notes[nnotes - 1].task_type;
	else
		n->task_type = MemoryContextStrdup(TopTransactionContext, text_to_cstring(t));
	nnotes++;
}

/*
 * hx_finished_xact
 *		Before the commit: the NOTIFY hx_done payloads and the filter of the
 *		finished ids.  Once the commit is visible: wakes the waiters that
 *		may wait for them.  At any end: forgets the notes.  A prepared
 *		transaction sends nothing (PREPARE refuses NOTIFY); its waiters
 *		find the tasks at their next safety look.
 */
static void
hx_finished_xact(XactEvent event, void *arg)
{
	int			i;

	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (nnotes == 0)
				break;
			memset(commit_mask, 0, sizeof(commit_mask));
			for (i = 0; i < nnotes; i++)
			{
				int			bit = hx_filter_bit(notes[i].id);

				commit_mask[bit / 64] |= UINT64CONST(1) << (bit % 64);
			}
			commit_mask_set = true;
			if (hx_notify_done)
				hx_notes_notify();
			break;
		case XACT_EVENT_COMMIT:
			if (commit_mask_set)
				hx_wake_waiters(commit_mask);
			hx_notes_forget();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			hx_notes_forget();
			break;
		default:
			break;
	}
}

/*
 * hx_finished_subxact
 *		A subtransaction that rolls back takes its notes (the last ones)
 *		with it; one that commits hands them to its parent.
 */
static void
hx_finished_subxact(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (nnotes > 0 && notes[nnotes - 1].level >= level)
			nnotes--;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		int			i;

		for (i = nnotes - 1; i >= 0 && notes[i].level >= level; i--)
			notes[i].level = level - 1;
	}
}

/* forgets the notes (their memory goes with the transaction's) */
static void
hx_notes_forget(void)
{
	notes = NULL;
	nnotes = 0;
	notes_room = 0;
	commit_mask_set = false;
}

/*
 * hx_notes_notify
 *		Sends the notes as NOTIFY hx_done payloads, JSON arrays of
 *		{"id", "task_type", "status"} of at most 8,000 bytes each.  At
 *		PRE_COMMIT, before the commit's own NOTIFY processing.
 */
static void
hx_notes_notify(void)
{
	StringInfoData buf;
	StringInfoData item;
	int			i;

	initStringInfo(&buf);
	initStringInfo(&item);
	for (i = 0; i < nnotes; i++)
	{
		resetStringInfo(&item);
		appendStringInfo(&item, "{\"id\":" INT64_FORMAT ",\"task_type\":", notes[i].id);
		escape_json(&item, notes[i].task_type);
		appendStringInfo(&item, ",\"status\":\"%s\"}", notes[i].status);
		/* room for a comma before it and the closing bracket after */
		if (buf.len > 0 && buf.len + item.len + 2 >= HX_NOTIFY_PAYLOAD_MAX)
		{
			appendStringInfoChar(&buf, ']');
			Async_Notify("hx_done", buf.data);
			resetStringInfo(&buf);
		}
		appendStringInfoChar(&buf, buf.len == 0 ? '[' : ',');
		appendBinaryStringInfo(&buf, item.data, item.len);
	}
	appendStringInfoChar(&buf, ']');
	Async_Notify("hx_done", buf.data);
	pfree(buf.data);
	pfree(item.data);
}

/* the filter bit of a task id (Fibonacci hashing) */
static inline int
hx_filter_bit(int64 id)
{
	return (int) (((uint64) id * UINT64CONST(0x9E3779B97F4A7C15)) >> 56);
}

/*
 * hx_wake_waiters
 *		Sets the latch of every waiter in this database whose filter shares
 *		a bit with mask (task ids are per database).  After the commit is
 *		visible; must not fail.
 */
static void
hx_wake_waiters(const uint64 *mask)
{
	Latch	   *latches[HX_MAX_WAITERS];
	int			nlatches = 0;
	int			i;
	int			k;

	if (hx_shared == NULL)
		return;
	/* the commit is visible before we read whether anyone waits */
	pg_memory_barrier();
	if (hx_shared->nwaiters == 0)
		return;

	SpinLockAcquire(&hx_shared->wait_mutex);
	for (i = 0; i < HX_MAX_WAITERS; i++)
	{
		HxWaiter   *w = &hx_shared->waiters[i];

		if (w->pid == 0 || w->dboid != MyDatabaseId)
			continue;
		for (k = 0; k < HX_WAIT_MASK_WORDS; k++)
		{
			if (w->mask[k] & mask[k])
			{
				latches[nlatches++] = w->latch;
				break;
			}
		}
	}
	SpinLockRelease(&hx_shared->wait_mutex);

	for (i = 0; i < nlatches; i++)
		SetLatch(latches[i]);
}

/*
 * hx_waiter_register
 *		Takes a waiter slot for this backend with the filter mask; false
 *		when every slot is taken (or the library was not preloaded).
 */
static bool
hx_waiter_register(const uint64 *mask)
{
	int			i;

	if (hx_shared == NULL)
		return false;
	if (!waiter_exit_hooked)
	{
		on_shmem_exit(hx_waiter_exit, (Datum) 0);
		waiter_exit_hooked = true;
	}
	SpinLockAcquire(&hx_shared->wait_mutex);
	for (i = 0; i < HX_MAX_WAITERS; i++)
	{
		HxWaiter   *w = &hx_shared->waiters[i];

		if (w->pid == 0)
		{
			w->pid = MyProcPid;
			w->dboid = MyDatabaseId;
			w->latch = MyLatch;
			memcpy(w->mask, mask, sizeof(w->mask));
			hx_shared->nwaiters++;
			my_waiter = i;
			break;
		}
	}
	SpinLockRelease(&hx_shared->wait_mutex);
	/* registered before the next look at the tasks (a new snapshot) */
	pg_memory_barrier();
	return my_waiter >= 0;
}

/* narrows this backend's filter to the tasks it still waits for */
static void
hx_waiter_update(const uint64 *mask)
{
	if (my_waiter < 0)
		return;
	SpinLockAcquire(&hx_shared->wait_mutex);
	memcpy(hx_shared->waiters[my_waiter].mask, mask, sizeof(hx_shared->waiters[my_waiter].mask));
	SpinLockRelease(&hx_shared->wait_mutex);
}

/* gives this backend's waiter slot back, if it has one */
static void
hx_waiter_unregister(void)
{
	if (my_waiter < 0 || hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->wait_mutex);
	hx_shared->waiters[my_waiter].pid = 0;
	hx_shared->waiters[my_waiter].latch = NULL;
	hx_shared->nwaiters--;
	SpinLockRelease(&hx_shared->wait_mutex);
	my_waiter = -1;
}

/* on_shmem_exit: a backend that ends while it waits (FATAL) frees its slot */
static void
hx_waiter_exit(int code, Datum arg)
{
	hx_waiter_unregister();
}

/*
 * hx_await
 *		SQL hx_await(ids bigint[], timeout interval): waits until every
 *		listed task is done, dead or cancelled, or the timeout passes;
 *		returns one row per distinct id, in the order given: its status
 *		then and, when done, its result.  Woken by the finishing commits.
 */
Datum
hx_await(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	HxAwaited  *w;
	int			n = 0;
	int			i;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task ids must not be NULL"),
				 errhint("Pass the ids hx_submit() returned as an array: hx_await(ARRAY[id1, id2]).")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be NULL"),
				 errhint("Leave it out to wait at most 30 seconds.")));
	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("task ids must be a one-dimensional array"),
				 errhint("Pass a flat array of ids: hx_await(ARRAY[id1, id2]).")));
	deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &enulls, &nelems);
	if (nelems > HX_AWAIT_MAX_IDS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("hx_await() waits for at most %d tasks, not %d", HX_AWAIT_MAX_IDS, nelems),
				 errhint("Wait for them in parts.")));

	/* one entry per distinct id, remembering where it first came */
	w = palloc0(sizeof(HxAwaited) * Max(nelems, 1));
	for (i = 0; i < nelems; i++)
	{
		if (enulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("task id must not be NULL"),
					 errhint("Element %d of the array is NULL.", i + 1)));
		w[i].id = DatumGetInt64(elems[i]);
		w[i].pos = i;
	}
	qsort(w, nelems, sizeof(HxAwaited), hx_awaited_cmp);
	for (i = 0; i < nelems; i++)
		if (n == 0 || w[n - 1].id != w[i].id)
			w[n++] = w[i];

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n > 0)
		hx_await_loop(w, n, PG_GETARG_INTERVAL_P(1), fcinfo->flinfo->fn_oid, "hx_await");

	/* in the order the caller gave */
	for (i = 0; i < n; i++)
		w[i].id = (int64) w[i].pos;
	qsort(w, n, sizeof(HxAwaited), hx_awaited_cmp);
	for (i = 0; i < n; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, w[i].status == NULL, !w[i].finished || w[i].result_null};

		values[0] = elems[w[i].pos];
		values[1] = w[i].status ? CStringGetTextDatum(w[i].status) : (Datum) 0;
		values[2] = w[i].result;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * hx_wait
 *		SQL hx_wait(id bigint, timeout interval): hx_await() of one task;
 *		returns its status then (NULL if retention deleted it meanwhile).
 */
Datum
hx_wait(PG_FUNCTION_ARGS)
{
	HxAwaited	w = {0};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task id must not be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be NULL"),
				 errhint("Leave it out to wait at most 30 seconds.")));
	w.id = PG_GETARG_INT64(0);
	hx_await_loop(&w, 1, PG_GETARG_INTERVAL_P(1), fcinfo->flinfo->fn_oid, "hx_wait");
	if (w.status == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(w.status));
}

/* orders awaited tasks by id */
static int
hx_awaited_cmp(const void *a, const void *b)
{
	int64		x = ((const HxAwaited *) a)->id;
	int64		y = ((const HxAwaited *) b)->id;

	return x < y ? -1 : (x > y ? 1 : 0);
}

/* the entry of id among w[0..n-1], sorted by id; NULL if none */
static HxAwaited *
hx_awaited_find(HxAwaited *w, int n, int64 id)
{
	HxAwaited	key;

	key.id = id;
	return bsearch(&key, w, n, sizeof(HxAwaited), hx_awaited_cmp);
}

/*
 * hx_await_loop
 *		Waits for the tasks w[0..n-1] (sorted by id, distinct) to finish or
 *		the timeout to pass, filling in each one's status and result (in
 *		the caller's memory context).  Each look is one statement with a
 *		new snapshot, so READ COMMITTED only.  A task the caller may not
 *		see does not exist for it; one queued or changed by the calling
 *		transaction is refused, since no worker can see it before the
 *		transaction commits.  In a transaction, without SPI connected;
 *		fn_oid is the calling SQL function's (its schema is the
 *		extension's).
 */
static void
hx_await_loop(HxAwaited *w, int n, Interval *timeout, Oid fn_oid,
			  const char *function)
{
	MemoryContext outer = CurrentMemoryContext;
	Oid			caller = GetUserId();
	HxUserSave	save;
	TimestampTz give_up;
	uint64		mask[HX_WAIT_MASK_WORDS];
	bool		first = true;
	bool		registered;
	Datum	   *left = palloc(sizeof(Datum) * n);
	bool	   *seen = palloc(sizeof(bool) * n);

	hx_check_read_committed(function, "task");
	give_up = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													  TimestampTzGetDatum(GetCurrentTimestamp()),
													  IntervalPGetDatum(timeout)));
	hx_rules_ensure(hx_schema_for_function(fn_oid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);

	hx_await_mask(w, n, mask);
	registered = hx_waiter_register(mask);

	PG_TRY();
	{
		for (;;)
		{
			SPITupleTable *tt;
			uint64		nrows;
			int			nleft = 0;
			Datum		arg;
			long		sleep_ms;
			TimestampTz now;

			for (int i = 0; i < n; i++)
			{
				seen[i] = false;
				if (!w[i].finished)
					left[nleft++] = Int64GetDatum(w[i].id);
			}
			arg = PointerGetDatum(construct_array(left, nleft, INT8OID, 8,
												  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			if (hx_stmt_exec(&await_status, &arg, NULL, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "could not read the tasks to wait for");
			/* hx_caller_sees runs statements of its own */
			tt = SPI_tuptable;
			nrows = SPI_processed;

			for (uint64 r = 0; r < nrows; r++)
			{
				HeapTuple	tup = tt->vals[r];
				TupleDesc	desc = tt->tupdesc;
				bool		isnull;
				HxAwaited  *t = hx_awaited_find(w, n,
												DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull)));
				char	   *status;
				MemoryContext spi;

				if (t == NULL || t->finished)
					continue;
				seen[t - w] = true;
				if (first)
				{
					Datum		dept = SPI_getbinval(tup, desc, 6, &isnull);

					if (!hx_caller_sees(caller,
										DatumGetObjectId(SPI_getbinval(tup, desc, 5, &isnull)),
										isnull ? NULL : TextDatumGetCString(dept)))
						hx_task_invisible(t->id, "wait for");
					if (TransactionIdIsCurrentTransactionId(DatumGetTransactionId(SPI_getbinval(tup, desc, 4, &isnull))))
						ereport(ERROR,
								(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
								 errmsg("task %lld was queued or changed by this transaction",
										(long long) t->id),
								 errhint("Workers only see committed tasks: commit, then wait.")));
				}
				status = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
				spi = MemoryContextSwitchTo(outer);
				if (t->status)
					pfree(t->status);
				t->status = pstrdup(status);
				t->finished = strcmp(status, "done") == 0 || strcmp(status, "dead") == 0 ||
					strcmp(status, "cancelled") == 0;
				if (t->finished)
				{
					Datum		res = SPI_getbinval(tup, desc, 3, &t->result_null);

					t->result = t->result_null ? (Datum) 0 : datumCopy(res, false, -1);
				}
				MemoryContextSwitchTo(spi);
			}

			/*
			 * A task not found the first time does not exist for the
			 * caller; one found before and not now was deleted by
			 * retention meanwhile, so it has finished.
			 */
			for (int i = 0; i < n; i++)
			{
				if (w[i].finished || seen[i])
					continue;
				if (first)
					hx_task_invisible(w[i].id, "wait for");
				w[i].finished = w[i].gone = true;
			}
			SPI_freetuptable(tt);
			first = false;

			now = GetCurrentTimestamp();
			if (!hx_await_mask(w, n, mask) || now >= give_up)
				break;

			/* wait for the rest: woken by their commits, or the safety look */
			hx_waiter_update(mask);
			sleep_ms = Min(registered ? hx_poll_interval_ms : HX_WAIT_POLL_MS,
						   TimestampDifferenceMilliseconds(now, give_up) + 1);
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
	}
	PG_FINALLY();
	{
		hx_waiter_unregister();
	}
	PG_END_TRY();

	/* a task that retention took has no status any more */
	for (int i = 0; i < n; i++)
		if (w[i].gone)
			w[i].status = NULL;
	hx_restore_user(&save);
	SPI_finish();
}

/*
 * hx_await_mask
 *		The filter of the tasks among w[0..n-1] not finished yet, into
 *		mask; false when every one has finished.
 */
static bool
hx_await_mask(HxAwaited *w, int n, uint64 *mask)
{
	bool		any = false;

	memset(mask, 0, sizeof(uint64) * HX_WAIT_MASK_WORDS);
	for (int i = 0; i < n; i++)
	{
		int			bit;

		if (w[i].finished)
			continue;
		bit = hx_filter_bit(w[i].id);
		mask[bit / 64] |= UINT64CONST(1) << (bit % 64);
		any = true;
	}
	return any;
}
