/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one static background worker, connected to no database,
 *	  that serves every database with the extension (or only
 *	  hybridexec.database_name when that is set).
 *
 *	  Every second, and whenever something changes, it reads pg_database
 *	  and keeps one entry per database that allows connections and is not
 *	  a template (shmem.c's HxDb).  For each it starts a scheduler
 *	  (scheduler.c), which tells whether the extension is there: it makes
 *	  the entry SERVED, or ABSENT and exits.  The commit of CREATE, ALTER
 *	  or DROP EXTENSION hybridexec bumps the entry's notice_gen (through
 *	  the extension script's call of hx_launcher_notice(), or drop.c), and
 *	  an ABSENT entry whose generation moved is looked at again.  So a new
 *	  database, a CREATE EXTENSION and a DROP EXTENSION are all noticed
 *	  without a restart.
 *
 *	  The stream workers (hybridexec.stream_workers slots) are shared by
 *	  the SERVED databases: each gets stream_workers / databases of them,
 *	  the first ones by oid one more.  A database that gets a new share
 *	  asks the workers beyond it to leave (HxWorkerSlot.stop: they exit at
 *	  their next idle moment, claiming nothing ahead), and free slots are
 *	  started for databases below their share.  A busy database therefore
 *	  never holds another's workers: each database's commits wake only its
 *	  own workers.  Batch workers are shared by batch_launch.c.
 *
 *	  Workers the launcher starts do not restart by themselves: it starts
 *	  them again (at most once a second per slot) while they are wanted.
 *	  DROP DATABASE, renaming a database, moving it to another tablespace
 *	  or copying it as a template need it to have no other connections;
 *	  drop.c pauses the database first (hx_db_pause): its workers are
 *	  stopped and kept out for a few seconds.
 *
 *	  Shared state is under hx_shared->mutex; the launcher alone adds and
 *	  frees entries and assigns slots.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "hybridexec.h"

/* least time between two starts of the same worker */
#define HX_RESTART_MS		1000

/* a database paused by drop.c stays paused this long at most */
#define HX_PAUSE_S			10

/* what the launcher keeps of the workers it started (its own memory) */
static BackgroundWorkerHandle *sched_handle[HX_MAX_DATABASES];
static TimestampTz sched_started[HX_MAX_DATABASES];
static Oid	sched_dboid[HX_MAX_DATABASES];
static BackgroundWorkerHandle *stream_handle[HX_MAX_STREAM_WORKERS];
static TimestampTz stream_started[HX_MAX_STREAM_WORKERS];
static Oid	stream_dboid[HX_MAX_STREAM_WORKERS];

/* this transaction created, updated or dropped the extension */
static bool notice_pending = false;

PG_FUNCTION_INFO_V1(hx_launcher_notice);
PG_FUNCTION_INFO_V1(hx_launcher_status);

static void hx_launcher_xact_callback(XactEvent event, void *arg);
static void hx_launcher_detach(int code, Datum arg);
static int	hx_launcher_scan(Oid *oids, char (*names)[NAMEDATALEN], int max);
static void hx_launcher_sync(Oid *oids, int n);
static void hx_launcher_schedulers(Oid *oids, char (*names)[NAMEDATALEN], int n);
static void hx_launcher_stream(void);
static bool hx_handle_alive(BackgroundWorkerHandle *handle);
static BackgroundWorkerHandle *hx_start_worker(const char *function, const char *type,
											   const char *name, int arg, Oid dboid);

/*
 * hx_launcher_init
 *		Installs the transaction callback that passes on extension changes
 *		at commit; from _PG_init, in every process.
 */
void
hx_launcher_init(void)
{
	RegisterXactCallback(hx_launcher_xact_callback, NULL);
}

/*
 * hx_register_launcher
 *		Registers the launcher; from _PG_init while preloading.  The
 *		postmaster restarts it, after a crash at once.
 */
void
hx_register_launcher(void)
{
	BackgroundWorker worker;

	hx_worker_describe(&worker, "hx_launcher_main", "hybridexec launcher",
					   "hybridexec launcher", 1);
	RegisterBackgroundWorker(&worker);
}

/*
 * hx_launcher_main
 *		Entry point of the launcher.
 */
void
hx_launcher_main(Datum main_arg)
{
	Oid			oids[HX_MAX_DATABASES];
	char		names[HX_MAX_DATABASES][NAMEDATALEN];

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* shared catalogs only: pg_database */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("hybridexec launcher");

	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->launcher_latch = MyLatch;
	SpinLockRelease(&hx_shared->mutex);
	on_shmem_exit(hx_launcher_detach, (Datum) 0);

	for (;;)
	{
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		ResetLatch(MyLatch);

		n = hx_launcher_scan(oids, names, HX_MAX_DATABASES);
		hx_launcher_sync(oids, n);
		hx_launcher_schedulers(oids, names, n);
		hx_launcher_stream();

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 HX_RESTART_MS, PG_WAIT_EXTENSION);
	}
}

/*
 * hx_launcher_detach
 *		on_shmem_exit callback: no launcher to wake any more.
 */
static void
hx_launcher_detach(int code, Datum arg)
{
	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->launcher_latch = NULL;
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_launcher_scan
 *		The databases to serve, read from pg_database in a transaction of
 *		its own: those that allow connections, are not templates and are
 *		valid (not half dropped), or only hybridexec.database_name.
 *		Returns how many (at most max; the rest are left out, with a
 *		warning).
 */
static int
hx_launcher_scan(Oid *oids, char (*names)[NAMEDATALEN], int max)
{
	static bool warned = false;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int			n = 0;
	bool		more = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database f = (Form_pg_database) GETSTRUCT(tup);

		if (!f->datallowconn || f->datistemplate)
			continue;
#ifdef DATCONNLIMIT_INVALID_DB
		if (f->datconnlimit == DATCONNLIMIT_INVALID_DB)
			continue;
#endif
		if (hx_database_name != NULL && hx_database_name[0] != '\0' &&
			strcmp(NameStr(f->datname), hx_database_name) != 0)
			continue;
		if (n == max)
		{
			more = true;
			continue;
		}
		oids[n] = f->oid;
		strlcpy(names[n], NameStr(f->datname), NAMEDATALEN);
		n++;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	if (more && !warned)
		ereport(WARNING,
				(errmsg("hybridexec launcher: more than %d databases; the others are not served", max),
				 errhint("Set hybridexec.database_name to serve one database.")));
	warned = more;
	return n;
}

/*
 * hx_launcher_sync
 *		Keeps one entry per database to serve: frees the entries of
 *		databases gone (their workers, if still running, are asked to stop)
 *		and adds new ones, to be probed.
 */
static void
hx_launcher_sync(Oid *oids, int n)
{
	int			i;
	int			k;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < HX_MAX_DATABASES; i++)
	{
		HxDb	   *db = &hx_shared->dbs[i];
		bool		listed = false;

		if (db->state == HX_DB_FREE)
			continue;
		for (k = 0; k < n && !listed; k++)
			listed = (oids[k] == db->dboid);
		if (!listed)
			memset(db, 0, sizeof(HxDb));
	}
	for (k = 0; k < n; k++)
	{
		HxDb	   *free_db = NULL;

		if (hx_db_locked(oids[k]) != NULL)
			continue;
		for (i = 0; i < HX_MAX_DATABASES && free_db == NULL; i++)
			if (hx_shared->dbs[i].state == HX_DB_FREE)
				free_db = &hx_shared->dbs[i];
		if (free_db == NULL)
			break;
		memset(free_db, 0, sizeof(HxDb));
		free_db->dboid = oids[k];
		free_db->state = HX_DB_PROBING;
	}
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_launcher_schedulers
 *		Starts the scheduler of every entry that is being probed or served
 *		and has none running; looks again at ABSENT entries whose extension
 *		changed since, and at paused ones whose pause is over.
 */
static void
hx_launcher_schedulers(Oid *oids, char (*names)[NAMEDATALEN], int n)
{
	TimestampTz now = GetCurrentTimestamp();
	int			i;

	for (i = 0; i < HX_MAX_DATABASES; i++)
	{
		HxDb	   *db = &hx_shared->dbs[i];
		Oid			dboid;
		bool		want;
		const char *name = "?";
		int			k;

		SpinLockAcquire(&hx_shared->mutex);
		if ((db->state == HX_DB_ABSENT && db->notice_gen != db->absent_gen) ||
			(db->state == HX_DB_PAUSED && now >= db->paused_until))
		{
			db->state = HX_DB_PROBING;
			sched_started[i] = 0;	/* not a restart: look at once */
		}
		want = (db->state == HX_DB_PROBING || db->state == HX_DB_SERVED);
		dboid = db->dboid;
		SpinLockRelease(&hx_shared->mutex);

		/* the handle of a database whose entry was freed or reused */
		if (sched_handle[i] != NULL &&
			(sched_dboid[i] != dboid || !hx_handle_alive(sched_handle[i])))
		{
			pfree(sched_handle[i]);
			sched_handle[i] = NULL;
		}
		if (!want || sched_handle[i] != NULL ||
			(sched_dboid[i] == dboid &&
			 !TimestampDifferenceExceeds(sched_started[i], now, HX_RESTART_MS)))
			continue;
		for (k = 0; k < n; k++)
			if (oids[k] == dboid)
				name = names[k];
		sched_handle[i] = hx_start_worker("hx_scheduler_main", "hybridexec scheduler",
										  psprintf("hybridexec scheduler for database %s", name),
										  i, dboid);
		sched_dboid[i] = dboid;
		sched_started[i] = now;
	}
}

/*
 * hx_launcher_stream
 *		Shares the stream worker slots among the served databases: asks
 *		workers beyond their database's share to leave, frees the slots of
 *		workers gone that are not wanted, and (re)starts workers for the
 *		databases below their share.
 */
static void
hx_launcher_stream(void)
{
	TimestampTz now = GetCurrentTimestamp();
	Oid			served[HX_MAX_DATABASES];
	int			target[HX_MAX_DATABASES];
	int			count[HX_MAX_DATABASES];
	int			nserved = 0;
	bool		start[HX_MAX_STREAM_WORKERS];
	Latch	   *latches[HX_MAX_STREAM_WORKERS];
	int			nlatches = 0;
	int			nslots = hx_shared->nslots;
	int			i;
	int			k;

	for (i = 0; i < nslots; i++)
	{
		start[i] = false;
		if (stream_handle[i] != NULL && !hx_handle_alive(stream_handle[i]))
		{
			pfree(stream_handle[i]);
			stream_handle[i] = NULL;
		}
	}

	SpinLockAcquire(&hx_shared->mutex);
	/* the served databases by oid, and their shares */
	for (i = 0; i < HX_MAX_DATABASES; i++)
		if (hx_shared->dbs[i].state == HX_DB_SERVED)
		{
			Oid			o = hx_shared->dbs[i].dboid;

			for (k = nserved; k > 0 && served[k - 1] > o; k--)
				served[k] = served[k - 1];
			served[k] = o;
			nserved++;
		}
	for (k = 0; k < nserved; k++)
	{
		target[k] = nslots / nserved + (k < nslots % nserved ? 1 : 0);
		count[k] = 0;
		hx_db_locked(served[k])->stream_target = target[k];
	}

	/* the slots in use: keep them within the shares */
	for (i = 0; i < nslots; i++)
	{
		HxWorkerSlot *s = &hx_shared->slots[i];
		bool		alive = (stream_handle[i] != NULL || s->pid != 0);

		if (!OidIsValid(s->dboid) || s->stop)
		{
			if (!alive)
			{
				s->dboid = InvalidOid;
				s->stop = false;
			}
			continue;
		}
		for (k = 0; k < nserved && served[k] != s->dboid; k++)
			;
		if (k < nserved && count[k] < target[k])
		{
			count[k]++;
			start[i] = !alive;
		}
		else if (alive)
		{
			s->stop = true;
			if (s->latch != NULL)
				latches[nlatches++] = s->latch;
		}
		else
			s->dboid = InvalidOid;
	}

	/* free slots go to the databases below their share */
	for (i = 0; i < nslots; i++)
	{
		HxWorkerSlot *s = &hx_shared->slots[i];

		if (OidIsValid(s->dboid) || stream_handle[i] != NULL || s->pid != 0)
			continue;
		for (k = 0; k < nserved && count[k] >= target[k]; k++)
			;
		if (k == nserved)
			break;
		s->dboid = served[k];
		s->stop = false;
		count[k]++;
		start[i] = true;
	}
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < nlatches; i++)
		SetLatch(latches[i]);

	for (i = 0; i < nslots; i++)
	{
		Oid			dboid;

		if (!start[i])
			continue;
		SpinLockAcquire(&hx_shared->mutex);
		dboid = hx_shared->slots[i].dboid;
		SpinLockRelease(&hx_shared->mutex);
		/* a restart for the same database waits a little */
		if (dboid == stream_dboid[i] &&
			!TimestampDifferenceExceeds(stream_started[i], now, HX_RESTART_MS))
			continue;
		stream_handle[i] = hx_start_worker("hx_stream_worker_main", "hybridexec stream worker",
										   psprintf("hybridexec stream worker %d", i), i, dboid);
		stream_started[i] = now;
		stream_dboid[i] = dboid;
	}
}

/*
 * hx_handle_alive
 *		Whether a worker the launcher started has not stopped yet.
 */
static bool
hx_handle_alive(BackgroundWorkerHandle *handle)
{
	pid_t		pid;

	return GetBackgroundWorkerPid(handle, &pid) != BGWH_STOPPED;
}

/*
 * hx_start_worker
 *		Registers a dynamic worker of the library for database dboid, which
 *		notifies the launcher when it starts and stops; NULL (with a warning,
 *		once) when no background worker slot is free.
 */
static BackgroundWorkerHandle *
hx_start_worker(const char *function, const char *type, const char *name,
				int arg, Oid dboid)
{
	static bool warned = false;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	hx_worker_describe(&worker, function, type, name, BGW_NEVER_RESTART);
	worker.bgw_main_arg = Int32GetDatum(arg);
	memcpy(worker.bgw_extra, &dboid, sizeof(Oid));
	worker.bgw_notify_pid = MyProcPid;

	if (RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		warned = false;
		return handle;
	}
	if (!warned)
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("hybridexec launcher could not start a %s: no background worker slot is free", type),
				 errhint("Raise max_worker_processes (hybridexec needs one launcher, one scheduler per database, hybridexec.stream_workers and hybridexec.batch_workers)."),
				 errdetail("It tries again every second.")));
	warned = true;
	return NULL;
}

/*
 * hx_launcher_wake
 *		Sets the launcher's latch, so that it looks at once.  Must not fail.
 */
void
hx_launcher_wake(void)
{
	Latch	   *latch;

	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	latch = hx_shared->launcher_latch;
	SpinLockRelease(&hx_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * hx_db_notice_gen
 *		The generation of extension changes of our database; the scheduler
 *		reads it before it looks for the extension.
 */
uint32
hx_db_notice_gen(void)
{
	HxDb	   *db;
	uint32		gen = 0;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
		gen = db->notice_gen;
	SpinLockRelease(&hx_shared->mutex);
	return gen;
}

/*
 * hx_db_found
 *		The scheduler found the extension in our database (or not), having
 *		read generation gen before it looked.  Found: the database is
 *		served (the launcher is woken to start its stream workers); returns
 *		true.  Not found: the database is marked absent and false returned
 *		(the scheduler exits) - unless the extension changed since gen, or
 *		the entry is no longer ours to mark: then true, to look again.
 */
bool
hx_db_found(uint32 gen, bool found)
{
	HxDb	   *db;
	bool		wake = false;
	bool		stay = true;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db == NULL || db->state == HX_DB_PAUSED)
		stay = false;
	else if (found)
	{
		wake = (db->state != HX_DB_SERVED);
		db->state = HX_DB_SERVED;
	}
	else if (db->notice_gen == gen)
	{
		db->state = HX_DB_ABSENT;
		db->absent_gen = gen;
		wake = true;
		stay = false;
	}
	SpinLockRelease(&hx_shared->mutex);
	if (wake)
		hx_launcher_wake();
	return stay;
}

/*
 * hx_db_pause
 *		Stops the workers of database dboid and keeps the launcher from
 *		starting them again for HX_PAUSE_S seconds (or until the database is
 *		gone): for statements that need the database to have no other
 *		connections.  The workers get SIGTERM, as autovacuum does for DROP
 *		DATABASE; what they were doing rolls back, and the tasks of a
 *		stream worker are put back by the next one's sweep.  Called in the
 *		backend that runs the statement, before it; must not fail.
 */
void
hx_db_pause(Oid dboid)
{
	pid_t		pids[1 + HX_MAX_STREAM_WORKERS + HX_MAX_BATCH_WORKERS];
	int			npids = 0;
	HxDb	   *db;
	int			i;

	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(dboid);
	if (db == NULL)
	{
		SpinLockRelease(&hx_shared->mutex);
		return;
	}
	db->state = HX_DB_PAUSED;
	db->paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
												   HX_PAUSE_S * 1000);
	if (db->scheduler_pid != 0)
		pids[npids++] = db->scheduler_pid;
	for (i = 0; i < hx_shared->nslots; i++)
		if (hx_shared->slots[i].dboid == dboid && hx_shared->slots[i].pid != 0)
		{
			hx_shared->slots[i].stop = true;
			pids[npids++] = hx_shared->slots[i].pid;
		}
	for (i = 0; i < hx_shared->nbatch; i++)
		if (hx_shared->batch[i].dboid == dboid && hx_shared->batch[i].pid != 0)
			pids[npids++] = hx_shared->batch[i].pid;
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < npids; i++)
		(void) kill(pids[i], SIGTERM);
	hx_launcher_wake();
}

/*
 * hx_launcher_notice
 *		SQL (_hybridexec.hx_launcher_notice()): called by the extension's
 *		install and update scripts; when the transaction commits, the
 *		launcher looks at this database again.
 */
Datum
hx_launcher_notice(PG_FUNCTION_ARGS)
{
	notice_pending = true;
	PG_RETURN_VOID();
}

/*
 * hx_launcher_note_change
 *		The same for C code (DROP EXTENSION, in drop.c).
 */
void
hx_launcher_note_change(void)
{
	notice_pending = true;
}

/*
 * hx_launcher_xact_callback
 *		At commit of a transaction that changed the extension, bumps the
 *		database's generation and wakes the launcher and the database's
 *		scheduler; the commit is visible by then.  Must not fail.
 */
static void
hx_launcher_xact_callback(XactEvent event, void *arg)
{
	Latch	   *latch = NULL;
	HxDb	   *db;

	if (!notice_pending)
		return;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
	{
		notice_pending = false;
		return;
	}
	if (event != XACT_EVENT_COMMIT)
		return;
	notice_pending = false;
	if (hx_shared == NULL)
		return;
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
	{
		db->notice_gen++;
		latch = db->scheduler_latch;
	}
	SpinLockRelease(&hx_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
	hx_launcher_wake();
}

/*
 * hx_launcher_status
 *		SQL: one row per database the launcher watches: whether the
 *		extension is there, its scheduler, its share of stream workers and
 *		the workers it has.
 */
Datum
hx_launcher_status(PG_FUNCTION_ARGS)
{
	static const char *const state_names[] = {"free", "probing", "served", "absent", "paused"};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxDb	   *copy = palloc(sizeof(HxDb) * HX_MAX_DATABASES);
	int			streams[HX_MAX_DATABASES];
	int			batches[HX_MAX_DATABASES];
	int			i;
	int			k;

	hx_require_preload("hx_launcher_status()");
	InitMaterializedSRF(fcinfo, 0);
	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < HX_MAX_DATABASES; i++)
	{
		copy[i].dboid = hx_shared->dbs[i].dboid;
		copy[i].state = hx_shared->dbs[i].state;
		copy[i].scheduler_pid = hx_shared->dbs[i].scheduler_pid;
		copy[i].stream_target = hx_shared->dbs[i].stream_target;
		streams[i] = batches[i] = 0;
		for (k = 0; k < hx_shared->nslots; k++)
			if (hx_shared->slots[k].dboid == copy[i].dboid && hx_shared->slots[k].pid != 0)
				streams[i]++;
		for (k = 0; k < hx_shared->nbatch; k++)
			if (hx_shared->batch[k].dboid == copy[i].dboid && hx_shared->batch[k].pid != 0)
				batches[i]++;
	}
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < HX_MAX_DATABASES; i++)
	{
		Datum		values[6];
		bool		nulls[6] = {false, false, copy[i].scheduler_pid == 0, false, false, false};

		if (copy[i].state == HX_DB_FREE)
			continue;
		values[0] = ObjectIdGetDatum(copy[i].dboid);
		values[1] = CStringGetTextDatum(state_names[copy[i].state]);
		values[2] = Int32GetDatum(copy[i].scheduler_pid);
		values[3] = Int32GetDatum(copy[i].state == HX_DB_SERVED ? copy[i].stream_target : 0);
		values[4] = Int32GetDatum(streams[i]);
		values[5] = Int32GetDatum(batches[i]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
