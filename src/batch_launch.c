/*-------------------------------------------------------------------------
 *
 * batch_launch.c
 *	  Handing window runs to batch workers: the batch worker slots in
 *	  shared memory (one per hybridexec.batch_workers, each serving at most
 *	  one run), hx_launch_run(), which reserves a slot and starts a dynamic
 *	  background worker for a run (hx_run_window()'s launch), and
 *	  hx_batch_workers(), which shows the slots; hx_preloaded() tells SQL
 *	  whether there are slots at all.
 *
 *	  The slots are shared by every database the launcher serves: while
 *	  another database has work for them, one takes no more than its fair
 *	  share (see hx_batch_slot_reserve).
 *
 *	  A slot is reserved by the launcher before the worker exists, and
 *	  freed when the worker exits (or, should the postmaster never start
 *	  it, by the next launch after a minute).  A crash resets shared memory,
 *	  so every run then has no worker and the scheduler relaunches it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

/* a reserved slot whose worker has not started after this is stale */
#define HX_LAUNCH_STALE_MS	60000

/* a database that found no fair slot counts as wanting one for this long */
#define HX_BATCH_ASK_MS		10000

PG_FUNCTION_INFO_V1(hx_launch_run);
PG_FUNCTION_INFO_V1(hx_batch_worker_slots);
PG_FUNCTION_INFO_V1(hx_preloaded);

static void hx_batch_slot_detach(int code, Datum arg);

/*
 * hx_batch_fair_share
 *		How many more slots this database may take: the free ones, but
 *		while another served database holds a slot or recently found none,
 *		only up to its share (the slots divided among the served databases,
 *		at least one).  Running workers are never stopped for it: a
 *		database over its share gives slots back as its runs end.  Caller
 *		holds hx_shared->mutex.
 */
static int
hx_batch_fair_share(TimestampTz now)
{
	int			mine = 0;
	int			used = 0;
	int			served = 0;
	bool		others = false;
	int			share;
	int			i;

	for (i = 0; i < hx_shared->nbatch; i++)
	{
		HxBatchSlot *s = &hx_shared->batch[i];

		if (s->run_id == 0)
			continue;
		used++;
		if (s->dboid == MyDatabaseId)
			mine++;
		else
			others = true;
	}
	for (i = 0; i < HX_MAX_DATABASES; i++)
	{
		HxDb	   *db = &hx_shared->dbs[i];

		if (db->state != HX_DB_SERVED)
			continue;
		served++;
		if (db->dboid != MyDatabaseId && db->batch_asked_at != 0 &&
			!TimestampDifferenceExceeds(db->batch_asked_at, now, HX_BATCH_ASK_MS))
			others = true;
	}
	if (!others)
		return hx_shared->nbatch - used;
	share = Max(1, hx_shared->nbatch / Max(served, 1));
	return Max(0, Min(hx_shared->nbatch - used, share - mine));
}

/*
 * hx_batch_slot_reserve
 *		Reserves up to want free slots for run_id of this database, within
 *		its fair share, storing their numbers in slots[]; returns how many
 *		(0 when the run already has a slot or none is free for it, which
 *		the database's entry remembers for a while so that others leave it
 *		its share).
 */
static int
hx_batch_slot_reserve(int64 run_id, int want, int *slots)
{
	TimestampTz now = GetCurrentTimestamp();
	int			n = 0;
	int			i;
	HxDb	   *db;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nbatch; i++)
	{
		HxBatchSlot *s = &hx_shared->batch[i];

		if (s->run_id != 0 && s->pid == 0 &&
			TimestampDifferenceExceeds(s->launched_at, now, HX_LAUNCH_STALE_MS))
			s->run_id = 0;
		if (s->run_id == run_id && s->dboid == MyDatabaseId)
		{
			SpinLockRelease(&hx_shared->mutex);
			return 0;
		}
	}
	want = Min(want, hx_batch_fair_share(now));
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
		db->batch_asked_at = (want <= 0) ? now : 0;
	for (i = 0; i < hx_shared->nbatch && n < want; i++)
	{
		HxBatchSlot *s = &hx_shared->batch[i];

		if (s->run_id != 0)
			continue;
		s->dboid = MyDatabaseId;
		s->run_id = run_id;
		s->pid = 0;
		s->finishing = false;
		s->launched_at = now;
		slots[n++] = i;
	}
	for (i = 0; i < n; i++)
	{
		hx_shared->batch[slots[i]].part = i;
		hx_shared->batch[slots[i]].parts = n;
	}
	SpinLockRelease(&hx_shared->mutex);
	return n;
}

/*
 * hx_batch_slot_release
 *		Frees a slot.
 */
static void
hx_batch_slot_release(int slot)
{
	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->batch[slot].run_id = 0;
	hx_shared->batch[slot].pid = 0;
	hx_shared->batch[slot].finishing = false;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_batch_slot_attach
 *		Called by a starting batch worker: takes over its reserved slot (or
 *		exits if the slot was given away meanwhile) and frees it at exit.
 */
void
hx_batch_slot_attach(int slot, int64 run_id)
{
	bool		ok;

	if (hx_shared == NULL || slot < 0 || slot >= hx_shared->nbatch)
		elog(FATAL, "hybridexec batch worker slot %d does not exist", slot);
	SpinLockAcquire(&hx_shared->mutex);
	ok = (hx_shared->batch[slot].run_id == run_id &&
		  hx_shared->batch[slot].dboid == MyDatabaseId &&
		  hx_shared->batch[slot].pid == 0);
	if (ok)
		hx_shared->batch[slot].pid = MyProcPid;
	SpinLockRelease(&hx_shared->mutex);
	if (!ok)
	{
		ereport(LOG,
				(errmsg("hybridexec batch worker for run %lld found its slot taken; exiting",
						(long long) run_id)));
		proc_exit(0);
	}
	on_shmem_exit(hx_batch_slot_detach, Int32GetDatum(slot));
}

/*
 * hx_batch_live_pids
 *		Copies the pids of the batch workers that are alive; returns how
 *		many.  A run's start uses it to tell orphaned tasks from busy ones.
 */
int
hx_batch_live_pids(int *pids, int max)
{
	int			n = 0;
	int			i;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nbatch && n < max; i++)
		if (hx_shared->batch[i].pid != 0)
			pids[n++] = hx_shared->batch[i].pid;
	SpinLockRelease(&hx_shared->mutex);
	return n;
}

/*
 * hx_batch_slot_finish
 *		Called by a batch worker done with its share of a run, while it
 *		holds the run row's lock: marks its slot finishing and tells
 *		whether it is the last of the run's workers (none other is started
 *		or about to start and not finishing).  Whoever comes second takes
 *		the lock after the first committed, so exactly one is last.
 */
bool
hx_batch_slot_finish(int slot, int64 run_id)
{
	bool		last = true;
	int			i;

	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->batch[slot].finishing = true;
	for (i = 0; i < hx_shared->nbatch; i++)
		if (i != slot && hx_shared->batch[i].run_id == run_id &&
			hx_shared->batch[i].dboid == MyDatabaseId &&
			!hx_shared->batch[i].finishing)
			last = false;
	SpinLockRelease(&hx_shared->mutex);
	return last;
}

/*
 * hx_batch_slot_detach
 *		on_shmem_exit callback of a batch worker.
 */
static void
hx_batch_slot_detach(int code, Datum arg)
{
	hx_batch_slot_release(DatumGetInt32(arg));
}

/*
 * hx_launch_run
 *		SQL: starts up to "parallel" batch workers for a run, each taking
 *		its share of the run's tasks.  The workers wait for the calling
 *		transaction to end, so they see the run row it wrote (or exit
 *		quietly if it rolled back).  Returns how many were started: 0 when
 *		the run already has workers or every slot is busy (the scheduler
 *		tries again later).
 */
Datum
hx_launch_run(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	int			parallel = PG_GETARG_INT32(1);
	int			slots[HX_MAX_BATCH_WORKERS];
	int			n;
	int			i;

	/* the user called hx_run_window() (which checks first); say that */
	hx_require_preload("hx_run_window()");
	if (run_id <= 0 || parallel < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run id and parallel must be positive, not %lld and %d",
						(long long) run_id, parallel)));

	n = hx_batch_slot_reserve(run_id, Min(parallel, HX_MAX_BATCH_WORKERS), slots);
	for (i = 0; i < n; i++)
	{
		BackgroundWorker worker;
		HxBatchStart start;

		start.run_id = run_id;
		start.launcher_xid = GetTopTransactionId();
		start.dboid = MyDatabaseId;
		start.part = i;
		start.parts = n;

		hx_worker_describe(&worker, "hx_batch_worker_main", "hybridexec batch worker",
						   psprintf("hybridexec batch worker for run %lld (%d/%d)",
									(long long) run_id, i + 1, n),
						   BGW_NEVER_RESTART);
		worker.bgw_main_arg = Int32GetDatum(slots[i]);
		memcpy(worker.bgw_extra, &start, sizeof(start));
		worker.bgw_notify_pid = 0;

		if (!RegisterDynamicBackgroundWorker(&worker, NULL))
		{
			int			k;

			/* the started ones keep their shares; the rest waits for the next run */
			for (k = i; k < n; k++)
				hx_batch_slot_release(slots[k]);
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could start only %d of %d batch workers for run %lld",
							i, n, (long long) run_id),
					 errhint("Raise max_worker_processes; the scheduler retries a run that has none.")));
			PG_RETURN_INT32(i);
		}
	}
	PG_RETURN_INT32(n);
}

/*
 * hx_batch_worker_slots
 *		SQL: one row per batch worker slot that is free or serves a run of
 *		this database.
 */
Datum
hx_batch_worker_slots(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxBatchSlot copy[HX_MAX_BATCH_WORKERS];
	int			n;
	int			i;

	hx_require_preload("hx_batch_workers()");
	InitMaterializedSRF(fcinfo, 0);
	SpinLockAcquire(&hx_shared->mutex);
	n = hx_shared->nbatch;
	memcpy(copy, hx_shared->batch, sizeof(HxBatchSlot) * n);
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < n; i++)
	{
		Datum		values[6];
		bool		free_slot = (copy[i].run_id == 0);
		bool		nulls[6] = {false, copy[i].pid == 0, free_slot, free_slot,
		free_slot, free_slot};

		/* another database's runs are not this one's business */
		if (!free_slot && copy[i].dboid != MyDatabaseId)
			continue;
		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(copy[i].pid);
		values[2] = Int64GetDatum(copy[i].run_id);
		values[3] = Int32GetDatum(copy[i].part);
		values[4] = Int32GetDatum(copy[i].parts);
		values[5] = TimestampTzGetDatum(copy[i].launched_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/*
 * hx_preloaded
 *		SQL (_hybridexec.hx_preloaded()): whether the library was loaded
 *		via shared_preload_libraries, i.e. whether this server has the
 *		shared memory of the stream workers, the batch worker slots and the
 *		scheduler.  Lets SQL say so before it needs them (hx_run_window)
 *		and report their absence (hx_health).
 */
Datum
hx_preloaded(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(hx_shared != NULL);
}
