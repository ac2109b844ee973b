/*-------------------------------------------------------------------------
 *
 * batch_launch.c
 *	  Handing window runs to batch workers: the batch worker slots in
 *	  shared memory (one per hybridexec.batch_workers, each serving at most
 *	  one run), hx_launch_run(), which reserves a slot and starts a dynamic
 *	  background worker for a run, and hx_batch_workers(), which shows the
 *	  slots.
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

PG_FUNCTION_INFO_V1(hx_launch_run);
PG_FUNCTION_INFO_V1(hx_batch_worker_slots);

static void hx_batch_slot_detach(int code, Datum arg);

/*
 * hx_batch_slot_reserve
 *		Reserves a free slot for run_id; -1 when the run already has a slot
 *		or none is free.
 */
static int
hx_batch_slot_reserve(int64 run_id)
{
	TimestampTz now = GetCurrentTimestamp();
	int			free_slot = -1;
	int			i;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nbatch; i++)
	{
		HxBatchSlot *s = &hx_shared->batch[i];

		if (s->run_id != 0 && s->pid == 0 &&
			TimestampDifferenceExceeds(s->launched_at, now, HX_LAUNCH_STALE_MS))
			s->run_id = 0;
		if (s->run_id == run_id)
		{
			SpinLockRelease(&hx_shared->mutex);
			return -1;
		}
		if (s->run_id == 0 && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0)
	{
		hx_shared->batch[free_slot].run_id = run_id;
		hx_shared->batch[free_slot].pid = 0;
		hx_shared->batch[free_slot].launched_at = now;
	}
	SpinLockRelease(&hx_shared->mutex);
	return free_slot;
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
	ok = (hx_shared->batch[slot].run_id == run_id && hx_shared->batch[slot].pid == 0);
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
 *		SQL: starts a batch worker for a run.  The worker waits for the
 *		calling transaction to end, so it sees the run row that transaction
 *		wrote (or exits quietly if it rolled back).  Returns false when the
 *		run already has a worker or every slot is busy (the scheduler tries
 *		again later).
 */
Datum
hx_launch_run(PG_FUNCTION_ARGS)
{
	int64		run_id = PG_GETARG_INT64(0);
	BackgroundWorker worker;
	HxBatchStart start;
	int			slot;

	hx_require_preload("hx_launch_run()");
	if (run_id <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run id must be positive, not %lld", (long long) run_id)));

	slot = hx_batch_slot_reserve(run_id);
	if (slot < 0)
		PG_RETURN_BOOL(false);

	start.run_id = run_id;
	start.launcher_xid = GetTopTransactionId();
	start.dboid = MyDatabaseId;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "hybridexec");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "hx_batch_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "hybridexec batch worker for run %lld",
			 (long long) run_id);
	snprintf(worker.bgw_type, BGW_MAXLEN, "hybridexec batch worker");
	worker.bgw_main_arg = Int32GetDatum(slot);
	memcpy(worker.bgw_extra, &start, sizeof(start));
	worker.bgw_notify_pid = 0;

	if (!RegisterDynamicBackgroundWorker(&worker, NULL))
	{
		hx_batch_slot_release(slot);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a batch worker for run %lld", (long long) run_id),
				 errhint("Raise max_worker_processes; the scheduler retries meanwhile.")));
		PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}

/*
 * hx_batch_worker_slots
 *		SQL: one row per batch worker slot.
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
		Datum		values[4];
		bool		nulls[4] = {false, copy[i].pid == 0, copy[i].run_id == 0,
		copy[i].run_id == 0};

		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(copy[i].pid);
		values[2] = Int64GetDatum(copy[i].run_id);
		values[3] = TimestampTzGetDatum(copy[i].launched_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
