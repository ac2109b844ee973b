/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler: one static background worker that, every
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
 *	  itself only stops with the server.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
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

/*
 * hx_register_scheduler
 *		Registers the scheduler worker; from _PG_init while preloading.
 */
void
hx_register_scheduler(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "hybridexec");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "hx_scheduler_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "hybridexec scheduler");
	snprintf(worker.bgw_type, BGW_MAXLEN, "hybridexec scheduler");
	RegisterBackgroundWorker(&worker);
}

/*
 * hx_scheduler_main
 *		Entry point of the scheduler worker.
 */
void
hx_scheduler_main(Datum main_arg)
{
	MemoryContext tick_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(hx_database_name, NULL, 0);
	pgstat_report_appname("hybridexec scheduler");

	tick_cxt = AllocSetContextCreate(TopMemoryContext, "hybridexec scheduler tick",
									 ALLOCSET_DEFAULT_SIZES);
	SpinLockAcquire(&hx_shared->mutex);
	hx_shared->nsteps = lengthof(steps);
	SpinLockRelease(&hx_shared->mutex);

	for (;;)
	{
		TimestampTz now;
		int			i;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
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
	HxStepStatus *st = &hx_shared->steps[i];
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&hx_shared->mutex);
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
 *		SQL: one row per scheduler step: how often it runs, when it last
 *		succeeded, and when and why it last failed (if it has failed since).
 */
Datum
hx_scheduler_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	HxStepStatus copy[HX_MAX_STEPS];
	int			i;

	hx_require_preload("hx_scheduler_status()");
	InitMaterializedSRF(fcinfo, 0);
	SpinLockAcquire(&hx_shared->mutex);
	memcpy(copy, hx_shared->steps, sizeof(copy));
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
