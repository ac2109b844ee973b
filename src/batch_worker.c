/*-------------------------------------------------------------------------
 *
 * batch_worker.c
 *	  The batch worker: a dynamic background worker that processes one run
 *	  of a batch window (hx_window_run), then exits.
 *
 *	  A run goes:
 *
 *		begin	take the run (resume it if a crash interrupted it), put
 *				back tasks a lost worker left running and isolate those
 *				of an interrupted chunk (hx_task.isolated), learn which
 *				tasks of the window are isolated ("suspects")
 *		isolate	each suspect alone: claim (attempt counted, committed)
 *				then run it, so a task that crashes the server costs only
 *				its own attempts and ends dead after max_attempts (a
 *				parallel run's workers take turns at this); chunks never
 *				take an isolated task
 *		chunks	until the window is empty, max_duration is reached, or
 *				(opportunistic runs) stream work waits, one transaction
 *				per chunk:
 *				  call the batch handler once with the chunk's tasks (or
 *				  the handler per task), book successes (moved to
 *				  hx_task_history) and failures (attempt counted), mark
 *				  the chunk's checkpoint committed, add to the run's
 *				  counters, then pick the next chunk - its waiting tasks,
 *				  one task type, by priority and deadline, read by the
 *				  scan that finds them - and write its "started"
 *				  checkpoint with its task ids (a chunk of a type with
 *				  max_running or rate_limit cut to what the limits allow,
 *				  task_state.c's hx_limit_chunk; the run waits when only
 *				  such types are left)
 *		finish	done, overran, yielded or failed
 *
 *	  The chunk's effects, its tasks' results and its checkpoint commit in
 *	  one transaction: a crash loses the chunk as a whole and nothing is
 *	  done twice; the started checkpoint, committed before the chunk runs,
 *	  tells the resumed run which tasks to isolate.  A chunk whose
 *	  transaction fails as a whole (an outcome that cannot be booked) is
 *	  treated the same way at once: its tasks run one by one, so one task
 *	  never fails the run.  A failed task waits for the next run of its
 *	  window (deferred retry) or is dead after max_attempts.
 *
 *	  Every state change of a task is task_state.c's.
 *
 *	  A window with parallel = n shares each run between n workers (parts),
 *	  each with chunks and checkpoints of its own.  They go through the
 *	  run order together: each pick takes the chunk after the run's cursor
 *	  (the last task any part took) and moves it, the run row locked from
 *	  the pick to the commit, so a part's scan reads only its own chunk;
 *	  what is left behind the cursor is for the last part at work.  The
 *	  last one to finish ends the run.
 *
 *	  Batch workers run at a lower CPU priority (hybridexec.batch_nice) so
 *	  that stream workers get the CPU first.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/resource.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "hybridexec.h"
#include "task_exec.h"
#include "task_state.h"

/* what hx_batch_begin told us about the run */
typedef struct HxRun
{
	int64		id;
	char	   *window_name;
	int			chunk_size;
	double		max_duration_ms;
	bool		opportunistic;
	TimestampTz started_at;		/* of the run, resumes included */
	ArrayType  *suspects;		/* bigint[], may be NULL */
	int			slot;			/* our batch worker slot */
	int			part;			/* which of the run's workers we are */
	int			parts;
	double		limit_wait_ms;	/* > 0: the last pick found only types at
								 * their limits, due again in that long */
	char	   *cut_type;		/* the last chunk was cut to this type's
								 * limits: other types go first */
} HxRun;

/* the longest a run waits for a limited type before it looks again */
#define HX_LIMIT_WAIT_MAX_MS	1000
/* the most types at their limits one pick passes over */
#define HX_LIMIT_SKIP_MAX	64

/* a chunk: its tasks as the pick read them, and their ids in run order */
typedef struct HxChunk
{
	ArrayType  *ids;			/* bigint[] */
	HxTask	   *tasks;
	int			n;
} HxChunk;

/* the objsubid of a run's isolation lock (hx_batch_isolation_lock) */
#define HX_ISOLATION_SUBID	0x4858

/* how long a new worker waits for the transaction that launched it */
#define HX_LAUNCHER_WAIT_MS	10000

static MemoryContext run_cxt = NULL;
static MemoryContext chunk_cxt = NULL;

static HxStmt begin_run = {
	"SELECT * FROM _hybridexec.hx_batch_begin($1, $2, $3, $4, $5)",
	5, {INT8OID, INT4OID, INT4OID, INT4OID, INT4ARRAYOID}
};
static HxStmt stream_busy = {"SELECT NOT _hybridexec.hx_stream_idle()"};
static HxStmt start_chunk = {
	"SELECT _hybridexec.hx_batch_start_chunk($1, $2, $3, $4, $5, $6)",
	6, {INT8OID, INT4OID, TEXTOID, INT8ARRAYOID, INT4OID, TIMESTAMPTZOID}
};
static HxStmt chunk_done = {
	"SELECT _hybridexec.hx_batch_chunk_done($1, $2, $3, $4, $5)",
	5, {INT8OID, INT4OID, INT4OID, BOOLOID, INT4OID}
};
static HxStmt chunk_recover = {
	"SELECT _hybridexec.hx_batch_recover($1, $2)",
	2, {INT8OID, INT4OID}
};
static HxStmt external_pending = {
	"SELECT _hybridexec.hx_batch_external_pending($1)",
	1, {TEXTOID}
};
/*
 * The run's row: its lock orders the workers' finishes, and a beginning
 * worker counts the live workers only once it holds it (a worker of another
 * part that began first has then committed its claims, and is counted).
 */
static HxStmt lock_run = {
	"SELECT 1 FROM @extschema@.hx_window_run WHERE id = $1 FOR UPDATE",
	1, {INT8OID}
};
static HxStmt finish_run = {
	"SELECT _hybridexec.hx_batch_finish($1, $2, $3, $4)",
	4, {INT8OID, TEXTOID, TEXTOID, BOOLOID}
};

static bool hx_batch_wait_launcher(TransactionId xid);
static bool hx_batch_begin(HxRun *run);
static void hx_batch_isolate(HxRun *run, ArrayType *suspects);
static void hx_batch_isolation_lock(HxRun *run, bool acquire);
static HxChunk *hx_batch_pick(HxRun *run, MemoryContext cxt);
static const char *hx_batch_chunks(HxRun *run);
static ArrayType *hx_batch_recover(HxRun *run);
static void hx_batch_run_chunk(HxRun *run, HxChunk *chunk, int *done, int *failed);
static void hx_batch_book(HxRun *run, HxTask *tasks, HxOutcome *outs, int n,
						  int *ndone, int *nfailed);
static void hx_batch_count(HxRun *run, int ndone, int nfailed, bool isolated);
static void hx_batch_count_alone(void *arg, int done, int failed);
static bool hx_batch_overran(HxRun *run);
static const char *hx_batch_should_stop(HxRun *run, bool in_xact);
static const char *hx_batch_wait_external(HxRun *run);
static void hx_batch_finish(HxRun *run, const char *status, const char *error);

/*
 * hx_batch_worker_main
 *		Entry point; main_arg is the reserved slot, bgw_extra the run.
 */
void
hx_batch_worker_main(Datum main_arg)
{
	HxBatchStart start;
	HxRun		run;
	const char *stop = NULL;

	memcpy(&start, MyBgworkerEntry->bgw_extra, sizeof(start));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(start.dboid, InvalidOid, 0);
	hx_batch_slot_attach(DatumGetInt32(main_arg), start.run_id);
	pgstat_report_appname("hybridexec batch worker");
	if (hx_batch_nice > 0 && setpriority(PRIO_PROCESS, 0, hx_batch_nice) != 0)
		ereport(LOG, (errmsg("hybridexec batch worker could not lower its priority: %m")));

	run_cxt = AllocSetContextCreate(TopMemoryContext, "hybridexec batch run",
									ALLOCSET_DEFAULT_SIZES);
	chunk_cxt = AllocSetContextCreate(TopMemoryContext, "hybridexec batch chunk",
									  ALLOCSET_DEFAULT_SIZES);
	memset(&run, 0, sizeof(run));
	run.id = start.run_id;
	run.slot = DatumGetInt32(main_arg);
	run.part = start.part;
	run.parts = Max(start.parts, 1);

	/* the run row commits with the transaction that launched us */
	if (!hx_batch_wait_launcher(start.launcher_xid) || !hx_batch_begin(&run))
		proc_exit(0);

	ereport(LOG,
			(errmsg("hybridexec batch worker started run %lld of window \"%s\"",
					(long long) run.id, run.window_name)));

	PG_TRY();
	{
		if (run.suspects != NULL)
			hx_batch_isolate(&run, run.suspects);
		stop = hx_batch_chunks(&run);
		if (stop == NULL)
			stop = hx_batch_wait_external(&run);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* a shutdown or a kill: the run resumes when we are back */
		if (ProcDiePending)
			PG_RE_THROW();

		HOLD_INTERRUPTS();
		MemoryContextSwitchTo(run_cxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		RESUME_INTERRUPTS();
		hx_batch_finish(&run, "failed", edata->message);
		proc_exit(1);
	}
	PG_END_TRY();

	hx_batch_finish(&run, stop != NULL && strcmp(stop, "overran") == 0 ? "overran" :
					stop != NULL ? "yielded" : "done", NULL);
	proc_exit(0);
}

/*
 * hx_batch_wait_launcher
 *		Waits (a while) for the transaction that launched this worker to
 *		end, so that its run row is visible.  false when it is still open
 *		after HX_LAUNCHER_WAIT_MS: the worker then exits and frees its slot
 *		- a session that keeps its transaction open must not hold a batch
 *		worker - and the scheduler launches the run again once it sees it.
 *		No transaction open.
 */
static bool
hx_batch_wait_launcher(TransactionId xid)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													HX_LAUNCHER_WAIT_MS);
	bool		open = TransactionIdIsValid(xid);

	while (open)
	{
		StartTransactionCommand();
		open = TransactionIdIsInProgress(xid);
		CommitTransactionCommand();
		if (!open)
			break;
		if (GetCurrentTimestamp() >= until)
		{
			ereport(LOG,
					(errmsg("hybridexec batch worker: the transaction that launched it is still open after %d ms; leaving the run to the scheduler",
							HX_LAUNCHER_WAIT_MS)));
			return false;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 10L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	return true;
}

/*
 * hx_batch_begin
 *		Takes the run; false when there is nothing to do (the launching
 *		transaction rolled back, the run ended, no extension).  Own
 *		transaction.
 */
static bool
hx_batch_begin(HxRun *run)
{
	int			pids[HX_MAX_BATCH_WORKERS];
	int			npids;
	Datum	   *elems;
	Datum		args[5];
	bool		isnull;
	bool		ok = false;
	int			rc;
	int			i;

	hx_worker_begin_xact("starting a window run");
	if (OidIsValid(hx_worker_find_extension()))
	{
		/*
		 * Workers alive once the run is ours: the other parts' workers that
		 * began before us are among them, with the tasks they claimed.
		 */
		args[0] = Int64GetDatum(run->id);
		if (hx_stmt_exec(&lock_run, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not lock window run %lld", (long long) run->id);
		npids = hx_batch_live_pids(pids, HX_MAX_BATCH_WORKERS);
		elems = palloc(sizeof(Datum) * Max(npids, 1));
		for (i = 0; i < npids; i++)
			elems[i] = Int32GetDatum(pids[i]);
		args[1] = Int32GetDatum(MyProcPid);
		args[2] = Int32GetDatum(run->part);
		args[3] = Int32GetDatum(run->parts);
		args[4] = PointerGetDatum(construct_array(elems, npids, INT4OID, 4, true,
												  TYPALIGN_INT));
		rc = hx_stmt_exec(&begin_run, args, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			elog(ERROR, "hx_batch_begin failed: %s", SPI_result_code_string(rc));
		else
		{
			HeapTuple	tup = SPI_tuptable->vals[0];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			Datum		name = SPI_getbinval(tup, desc, 1, &isnull);

			if (!isnull)
			{
				MemoryContext old = MemoryContextSwitchTo(run_cxt);
				Datum		d;
				double		elapsed_ms;

				run->window_name = TextDatumGetCString(name);
				run->chunk_size = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
				run->max_duration_ms = DatumGetFloat8(SPI_getbinval(tup, desc, 3, &isnull));
				run->opportunistic = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
				elapsed_ms = DatumGetFloat8(SPI_getbinval(tup, desc, 5, &isnull));
				run->started_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  -(int64) elapsed_ms);
				d = SPI_getbinval(tup, desc, 6, &isnull);
				run->suspects = isnull ? NULL : DatumGetArrayTypePCopy(d);
				MemoryContextSwitchTo(old);
				ok = true;
			}
		}
	}
	hx_worker_end_xact();
	return ok;
}

/*
 * hx_batch_overran
 *		Whether the run has reached its window's max_duration.
 */
static bool
hx_batch_overran(HxRun *run)
{
	return TimestampDifferenceExceeds(run->started_at, GetCurrentTimestamp(),
									  (int) Min(run->max_duration_ms, (double) INT_MAX));
}

/*
 * hx_batch_should_stop
 *		Checked at chunk boundaries: "overran" once max_duration is reached,
 *		"yielded" when an opportunistic run sees stream work waiting, else
 *		NULL.  in_xact: called in a transaction with SPI connected.
 */
static const char *
hx_batch_should_stop(HxRun *run, bool in_xact)
{
	if (hx_batch_overran(run))
		return "overran";
	if (run->opportunistic && hx_stream_work_waiting())
	{
		bool		isnull;

		/*
		 * A busy flag may only be a worker's periodic look for work: in a
		 * transaction, make sure stream tasks really wait or run.
		 */
		if (!in_xact)
			return "yielded";
		if (DatumGetBool(hx_stmt_value(&stream_busy, NULL, NULL, &isnull)))
			return "yielded";
	}
	return NULL;
}

/*
 * hx_batch_isolate
 *		Runs the tasks of an interrupted (or failed) chunk one at a time,
 *		each claimed in a committed transaction of its own before it runs,
 *		so that a task that crashes the server costs only its own attempts,
 *		and one whose outcome cannot be booked ends failed or set aside
 *		without failing the run.  A task of a type at its limits waits for
 *		them (the run stops waiting when it must stop: the task stays
 *		isolated for the next run).  No transaction open.
 */
static void
hx_batch_isolate(HxRun *run, ArrayType *suspects)
{
	Datum	   *ids;
	int			n;
	int			i;

	deconstruct_array(suspects, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &ids, NULL, &n);
	ereport(LOG,
			(errmsg("hybridexec batch worker: run %lld retries %d task(s) of an interrupted chunk one by one",
					(long long) run->id, n)));
	hx_batch_isolation_lock(run, true);
	for (i = 0; i < n; i++)
	{
		ArrayType  *one = construct_array(&ids[i], 1, INT8OID, 8, FLOAT8PASSBYVAL,
										  TYPALIGN_DOUBLE);
		HxTask	   *tasks = NULL;
		int			got;

		for (;;)
		{
			double		wait_ms;

			MemoryContextReset(chunk_cxt);
			hx_worker_begin_xact("claiming a task of an interrupted chunk");
			got = hx_claim_isolated_ids(one, MyProcPid, run->id, &tasks, chunk_cxt,
										&wait_ms);
			hx_worker_end_xact();
			if (got > 0 || wait_ms <= 0)
				break;
			if (hx_batch_should_stop(run, false) != NULL)
			{
				hx_batch_isolation_lock(run, false);
				return;
			}
			pgstat_report_activity(STATE_IDLE, "waiting for a task type's limits");
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 (long) Max(Min(wait_ms, HX_LIMIT_WAIT_MAX_MS), 1),
							 PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (got == 1)
			(void) hx_exec_alone(&tasks[0], chunk_cxt, hx_batch_count_alone, run);
		CHECK_FOR_INTERRUPTS();
	}
	hx_batch_isolation_lock(run, false);
}

/*
 * hx_batch_isolation_lock
 *		Takes (acquire) or gives back the run's isolation lock, a session
 *		lock: the run's workers run their isolated tasks one worker at a
 *		time, so that a task that crashes the server costs only its own
 *		attempts, not those of a task another part is running alone at that
 *		moment.  (A chunk under way meanwhile costs none: its tasks were not
 *		claimed.)  An object lock on the extension's catalog with a sub-id
 *		no extension has, not an advisory lock: the handlers' session
 *		advisory locks are undone after each task (task_exec.c).  Released
 *		at exit too.  Takes a transaction of its own.
 */
static void
hx_batch_isolation_lock(HxRun *run, bool acquire)
{
	LOCKTAG		tag;

	SET_LOCKTAG_OBJECT(tag, MyDatabaseId, ExtensionRelationId, (uint32) run->id,
					   HX_ISOLATION_SUBID);
	hx_worker_begin_xact(acquire ? "waiting to run isolated tasks" : "isolated tasks run");
	if (acquire)
		(void) LockAcquire(&tag, ExclusiveLock, true, false);
	else
		(void) LockRelease(&tag, ExclusiveLock, true);
	hx_worker_end_xact();
}

/*
 * hx_batch_count_alone
 *		hx_exec_alone's booking hook: the run's counters.
 */
static void
hx_batch_count_alone(void *arg, int done, int failed)
{
	hx_batch_count((HxRun *) arg, done, failed, true);
}

/*
 * hx_batch_pick
 *		Picks the next chunk - its tasks read by the scan that finds them,
 *		as many as their type's limits allow (hx_limit_chunk) - and records
 *		it as a started checkpoint; returns it (in cxt), or NULL when the
 *		window has nothing left for us now.  A type at its limit is passed
 *		over for the next one, and so is, once, the type whose last chunk
 *		was cut to its limits: a limited type takes its share and lets the
 *		others run meanwhile.  When only types at their limits are left,
 *		NULL with run->limit_wait_ms set to when the first may go on.  In a
 *		transaction, SPI connected.
 */
static HxChunk *
hx_batch_pick(HxRun *run, MemoryContext cxt)
{
	HxChunk    *chunk = MemoryContextAllocZero(cxt, sizeof(HxChunk));
	Datum	   *skip = palloc(sizeof(Datum) * HX_LIMIT_SKIP_MAX);
	int			nskip = 0;
	Datum	   *ids;
	Datum		start[6];
	char		start_nulls[6] = {' ', ' ', ' ', ' ', ' ', ' '};
	HxTask	   *last;
	MemoryContext old;
	int			rc;
	int			i;

	bool		cut_skipped = false;
	int			picked;

	run->limit_wait_ms = 0;
	if (run->cut_type != NULL)
	{
		skip[nskip++] = CStringGetTextDatum(run->cut_type);
		cut_skipped = true;
	}
	for (;;)
	{
		double		wait_ms;

		picked = hx_pick_chunk(run->id, run->window_name, run->chunk_size, run->part,
							   construct_array(skip, nskip, TEXTOID, -1, false, TYPALIGN_INT),
							   &chunk->tasks, cxt);
		if (picked == 0 && cut_skipped)
		{
			/* nothing else to do: the type cut last time, after all */
			skip[0] = skip[--nskip];
			cut_skipped = false;
			continue;
		}
		if (picked == 0)
			return NULL;
		chunk->n = hx_limit_chunk(chunk->tasks, picked, run->id, run->part, &wait_ms);
		if (chunk->n > 0)
			break;
		/* the type is at its limit: the next one, and back to it later */
		run->limit_wait_ms = run->limit_wait_ms == 0 ? wait_ms : Min(run->limit_wait_ms, wait_ms);
		if (nskip == HX_LIMIT_SKIP_MAX)
			return NULL;
		skip[nskip++] = CStringGetTextDatum(chunk->tasks[0].task_type);
	}
	run->limit_wait_ms = 0;
	if (run->cut_type != NULL)
		pfree(run->cut_type);
	run->cut_type = chunk->n < picked ? MemoryContextStrdup(run_cxt, chunk->tasks[0].task_type) : NULL;

	old = MemoryContextSwitchTo(cxt);
	ids = palloc(sizeof(Datum) * chunk->n);
	for (i = 0; i < chunk->n; i++)
		ids[i] = Int64GetDatum(chunk->tasks[i].id);
	chunk->ids = construct_array(ids, chunk->n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
	MemoryContextSwitchTo(old);

	/* the run's cursor: the last task's key as the pick read it */
	last = &chunk->tasks[chunk->n - 1];
	start[0] = Int64GetDatum(run->id);
	start[1] = Int32GetDatum(run->part);
	start[2] = CStringGetTextDatum(chunk->tasks[0].task_type);
	start[3] = PointerGetDatum(chunk->ids);
	start[4] = Int32GetDatum(last->priority);
	start[5] = TimestampTzGetDatum(last->deadline);
	if (!last->has_deadline)
		start_nulls[5] = 'n';
	rc = hx_stmt_exec(&start_chunk, start, start_nulls, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hx_batch_start_chunk failed: %s", SPI_result_code_string(rc));
	return chunk;
}

/*
 * hx_batch_chunks
 *		Runs chunks until the window has nothing left for us or the run
 *		must stop; returns why it stopped ("overran", "yielded") or NULL.
 *
 *		Each chunk's transaction also picks the next chunk and writes its
 *		started checkpoint, so a busy run commits once per chunk.  When
 *		what is left waits for its types' limits, the run waits with it
 *		(a second at most between looks) rather than end with tasks left.
 *		No transaction open.
 */
static const char *
hx_batch_chunks(HxRun *run)
{
	MemoryContext cur = AllocSetContextCreate(run_cxt, "hybridexec chunk",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext next = AllocSetContextCreate(run_cxt, "hybridexec next chunk",
											   ALLOCSET_SMALL_SIZES);
	const char *volatile stop = hx_batch_should_stop(run, false);
	HxChunk    *chunk;

	if (stop != NULL)
		return stop;
	hx_worker_begin_xact("picking a chunk");
	chunk = hx_batch_pick(run, cur);
	hx_worker_end_xact();

	for (;;)
	{
		while (chunk != NULL)
		{
			MemoryContext swap;
			HxChunk    *volatile next_chunk = NULL;
			ErrorData  *volatile edata = NULL;
			int			ndone;
			int			nfailed;

			MemoryContextReset(chunk_cxt);
			MemoryContextReset(next);
			PG_TRY();
			{
				hx_worker_begin_xact("running a chunk");
				hx_batch_run_chunk(run, chunk, &ndone, &nfailed);
				stop = hx_batch_should_stop(run, true);

				/*
				 * The pick and the count lock the run row until we commit,
				 * and the run's other workers wait for it to pick theirs:
				 * write the chunk's WAL out first, so that the commit has
				 * only the pick's to flush while they wait.
				 */
				if (run->parts > 1)
					XLogFlush(XactLastRecEnd);
				if (stop == NULL)
					next_chunk = hx_batch_pick(run, next);
				hx_batch_count(run, ndone, nfailed, false);
				hx_worker_end_xact();
			}
			PG_CATCH();
			{
				/* a shutdown or a kill: the run resumes when we are back */
				if (ProcDiePending)
					PG_RE_THROW();
				edata = hx_worker_catch(run_cxt);
			}
			PG_END_TRY();

			if (edata != NULL)
			{
				/* a chunk picked in the failed transaction was rolled back with it */
				next_chunk = NULL;
				run->limit_wait_ms = 0;
				/* as after a crash: its tasks one by one, then the next chunk */
				ereport(LOG,
						(errmsg("hybridexec batch worker: a chunk of run %lld failed as a whole (%s)",
								(long long) run->id, edata->message)));
				hx_batch_isolate(run, hx_batch_recover(run));
				stop = hx_batch_should_stop(run, false);
				if (stop == NULL)
				{
					hx_worker_begin_xact("picking a chunk");
					next_chunk = hx_batch_pick(run, next);
					hx_worker_end_xact();
				}
			}

			chunk = next_chunk;
			swap = cur;
			cur = next;
			next = swap;
			CHECK_FOR_INTERRUPTS();
		}
		if (stop != NULL || run->limit_wait_ms <= 0)
			return stop;

		/* only types at their limits are left: wait for the first to go on */
		pgstat_report_activity(STATE_IDLE, "waiting for a task type's limits");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) Max(Min(run->limit_wait_ms, HX_LIMIT_WAIT_MAX_MS), 1),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		stop = hx_batch_should_stop(run, false);
		if (stop != NULL)
			return stop;
		MemoryContextReset(cur);
		hx_worker_begin_xact("picking a chunk");
		chunk = hx_batch_pick(run, cur);
		hx_worker_end_xact();
	}
}

/*
 * hx_batch_recover
 *		Marks the part's started checkpoint recovered and returns the ids
 *		of its tasks (in run_cxt): after the chunk's transaction failed,
 *		they are run one by one.  Own transaction.
 */
static ArrayType *
hx_batch_recover(HxRun *run)
{
	Datum		args[2] = {Int64GetDatum(run->id), Int32GetDatum(run->part)};
	Datum		value;
	ArrayType  *ids;
	bool		isnull;
	MemoryContext old;

	hx_worker_begin_xact("recovering a failed chunk");
	value = hx_stmt_value(&chunk_recover, args, NULL, &isnull);
	old = MemoryContextSwitchTo(run_cxt);
	ids = DatumGetArrayTypePCopy(value);
	MemoryContextSwitchTo(old);
	hx_worker_end_xact();
	return ids;
}

/*
 * hx_batch_run_chunk
 *		Runs the chunk's tasks that still wait and books them; *done and
 *		*failed say how many of each.  In the chunk's transaction.
 *
 *		The tasks were read by the pick, in the transaction before, and
 *		are read again by id only if one changed meanwhile.  They are read
 *		without locks: nobody but this run takes them
 *		(runs of a window never overlap), and what others may do to a
 *		waiting task (cancel it, escalate it) is caught when the outcomes
 *		are booked: the bookings only touch tasks still waiting, and if one
 *		is not, the handlers' effects are rolled back with the bookings and
 *		the chunk runs again without it.  Bookings lock the rows, so nobody
 *		changes a booked task before we commit.
 */
static void
hx_batch_run_chunk(HxRun *run, HxChunk *chunk, int *done, int *failed)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	TimestampTz no_retry = 0;
	HxTask	   *tasks = NULL;
	HxOutcome  *outs = NULL;
	int			n = 0;
	int			ndone = 0;
	int			nfailed = 0;
	int			tries;
	int			i;

	for (tries = 0;; tries++)
	{
		bool		conflict;

		if (tries == 0)
		{
			tasks = chunk->tasks;
			n = chunk->n;
		}
		else
			n = hx_read_waiting(chunk->ids, &tasks, chunk_cxt);
		if (n == 0)
			break;
		outs = MemoryContextAllocZero(chunk_cxt, sizeof(HxOutcome) * n);

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);

		if (OidIsValid(tasks[0].batch_handler))
			hx_exec_batch(tasks, n, outs, chunk_cxt);
		else
			for (i = 0; i < n; i++)
				hx_exec_handler(&tasks[i], &outs[i], chunk_cxt);
		pgstat_report_activity(STATE_RUNNING, "booking a chunk");
		hx_batch_book(run, tasks, outs, n, &ndone, &nfailed);
		conflict = (ndone + nfailed != n);

		if (conflict)
			RollbackAndReleaseCurrentSubTransaction();
		else
			ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		if (!conflict)
			break;
		if (tries >= 10)
			elog(ERROR, "tasks of a chunk of run %lld keep changing while it runs",
				 (long long) run->id);
		ereport(LOG,
				(errmsg("hybridexec batch worker: a task of run %lld changed while its chunk ran; running the chunk again without it",
						(long long) run->id)));
		ndone = nfailed = 0;
	}

	/* failures: failed (next run) or dead */
	(void) hx_book_failures(tasks, outs, n, &no_retry);

	*done = ndone;
	*failed = nfailed;
}

/*
 * hx_batch_book
 *		Books a chunk's outcomes inside its subtransaction: the successes
 *		done with their results in one statement, the failures claimed
 *		(marked running, attempt counted) for hx_book_failures to book.
 *		Counts only tasks that were still waiting.
 */
static void
hx_batch_book(HxRun *run, HxTask *tasks, HxOutcome *outs, int n,
			  int *ndone, int *nfailed)
{
	Datum	   *failed_ids = palloc(sizeof(Datum) * Max(n, 1));
	int			nf = 0;
	int			i;

	for (i = 0; i < n; i++)
		if (!outs[i].ok)
			failed_ids[nf++] = Int64GetDatum(tasks[i].id);
	*ndone = hx_book_chunk_done(tasks, outs, n, run->id);
	*nfailed = 0;
	if (nf > 0)
	{
		HxTask	   *claimed;

		*nfailed = hx_claim_ids(construct_array(failed_ids, nf, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE),
								MyProcPid, run->id, &claimed, chunk_cxt);
	}
}

/*
 * hx_batch_count
 *		Marks the started checkpoint committed (unless the tasks were
 *		isolated ones) and adds to the run's counters.  In the transaction
 *		that booked the tasks.
 */
static void
hx_batch_count(HxRun *run, int ndone, int nfailed, bool isolated)
{
	Datum		args[5];
	int			rc;

	args[0] = Int64GetDatum(run->id);
	args[1] = Int32GetDatum(ndone);
	args[2] = Int32GetDatum(nfailed);
	args[3] = BoolGetDatum(isolated);
	args[4] = Int32GetDatum(run->part);
	rc = hx_stmt_exec(&chunk_done, args, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hx_batch_chunk_done failed: %s", SPI_result_code_string(rc));
}

/*
 * hx_batch_wait_external
 *		Keeps the window open while it has due tasks for external
 *		executors (they may claim batch tasks only while it is open), until
 *		they are gone ("done": NULL) or max_duration ("overran").  No
 *		transaction open.
 */
static const char *
hx_batch_wait_external(HxRun *run)
{
	for (;;)
	{
		Datum		arg = CStringGetTextDatum(run->window_name);
		bool		pending;
		bool		isnull;

		hx_worker_begin_xact("waiting for external executors");
		pending = DatumGetBool(hx_stmt_value(&external_pending, &arg, NULL, &isnull));
		hx_worker_end_xact();
		if (!pending)
			return NULL;
		if (hx_batch_overran(run))
			return "overran";
		pgstat_report_activity(STATE_IDLE, "window open for external executors");
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * hx_batch_finish
 *		Ends our share of the run with the given status; the run's last
 *		worker ends the run.  Own transaction.
 */
static void
hx_batch_finish(HxRun *run, const char *status, const char *error)
{
	Datum		id = Int64GetDatum(run->id);
	Datum		args[4];
	char		nulls[4] = {' ', ' ', error ? ' ' : 'n', ' '};
	bool		last;
	int			rc;

	hx_worker_begin_xact("finishing a window run");
	/* the run row's lock orders the workers' finishes */
	rc = hx_stmt_exec(&lock_run, &id, NULL, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "could not lock run %lld", (long long) run->id);
	last = hx_batch_slot_finish(run->slot, run->id);

	args[0] = id;
	args[1] = CStringGetTextDatum(status);
	args[2] = error ? CStringGetTextDatum(error) : (Datum) 0;
	args[3] = BoolGetDatum(last);
	rc = hx_stmt_exec(&finish_run, args, nulls, false, 1);
	if (rc != SPI_OK_SELECT)
		elog(ERROR, "hx_batch_finish failed: %s", SPI_result_code_string(rc));
	hx_worker_end_xact();
	ereport(LOG,
			(errmsg("hybridexec batch worker: part %d/%d of run %lld of window \"%s\" %s%s",
					run->part + 1, run->parts, (long long) run->id,
					run->window_name ? run->window_name : "?", status,
					last ? " (run ended)" : "")));
}
