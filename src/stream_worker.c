/*-------------------------------------------------------------------------
 *
 * stream_worker.c
 *	  The stream worker: a background worker that runs stream-routed tasks
 *	  of in-database handlers as soon as they are committed.
 *
 *	  State machine of a task on this path:
 *
 *		queued/failed --claim (xact 1, attempt counted)--> running
 *		running --handler ok (xact 2, with its effects)--> done
 *		running --handler error, attempts left (xact 2)--> failed (retry
 *					after a backoff)
 *		running --handler error, no attempt left (xact 2)--> dead + NOTIFY
 *		running --worker gone (crash, kill, shutdown)--> queued (or dead)
 *					by the sweep when a worker starts; such a task is
 *					"isolated": it runs alone next time, so a task that
 *					crashes its worker costs its neighbours no more attempts
 *
 *	  Every state change is task_state.c's; this file decides when.
 *
 *	  The attempt is committed before the handler runs (as timescaledb does
 *	  for its jobs), durably whenever a crash could make it matter (see
 *	  hx_claim_may_be_lost), so a task that crashes the server cannot loop
 *	  forever.
 *	  The handler's effects and the task's final state commit together, so
 *	  an in-database handler's effects happen exactly once.
 *
 *	  A batch whose transaction fails as a whole (an outcome that cannot be
 *	  booked) is run again one task at a time (hx_exec_alone), so a single
 *	  task never makes the worker exit.
 *
 *	  The loop follows worker_spi: core signal handlers, one WaitLatch per
 *	  idle period; the commit of a submitting transaction sets our latch.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "hybridexec.h"
#include "task_exec.h"
#include "task_state.h"

static int	my_slot = -1;

/*
 * How many tasks a claim takes: at most hybridexec.stream_batch_size, and
 * about HX_CLAIM_WORK_US of their run time as this worker measured it, so
 * that fast tasks share their claim, commit and booking statements among
 * many while slow ones (a model call) are claimed a few at a time and a
 * free worker finds the rest still queued.  Until it has measured, a
 * worker claims one task (its first handler call measures long: the
 * claims grow from there within a few batches).  The measure is the
 * worker's recent tasks: after a switch from fast tasks to slow ones, one
 * claim may still take many of the slow ones.  While handlers write (their
 * subtransactions get transaction ids), a batch stays within the
 * PGPROC_MAX_CACHED_SUBXIDS a backend can show other sessions' snapshots
 * without overflowing to pg_subtrans.
 */
#define HX_CLAIM_WORK_US	10000.0
#define HX_CLAIM_FIRST		1
static double task_us = -1;		/* moving average of a task's run time */
static bool handlers_write = true;	/* the last batch's handlers wrote */
static MemoryContext batch_cxt = NULL;	/* the batch being run */
static MemoryContext next_cxt = NULL;	/* the batch claimed ahead */
static Oid	worker_schema = InvalidOid;

static void hx_sweep(void);
static int	hx_claim(HxTask **tasks, MemoryContext cxt, bool *alone);
static int	hx_run_batch(HxTask *tasks, int ntasks, TimestampTz *next_retry,
						 HxTask **next);
static int	hx_run_batch_guarded(HxTask *tasks, int ntasks,
								 TimestampTz *next_retry, HxTask **next);
static void hx_count_alone(void *arg, int done, int failed);
static long hx_sleep_ms(TimestampTz next_retry);
static void hx_run_micro_batches(HxTask *tasks, int ntasks, HxOutcome *outs);
static TimestampTz hx_micro_batch_due(void);
static bool hx_claim_may_be_lost(HxTask *tasks, int ntasks,
								 TimestampTz started_at);
static int	hx_claim_size(void);

/*
 * For this long after a worker starts on a server that had not been shut
 * down cleanly, its claims are committed synchronously (see
 * hx_claim_may_be_lost).
 */
#define HX_CLAIM_GUARD_MS	30000

/*
 * hx_stream_worker_main
 *		Entry point of a stream worker; main_arg is its slot number,
 *		bgw_extra the oid of the database the launcher gave it.
 */
void
hx_stream_worker_main(Datum main_arg)
{
	bool		swept = false;
	TimestampTz next_retry = 0;
	TimestampTz started_at = GetCurrentTimestamp();
	Oid			dboid;

	my_slot = DatumGetInt32(main_arg);
	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	hx_slot_attach(my_slot);
	pgstat_report_appname("hybridexec stream worker");

	batch_cxt = AllocSetContextCreate(TopMemoryContext,
									  "hybridexec stream batch",
									  ALLOCSET_DEFAULT_SIZES);
	next_cxt = AllocSetContextCreate(TopMemoryContext,
									 "hybridexec stream next batch",
									 ALLOCSET_DEFAULT_SIZES);

	StartTransactionCommand();
	ereport(LOG,
			(errmsg("hybridexec stream worker %d started for database \"%s\"",
					my_slot, get_database_name(MyDatabaseId))));
	CommitTransactionCommand();

	for (;;)
	{
		HxTask	   *tasks = NULL;
		int			ntasks = 0;
		bool		have_extension;
		bool		alone = false;
		bool		swept_now = false;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* the launcher gives our slot to another database: we hold nothing */
		if (hx_slot_stop_wanted(my_slot))
			proc_exit(0);

		/*
		 * Reset the latch and announce we are idle before looking for work:
		 * a commit after our look either sets the latch or finds us busy.
		 */
		ResetLatch(MyLatch);
		hx_slot_set_idle(my_slot, true);
		MemoryContextReset(batch_cxt);

		hx_worker_begin_xact("claiming stream tasks");

		/* woken by a committing transaction: let it finish committing */
		hx_slot_wait_for_committer(my_slot);

		worker_schema = hx_worker_find_extension();
		have_extension = OidIsValid(worker_schema);
		if (have_extension)
		{
			if (!swept)
			{
				hx_sweep();
				swept = swept_now = true;
			}
			ntasks = hx_claim(&tasks, batch_cxt, &alone);
			if (ntasks == 0)
			{
				/* buffered micro-batches wake us when they are due */
				TimestampTz due = hx_micro_batch_due();

				if (due != 0 && (next_retry == 0 || due < next_retry))
					next_retry = due;
			}
			if (hx_claim_may_be_lost(tasks, ntasks, started_at))
				(void) set_config_option("synchronous_commit", "off",
										 PGC_USERSET, PGC_S_SESSION,
										 GUC_ACTION_LOCAL, true, 0, false);
		}
		hx_worker_end_xact();

		/* the isolated tasks the sweep put back are visible now */
		if (swept_now)
			hx_suspects_bump();

		if (alone)
		{
			hx_slot_set_idle(my_slot, false);
			(void) hx_exec_alone(&tasks[0], batch_cxt, hx_count_alone, NULL);
			continue;
		}

		/*
		 * Run batches back to back while they come full: each run
		 * transaction also claims the next batch, so a busy worker commits
		 * once per batch, not twice.
		 */
		if (ntasks > 0)
		{
			while (ntasks > 0)
			{
				HxTask	   *next = NULL;
				MemoryContext swap;

				hx_slot_set_idle(my_slot, false);
				if (next_retry != 0 && next_retry <= GetCurrentTimestamp())
					next_retry = 0;
				MemoryContextReset(next_cxt);
				ntasks = hx_run_batch_guarded(tasks, ntasks, &next_retry, &next);
				tasks = next;
				swap = batch_cxt;
				batch_cxt = next_cxt;
				next_cxt = swap;
				CHECK_FOR_INTERRUPTS();
			}
			continue;
		}

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 have_extension ? hx_sleep_ms(next_retry) : hx_poll_interval_ms,
						 PG_WAIT_EXTENSION);
		hx_slot_set_idle(my_slot, false);
		if (next_retry != 0 && next_retry <= GetCurrentTimestamp())
			next_retry = 0;
	}
}

/*
 * hx_sweep
 *		Puts back stream tasks left running by workers that are gone (a
 *		crash, a kill, a shutdown), isolated.  Runs once when the worker
 *		starts, in the claim transaction; the caller announces the isolated
 *		tasks (hx_suspects_bump) once it has committed.
 */
static void
hx_sweep(void)
{
	int			n = hx_sweep_stream();

	if (n > 0)
		ereport(LOG,
				(errmsg("hybridexec stream worker %d put back %d task(s) left running by a stopped worker; each runs alone next time",
						my_slot, n)));
}

/*
 * hx_claim
 *		Claims, counting their attempt, either one isolated task (*alone:
 *		put back after its worker was lost, it runs alone) or up to
 *		hybridexec.stream_batch_size due tasks, and copies them into cxt,
 *		out of the transaction.
 */
static int
hx_claim(HxTask **tasks, MemoryContext cxt, bool *alone)
{
	uint32		gen = hx_suspects_pending();

	*alone = false;
	if (gen != 0)
	{
		if (hx_claim_isolated(MyProcPid, tasks, cxt) == 1)
		{
			*alone = true;
			return 1;
		}
		/* none left as of the generation read before this snapshot */
		hx_suspects_none(gen);
	}
	return hx_claim_stream_next(MyProcPid, hx_claim_size(), tasks, cxt);
}

/*
 * hx_claim_size
 *		Tasks to claim at once: about HX_CLAIM_WORK_US of measured work,
 *		1 to hybridexec.stream_batch_size.
 */
static int
hx_claim_size(void)
{
	double		n;

	int			most = handlers_write ?
		Min(hx_stream_batch_size, PGPROC_MAX_CACHED_SUBXIDS) : hx_stream_batch_size;

	if (task_us < 0)
		return Min(HX_CLAIM_FIRST, most);
	n = HX_CLAIM_WORK_US / Max(task_us, 1.0);
	return (int) Max(1.0, Min(n, (double) most));
}

/*
 * hx_count_alone
 *		hx_exec_alone's booking hook: the worker's counters.
 */
static void
hx_count_alone(void *arg, int done, int failed)
{
	hx_slot_count(my_slot, done, failed);
}

/*
 * hx_claim_may_be_lost
 *		Decides whether the claim transaction may commit without waiting
 *		for its WAL flush.  Called inside the claim transaction.
 *
 *		An asynchronous claim saves a flush on the latency path, and losing
 *		it is harmless (the tasks are still queued; the run transaction's
 *		commit flushes it anyway) unless a handler crashes the server
 *		before the flush: then the attempt is forgotten, and a task that
 *		always crashes the server would never run out of attempts.  So the
 *		claim is durable when it counts a retry (attempt 2 and later), and
 *		for a while after the worker started on a server that had not been
 *		shut down cleanly, which is when a task whose first attempt was
 *		forgotten by a crash comes back.  So such a task crashes the server
 *		at most once more than its max_attempts.  After a clean start there
 *		is nothing to guard, and the first claims are as quick as later
 *		ones.
 */
static bool
hx_claim_may_be_lost(HxTask *tasks, int ntasks, TimestampTz started_at)
{
	int			i;

	if (!hx_shared->clean_start &&
		!TimestampDifferenceExceeds(started_at, GetCurrentTimestamp(),
									HX_CLAIM_GUARD_MS))
		return false;
	for (i = 0; i < ntasks; i++)
		if (tasks[i].attempts > 1)
			return false;
	return true;
}

/*
 * hx_run_batch
 *		Runs the claimed tasks in one transaction: each handler in its own
 *		subtransaction, failures booked one by one and successes together,
 *		then effects and states commit at once.  After a full batch it also
 *		claims the next one (into next_cxt) and returns how many it got.
 *
 *		Nobody else changes a task while it is running for a live worker:
 *		the sweep skips live workers' tasks and hx_cancel skips running
 *		ones.  The bookings still check that every task is ours; if one is
 *		not (someone edited hx_task by hand), the whole transaction aborts,
 *		handlers' effects included, the worker exits and, restarted, sweeps
 *		the batch back into the queue.
 */
static int
hx_run_batch(HxTask *tasks, int ntasks, TimestampTz *next_retry, HxTask **next)
{
	HxOutcome  *outs = MemoryContextAllocZero(batch_cxt, sizeof(HxOutcome) * ntasks);
	int			claimed = hx_claim_size();	/* what a full claim took */
	TimestampTz started;
	double		per_task;
	int			i;
	int			done;
	int			failed;
	int			nnext;

	/*
	 * The claim transaction has just found the extension and prepared the
	 * plans; were it dropped in between, our statements fail and the worker
	 * restarts.
	 */
	hx_worker_begin_xact("running stream tasks");

	started = GetCurrentTimestamp();
	hx_run_micro_batches(tasks, ntasks, outs);
	for (i = 0; i < ntasks; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (tasks[i].micro_batch_size == 0)
			hx_exec_handler(&tasks[i], &outs[i], batch_cxt);
	}
	/* what a task takes, for the size of the next claims */
	per_task = (double) (GetCurrentTimestamp() - started) / ntasks;
	task_us = (task_us < 0) ? per_task : (task_us + per_task) / 2;
	/* a handler that wrote gave this transaction an id (bookings come next) */
	handlers_write = TransactionIdIsValid(GetTopTransactionIdIfAny());
	failed = hx_book_failures(tasks, outs, ntasks, next_retry);
	done = hx_book_done(tasks, outs, ntasks);

	/*
	 * A full batch suggests more is waiting: claim the next one now, so its
	 * attempts commit with this batch's results (still before its handlers
	 * run) and the worker needs no separate claim transaction.
	 */
	nnext = 0;
	if (ntasks >= claimed && hx_suspects_pending() == 0 &&
		!hx_slot_stop_wanted(my_slot))
		nnext = hx_claim_stream_next(MyProcPid, hx_claim_size(), next, next_cxt);

	hx_worker_end_xact();
	pgstat_report_activity(STATE_IDLE, NULL);
	hx_slot_count(my_slot, done, failed);
	return nnext;
}

/*
 * hx_run_batch_guarded
 *		hx_run_batch; should its transaction fail as a whole (an outcome
 *		that cannot be booked: the handlers' effects are rolled back with
 *		it, the attempts stay counted), runs each task of the batch alone,
 *		so that the one that cannot be booked ends failed or set aside and
 *		the others done.  No transaction open.
 */
static int
hx_run_batch_guarded(HxTask *tasks, int ntasks, TimestampTz *next_retry,
					 HxTask **next)
{
	ErrorData  *volatile edata = NULL;
	volatile int nnext = 0;
	int			i;

	PG_TRY();
	{
		nnext = hx_run_batch(tasks, ntasks, next_retry, next);
	}
	PG_CATCH();
	{
		edata = hx_worker_catch(batch_cxt);
	}
	PG_END_TRY();
	if (edata == NULL)
		return nnext;

	ereport(LOG,
			(errmsg("hybridexec stream worker %d: a batch of %d task(s) failed as a whole (%s); running them one at a time",
					my_slot, ntasks, edata->message)));
	for (i = 0; i < ntasks; i++)
	{
		CHECK_FOR_INTERRUPTS();
		(void) hx_exec_alone(&tasks[i], batch_cxt, hx_count_alone, NULL);
	}
	return 0;
}

/*
 * hx_micro_batch_due
 *		When the oldest buffered micro-batch must run even if not full, or
 *		0 when none waits.  A worker asks whenever it goes idle, so without
 *		micro-batched types the queue is not looked at (the join walked
 *		every queued stream task).  A kept statement: as a SQL function
 *		(with its own search_path, never inlined) it was parsed and planned
 *		at every call, a quarter of an idle-going worker's time.  In a
 *		transaction, SPI connected.
 */
static TimestampTz
hx_micro_batch_due(void)
{
	static HxStmt due = {
		"SELECT CASE WHEN EXISTS (SELECT 1 FROM @extschema@.hx_type y WHERE y.micro_batch_size IS NOT NULL) "
		"THEN (SELECT min(t.submitted_at + y.micro_batch_wait) "
		"FROM ONLY @extschema@.hx_task t JOIN @extschema@.hx_type y ON y.task_type = t.task_type "
		"WHERE y.micro_batch_size IS NOT NULL "
		"AND t.status IN ('queued', 'failed') AND t.route = 'stream') END"
	};
	bool		isnull;
	Datum		d = hx_stmt_value(&due, NULL, NULL, &isnull);

	return isnull ? 0 : DatumGetTimestampTz(d);
}

/*
 * hx_run_micro_batches
 *		Hands the claimed tasks of each micro-batched type to its batch
 *		handler together (one call per micro_batch_size tasks; a failing
 *		call is isolated task by task by hx_exec_batch) and fills their
 *		outcomes.  In the run transaction.
 */
static void
hx_run_micro_batches(HxTask *tasks, int ntasks, HxOutcome *outs)
{
	HxTask	   *group = palloc(sizeof(HxTask) * ntasks);
	HxOutcome  *gouts = palloc(sizeof(HxOutcome) * ntasks);
	int		   *where = palloc(sizeof(int) * ntasks);
	bool	   *taken = palloc0(sizeof(bool) * ntasks);
	int			i;
	int			j;

	for (i = 0; i < ntasks; i++)
	{
		int			n = 0;

		if (tasks[i].micro_batch_size == 0 || taken[i])
			continue;
		for (j = i; j < ntasks && n < tasks[i].micro_batch_size; j++)
			if (tasks[j].micro_batch_size > 0 && !taken[j] &&
				strcmp(tasks[j].task_type, tasks[i].task_type) == 0)
			{
				taken[j] = true;
				where[n] = j;
				group[n++] = tasks[j];
			}
		hx_exec_batch(group, n, gouts, batch_cxt);
		for (j = 0; j < n; j++)
			outs[where[j]] = gouts[j];
	}
}

/*
 * hx_sleep_ms
 *		How long to sleep when idle: the poll interval, or less when a
 *		failed task is due for its retry sooner.
 */
static long
hx_sleep_ms(TimestampTz next_retry)
{
	long		ms = hx_poll_interval_ms;

	if (next_retry != 0)
	{
		long		until = (long) ((next_retry - GetCurrentTimestamp()) / 1000) + 1;

		ms = Max(1, Min(ms, until));
	}
	return ms;
}
