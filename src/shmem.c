/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  The shared-memory state of hybridexec: one slot per stream worker
 *	  (database, pid, latch, idle flag, counters), one entry per database
 *	  the launcher watches (with the state its workers share: the claim
 *	  floor, isolated tasks, the scheduler's steps), the hooks that size
 *	  and create it, and hx_workers(), which shows it in SQL.
 *
 *	  Every field is protected by the spinlock in HxShared; holders only copy
 *	  a few words under it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_control.h"
#include "common/controldata_utils.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

HxShared   *hx_shared = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static void hx_shmem_request(void);
#endif
static void hx_shmem_startup(void);
static Size hx_shmem_size(void);
static void hx_slot_detach(int code, Datum arg);
static bool hx_shut_down_cleanly(void);

PG_FUNCTION_INFO_V1(hx_workers);
PG_FUNCTION_INFO_V1(hx_stream_worker_alive);

/*
 * hx_shmem_size
 *		Bytes needed for the shared state with one slot per stream worker.
 */
static Size
hx_shmem_size(void)
{
	return add_size(offsetof(HxShared, slots),
					mul_size(Max(hx_stream_workers, 1), sizeof(HxWorkerSlot)));
}

/*
 * hx_shmem_init_hooks
 *		Chains our shared-memory hooks; called from _PG_init in the
 *		postmaster only.
 */
void
hx_shmem_init_hooks(void)
{
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = hx_shmem_request;
#else
	RequestAddinShmemSpace(hx_shmem_size());
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = hx_shmem_startup;
}

#if PG_VERSION_NUM >= 150000
/*
 * hx_shmem_request
 *		Asks the postmaster for our shared memory.
 */
static void
hx_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(hx_shmem_size());
}
#endif

/*
 * hx_shmem_startup
 *		Creates (or, in a child, attaches to) the shared state.  Runs at
 *		every (re)initialisation of shared memory, including after a crash,
 *		which is why every slot starts empty.
 */
static void
hx_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	hx_shared = ShmemInitStruct("hybridexec", hx_shmem_size(), &found);
	if (!found)
	{
		memset(hx_shared, 0, hx_shmem_size());
		SpinLockInit(&hx_shared->mutex);
		SpinLockInit(&hx_shared->wait_mutex);
		hx_shared->nslots = hx_stream_workers;
		hx_shared->nbatch = hx_batch_workers;
		hx_shared->clean_start = hx_shut_down_cleanly();
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * hx_shut_down_cleanly
 *		Whether pg_control says the server was shut down cleanly.  Read when
 *		shared memory is created (in the postmaster, before the startup
 *		process runs): after a crash, a crash restart or an immediate
 *		shutdown it says the server was still running (or recovering); a
 *		standby's counts as not clean too.  Stream workers make their first
 *		claims durable after such a start (stream_worker.c).
 */
static bool
hx_shut_down_cleanly(void)
{
	bool		crc_ok;
	ControlFileData *control = get_controlfile(DataDir, &crc_ok);
	bool		clean = crc_ok && control->state == DB_SHUTDOWNED;

	pfree(control);
	return clean;
}

/*
 * hx_require_preload
 *		Fails with a clear error when the library was not preloaded, so that
 *		functions which need the workers do not silently do nothing.
 */
void
hx_require_preload(const char *what)
{
	if (hx_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs hybridexec to be loaded via shared_preload_libraries", what),
				 errhint("Add hybridexec to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * hx_db_locked
 *		The entry of database dboid, or NULL when the launcher keeps none
 *		(the database is not served).  Caller holds hx_shared->mutex.  The
 *		entry of the caller's own database is remembered between calls.
 */
HxDb *
hx_db_locked(Oid dboid)
{
	static int	cached = -1;
	int			i;

	if (cached >= 0 && hx_shared->dbs[cached].dboid == dboid &&
		hx_shared->dbs[cached].state != HX_DB_FREE)
		return &hx_shared->dbs[cached];
	for (i = 0; i < HX_MAX_DATABASES; i++)
		if (hx_shared->dbs[i].state != HX_DB_FREE && hx_shared->dbs[i].dboid == dboid)
		{
			if (dboid == MyDatabaseId)
				cached = i;
			return &hx_shared->dbs[i];
		}
	return NULL;
}

/*
 * hx_slot_attach
 *		Publishes the calling stream worker in its slot and arranges for the
 *		slot to be freed when the process exits.  Exits if the launcher has
 *		given the slot to another database meanwhile.
 */
void
hx_slot_attach(int slot)
{
	HxWorkerSlot *s;

	if (hx_shared == NULL || slot < 0 || slot >= hx_shared->nslots)
		elog(FATAL, "hybridexec stream worker slot %d does not exist", slot);

	s = &hx_shared->slots[slot];
	SpinLockAcquire(&hx_shared->mutex);
	if (s->dboid != MyDatabaseId || s->pid != 0)
	{
		SpinLockRelease(&hx_shared->mutex);
		ereport(LOG,
				(errmsg("hybridexec stream worker slot %d was given away before its worker started; exiting",
						slot)));
		proc_exit(0);
	}
	s->pid = MyProcPid;
	s->latch = MyLatch;
	s->idle = false;
	s->wait_xid = InvalidTransactionId;
	s->started_at = GetCurrentTimestamp();
	s->last_task_at = 0;
	s->tasks_done = 0;
	s->tasks_failed = 0;
	SpinLockRelease(&hx_shared->mutex);

	on_shmem_exit(hx_slot_detach, Int32GetDatum(slot));
}

/*
 * hx_slot_detach
 *		on_shmem_exit callback: frees the slot of an exiting worker.
 */
static void
hx_slot_detach(int code, Datum arg)
{
	HxWorkerSlot *s = &hx_shared->slots[DatumGetInt32(arg)];

	SpinLockAcquire(&hx_shared->mutex);
	s->pid = 0;
	s->latch = NULL;
	s->idle = false;
	SpinLockRelease(&hx_shared->mutex);
	hx_launcher_wake();
}

/*
 * hx_slot_stop_wanted
 *		Whether the launcher wants this worker's slot back (its database
 *		has more than its share, or is no longer served): the worker then
 *		exits at its next idle moment.
 */
bool
hx_slot_stop_wanted(int slot)
{
	bool		stop;

	SpinLockAcquire(&hx_shared->mutex);
	stop = hx_shared->slots[slot].stop;
	SpinLockRelease(&hx_shared->mutex);
	return stop;
}

/*
 * hx_slot_set_idle
 *		Marks a worker as waiting for work (or not).  The waker clears the
 *		flag when it sets the worker's latch.
 */
void
hx_slot_set_idle(int slot, bool idle)
{
	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->slots[slot].idle = idle;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_slot_wait_for_committer
 *		Called by a worker woken at a transaction's PRE_COMMIT: returns once
 *		that transaction has finished committing (or aborted), so that its
 *		tasks are visible, by waiting on its lock.  In a transaction.
 */
void
hx_slot_wait_for_committer(int slot)
{
	TransactionId xid;

	SpinLockAcquire(&hx_shared->mutex);
	xid = hx_shared->slots[slot].wait_xid;
	hx_shared->slots[slot].wait_xid = InvalidTransactionId;
	SpinLockRelease(&hx_shared->mutex);

	if (TransactionIdIsValid(xid))
		XactLockTableWait(xid, NULL, NULL, XLTW_None);
}

/*
 * hx_slot_count
 *		Adds to a worker's counters after a batch.
 */
void
hx_slot_count(int slot, int done, int failed)
{
	HxWorkerSlot *s = &hx_shared->slots[slot];

	SpinLockAcquire(&hx_shared->mutex);
	s->tasks_done += done;
	s->tasks_failed += failed;
	s->last_task_at = GetCurrentTimestamp();
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_stream_worker_alive
 *		SQL: whether a stream worker with this pid is alive now.  The crash
 *		sweep asks it for each running task while it scans, after its
 *		statement took its snapshot: a worker whose claim that snapshot sees
 *		had published its pid before claiming, so it is never taken for
 *		lost (a list of pids read before the statement could miss a worker
 *		that started and claimed in between).
 */
Datum
hx_stream_worker_alive(PG_FUNCTION_ARGS)
{
	int32		pid = PG_GETARG_INT32(0);
	bool		alive = false;
	int			i;

	if (hx_shared == NULL)
		PG_RETURN_BOOL(false);
	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nslots && !alive; i++)
		alive = (hx_shared->slots[i].pid == pid);
	SpinLockRelease(&hx_shared->mutex);
	PG_RETURN_BOOL(alive);
}

/*
 * hx_suspects_pending
 *		The generation of isolated stream tasks to look for, or 0 when the
 *		last look found none since the last sweep.  Read it before taking
 *		the snapshot that looks.
 */
uint32
hx_suspects_pending(void)
{
	uint32		gen = 0;
	HxDb	   *db;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL && db->suspects_gen != db->suspects_seen)
		gen = db->suspects_gen;
	SpinLockRelease(&hx_shared->mutex);
	return gen;
}

/*
 * hx_suspects_bump
 *		A sweep put back (or may have put back) isolated tasks and has
 *		committed: workers look for them again.
 */
void
hx_suspects_bump(void)
{
	HxDb	   *db;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
	{
		db->suspects_gen++;
		if (db->suspects_gen == 0)
			db->suspects_gen = 1;
	}
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_suspects_none
 *		A look with generation gen found no isolated task: stop looking,
 *		unless a sweep has bumped the generation since.
 */
void
hx_suspects_none(uint32 gen)
{
	HxDb	   *db;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL && db->suspects_gen == gen)
		db->suspects_seen = gen;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * How long a backlog's claims may rely on the floor before one claim looks
 * at the whole queue again: stream tasks that become due without being
 * queued anew (a retry after its backoff, a micro-batch that waited long
 * enough, the tasks of a claim that rolled back) are found at the latest
 * this long after they are due while a backlog lasts.
 */
#define HX_CLAIM_RESCAN_MS	500

/*
 * hx_claim_floor_get
 *		Whether the next stream claim may start after the floor, and the
 *		floor and its generation.  False when there is no floor (no
 *		backlog) or it is time to look at the whole queue.  Read it before
 *		the snapshot of the claim.  Without shared memory (not preloaded),
 *		never.
 */
bool
hx_claim_floor_get(int32 *negprio, int64 *id, uint64 *gen)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		use = false;
	HxDb	   *db;

	*gen = 0;
	if (hx_shared == NULL)
		return false;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
	{
		*negprio = db->floor_negprio;
		*id = db->floor_id;
		*gen = db->floor_gen;
		use = db->floor_set &&
			!TimestampDifferenceExceeds(db->floor_rescan_at, now,
										HX_CLAIM_RESCAN_MS);
	}
	SpinLockRelease(&hx_shared->mutex);
	return use;
}

/* the floor just before a key: claims start after it, at the key */
static inline int64
hx_id_before(int64 id)
{
	return id == PG_INT64_MIN ? id : id - 1;
}

/*
 * hx_claim_floor_advance
 *		A full claim (it took as many tasks as it asked for) ended at key
 *		(negprio, id), or a claim read to the end of the claim index (the
 *		highest key): later claims may start after it - but not after a
 *		key queued since the claimer read generation gen, nor at all when
 *		more were queued since than the ring remembers.  full says the
 *		claim looked at the whole queue: it restarts the rescan clock, and
 *		may move the floor down.  Call it before the claim commits: tasks
 *		another claimer skipped as locked by us are ours once we commit, or
 *		back in the queue if we do not, and then the next rescan finds
 *		them.
 */
void
hx_claim_floor_advance(uint64 gen, bool full, int32 negprio, int64 id)
{
	uint64		g;
	HxDb	   *db;

	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL && full)
		db->floor_rescan_at = GetCurrentTimestamp();
	if (db == NULL || db->floor_gen - gen > HX_FLOOR_RING)
	{
		SpinLockRelease(&hx_shared->mutex);
		return;
	}
	/* just before the lowest key queued since */
	for (g = gen + 1; g <= db->floor_gen; g++)
	{
		HxClaimKey *k = &db->floor_lowered[g % HX_FLOOR_RING];

		if (!hx_claim_key_before(negprio, id, k->negprio, k->id))
		{
			negprio = k->negprio;
			id = hx_id_before(k->id);
		}
	}
	if (full || !db->floor_set ||
		hx_claim_key_before(db->floor_negprio, db->floor_id, negprio, id))
	{
		db->floor_set = true;
		db->floor_negprio = negprio;
		db->floor_id = id;
	}
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_claim_floor_clear
 *		A claim found nothing after the floor: claims look at the whole
 *		queue again (for tasks below it that became due).
 */
void
hx_claim_floor_clear(void)
{
	HxDb	   *db;

	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
		db->floor_set = false;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_claim_floor_lower
 *		A transaction queues stream tasks of which (negprio, id) is the
 *		lowest key: the floor must not be above it.  Called before its
 *		commit, so that claims that see the tasks start low enough, and
 *		again after it, so that no claim whose snapshot did not see them
 *		raises the floor past them.  Must not fail.
 */
void
hx_claim_floor_lower(int32 negprio, int64 id)
{
	HxClaimKey *k;
	HxDb	   *db;

	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db == NULL)
	{
		SpinLockRelease(&hx_shared->mutex);
		return;
	}
	if (db->floor_set &&
		!hx_claim_key_before(db->floor_negprio, db->floor_id, negprio, id))
	{
		/* claims start after the floor: just before the task */
		db->floor_negprio = negprio;
		db->floor_id = hx_id_before(id);
	}
	db->floor_gen++;
	k = &db->floor_lowered[db->floor_gen % HX_FLOOR_RING];
	k->negprio = negprio;
	k->id = id;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_stream_work_waiting
 *		True when a stream worker is busy or has just been woken: stream
 *		work is waiting or running, and opportunistic batch work should
 *		give way.
 */
bool
hx_stream_work_waiting(void)
{
	bool		busy = false;
	int			i;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nslots; i++)
		if (hx_shared->slots[i].pid != 0 && !hx_shared->slots[i].idle)
			busy = true;
	SpinLockRelease(&hx_shared->mutex);
	return busy;
}

/*
 * hx_workers
 *		SQL: one row per stream worker slot the launcher gave this
 *		database.  Copies the slots under the spinlock, then builds the
 *		rows without holding it.
 */
Datum
hx_workers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxWorkerSlot *copy;
	int			nslots;
	int			i;

	hx_require_preload("hx_workers()");
	InitMaterializedSRF(fcinfo, 0);

	nslots = hx_shared->nslots;
	copy = palloc(sizeof(HxWorkerSlot) * Max(nslots, 1));
	SpinLockAcquire(&hx_shared->mutex);
	memcpy(copy, hx_shared->slots, sizeof(HxWorkerSlot) * nslots);
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < nslots; i++)
	{
		Datum		values[8];
		bool		nulls[8];
		HxWorkerSlot *s = &copy[i];

		if (s->dboid != MyDatabaseId)
			continue;
		memset(nulls, 0, sizeof(nulls));
		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(s->pid);
		nulls[1] = (s->pid == 0);
		values[2] = CStringGetTextDatum("stream");
		values[3] = CStringGetTextDatum(s->pid == 0 ? "stopped" :
										(s->idle ? "idle" : "busy"));
		values[4] = TimestampTzGetDatum(s->started_at);
		nulls[4] = (s->pid == 0);
		values[5] = Int64GetDatum((int64) s->tasks_done);
		values[6] = Int64GetDatum((int64) s->tasks_failed);
		values[7] = TimestampTzGetDatum(s->last_task_at);
		nulls[7] = (s->last_task_at == 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
