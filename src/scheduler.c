/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler: one background worker per database, started by the
 *	  launcher (launcher.c), that first tells the launcher whether the
 *	  extension is there (and exits if not), then, every
 *	  hybridexec.scheduler_naptime, runs the maintenance steps that are
 *	  due, each in a transaction of its own: it relaunches window runs left
 *	  without a batch worker (after a crash or a restart the runs resume by
 *	  themselves), reclaims expired leases, retires old tasks, and less
 *	  often starts adaptive and opportunistic windows early, escalates
 *	  batch tasks that would miss their deadline and sends health alerts.
 *	  pg_cron opens windows on their schedules; this worker never waits for
 *	  a run.
 *
 *	  A step that fails is logged, its error kept in shared memory (where
 *	  hx_scheduler_status() and hx_health() show it) and tried again when
 *	  next due; it never keeps the other steps from running.  The worker
 *	  itself stops with the server, when the extension is dropped, and
 *	  for DROP DATABASE and the like (drop.c); the launcher restarts it
 *	  should it die.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "utils/wait_event.h"

#include "hybridexec.h"

/* one maintenance step */
typedef struct HxStep
{
	const char *name;
	HxStmt		stmt;
	int			every;			/* ms between runs; 0 = every tick; < 0 =
								 * every -every ticks */
	TimestampTz last_run;		/* in this process */
} HxStep;

static HxStep steps[] = {
	{"relaunch runs", {"SELECT _hybridexec.hx_relaunch_runs()"}, 0},
	{"reclaim leases", {"SELECT @extschema@.hx_reclaim_leases()"}, 0},
	{"retention", {"SELECT _hybridexec.hx_retention_step()"}, 0},
	{"ledger roll-up", {"SELECT _hybridexec.hx_ledger_rollup_step()"}, -10},
	{"start windows early", {"SELECT _hybridexec.hx_window_start_early()"}, -10},
	{"escalate", {"SELECT _hybridexec.hx_escalate()"}, -10},
	{"alerts", {"SELECT _hybridexec.hx_alert()"}, 5000},
};

StaticAssertDecl(lengthof(steps) <= HX_MAX_STEPS, "too many scheduler steps");

PG_FUNCTION_INFO_V1(hx_scheduler_status);

static void hx_scheduler_step(int i, MemoryContext cxt);
static void hx_step_report(int i, const char *error);

static void hx_scheduler_detach(int code, Datum arg);
static bool hx_scheduler_has_extension(void);

/* our database's name, for messages out of a transaction */
static char my_dbname[NAMEDATALEN];

/*
 * hx_scheduler_main
 *		Entry point of the scheduler worker of the database whose oid is in
 *		bgw_extra.
 */
void
hx_scheduler_main(Datum main_arg)
{
	MemoryContext tick_cxt;
	Oid			dboid;
	HxDb	   *db;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(Oid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("hybridexec scheduler");

	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->nsteps = lengthof(steps);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL && db->state != HX_DB_PAUSED && db->scheduler_pid == 0)
	{
		db->scheduler_pid = MyProcPid;
		db->scheduler_latch = MyLatch;
	}
	else
		db = NULL;
	SpinLockRelease(&hx_shared->mutex);
	if (db == NULL)
		proc_exit(0);			/* not wanted here (any more) */
	on_shmem_exit(hx_scheduler_detach, (Datum) 0);

	tick_cxt = AllocSetContextCreate(TopMemoryContext, "hybridexec scheduler tick",
									 ALLOCSET_DEFAULT_SIZES);

	/*
	 * The steps that run less often than every tick wait one period first:
	 * the scheduler starts as soon as CREATE EXTENSION commits, and a
	 * pg_restore that created it is still restoring (the windows' pg_cron
	 * jobs, say) - alerts or escalations on its half-restored state would
	 * be false.
	 */
	for (int i = 0; i < lengthof(steps); i++)
		if (steps[i].every != 0)
			steps[i].last_run = GetCurrentTimestamp();

	for (;;)
	{
		TimestampTz now;
		uint32		gen;
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/*
		 * Read the generation of extension changes before looking: a
		 * CREATE EXTENSION that commits after our look bumps it, so we do
		 * not report the extension absent when it has just come.
		 */
		gen = hx_db_notice_gen();
		if (!hx_db_found(gen, hx_scheduler_has_extension()))
		{
			ereport(LOG,
					(errmsg("hybridexec scheduler: extension hybridexec %s is not in database \"%s\"; its workers stop until it is created or updated",
							HX_VERSION, my_dbname)));
			proc_exit(0);
		}

		now = GetCurrentTimestamp();
		for (i = 0; i < lengthof(steps); i++)
		{
			int			every = steps[i].every < 0 ?
				-steps[i].every * hx_scheduler_naptime_ms : steps[i].every;

			if (steps[i].last_run != 0 &&
				!TimestampDifferenceExceeds(steps[i].last_run, now, every - 1))
				continue;
			steps[i].last_run = now;
			hx_scheduler_step(i, tick_cxt);
			MemoryContextReset(tick_cxt);
			CHECK_FOR_INTERRUPTS();
		}

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 hx_scheduler_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * hx_scheduler_has_extension
 *		Whether the extension (of this library's version) is in our
 *		database, in a transaction of its own.  No transaction may be open.
 */
static bool
hx_scheduler_has_extension(void)
{
	Oid			schema;
	Oid			owner;
	bool		found;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	found = hx_extension_lookup(&schema, &owner);
	if (my_dbname[0] == '\0')
		strlcpy(my_dbname, get_database_name(MyDatabaseId), sizeof(my_dbname));
	CommitTransactionCommand();
	return found;
}

/*
 * hx_scheduler_detach
 *		on_shmem_exit callback: the database has no scheduler any more.
 */
static void
hx_scheduler_detach(int code, Datum arg)
{
	HxDb	   *db;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL && db->scheduler_pid == MyProcPid)
	{
		db->scheduler_pid = 0;
		db->scheduler_latch = NULL;
	}
	SpinLockRelease(&hx_shared->mutex);
	hx_launcher_wake();
}

/*
 * hx_scheduler_step
 *		Runs step i in a transaction of its own, when the extension exists
 *		in our database; records how it went.  No transaction may be open.
 */
static void
hx_scheduler_step(int i, MemoryContext cxt)
{
	ErrorData  *volatile edata = NULL;

	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		hx_worker_begin_xact(psprintf("hybridexec maintenance: %s", steps[i].name));
		if (OidIsValid(hx_worker_find_extension()) &&
			hx_stmt_exec(&steps[i].stmt, NULL, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "scheduler step \"%s\" failed", steps[i].name);
		hx_worker_end_xact();
	}
	PG_CATCH();
	{
		edata = hx_worker_catch(cxt);
	}
	PG_END_TRY();
	MemoryContextSwitchTo(TopMemoryContext);
	hx_step_report(i, edata ? edata->message : NULL);
}

/*
 * hx_step_report
 *		Keeps the outcome of step i in shared memory: the time it last
 *		succeeded, or when and why it last failed.
 */
static void
hx_step_report(int i, const char *error)
{
	TimestampTz now = GetCurrentTimestamp();
	HxDb	   *db;
	HxStepStatus *st;

	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db == NULL)
	{
		SpinLockRelease(&hx_shared->mutex);
		return;
	}
	st = &db->steps[i];
	if (error == NULL)
	{
		st->last_ok = now;
		st->last_failed = 0;
		st->error[0] = '\0';
	}
	else
	{
		st->last_failed = now;
		strlcpy(st->error, error, sizeof(st->error));
	}
	SpinLockRelease(&hx_shared->mutex);
}

/*
 * hx_scheduler_status
 *		SQL: one row per scheduler step of this database: how often it
 *		runs, when it last succeeded, and when and why it last failed (if it
 *		has failed since).
 */
Datum
hx_scheduler_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxStepStatus copy[HX_MAX_STEPS];
	HxDb	   *db;
	int			i;

	hx_require_preload("hx_scheduler_status()");
	InitMaterializedSRF(fcinfo, 0);
	memset(copy, 0, sizeof(copy));
	SpinLockAcquire(&hx_shared->mutex);
	db = hx_db_locked(MyDatabaseId);
	if (db != NULL)
		memcpy(copy, db->steps, sizeof(copy));
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < lengthof(steps); i++)
	{
		Datum		values[5];
		bool		nulls[5] = {false, false, copy[i].last_ok == 0,
		copy[i].last_failed == 0, copy[i].last_failed == 0};

		values[0] = CStringGetTextDatum(steps[i].name);
		values[1] = CStringGetTextDatum(steps[i].every == 0 ? "every tick" :
										steps[i].every < 0 ? psprintf("every %d ticks", -steps[i].every) :
										psprintf("every %d ms", steps[i].every));
		values[2] = TimestampTzGetDatum(copy[i].last_ok);
		values[3] = TimestampTzGetDatum(copy[i].last_failed);
		values[4] = CStringGetTextDatum(copy[i].error);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
