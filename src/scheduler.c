/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler: one static background worker that, every
 *	  hybridexec.scheduler_naptime, runs hx_maintenance() in its own
 *	  transaction.  That relaunches window runs left without a batch worker
 *	  (after a crash or a restart the runs resume by themselves), starts
 *	  adaptive and opportunistic windows early, escalates batch tasks that
 *	  would miss their deadline, and runs the books' and executors'
 *	  maintenance steps.  pg_cron opens windows on their schedules; this
 *	  worker never waits for a run.
 *
 *	  An error in a step is logged and the next tick tries again; the
 *	  worker itself only stops with the server.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "hybridexec.h"

static void hx_scheduler_tick(void);

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

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextSwitchTo(tick_cxt);
		PG_TRY();
		{
			hx_scheduler_tick();
		}
		PG_CATCH();
		{
			/* log it, clean up, and try again at the next tick */
			EmitErrorReport();
			AbortCurrentTransaction();
			FlushErrorState();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(tick_cxt);

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 hx_scheduler_naptime_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * hx_scheduler_tick
 *		One round: hx_maintenance() in a transaction of its own, when the
 *		extension exists in our database.  No transaction may be open.
 */
static void
hx_scheduler_tick(void)
{
	Oid			schema;

	hx_worker_begin_xact("hybridexec maintenance");
	schema = hx_worker_find_extension();
	if (OidIsValid(schema))
	{
		int			rc = SPI_execute(psprintf("SELECT %s()", hx_qualified("hx_maintenance")),
									 false, 0);

		if (rc != SPI_OK_SELECT)
			elog(ERROR, "hx_maintenance() failed: %s", SPI_result_code_string(rc));
	}
	hx_worker_end_xact();
}
