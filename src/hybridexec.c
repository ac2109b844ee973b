/*-------------------------------------------------------------------------
 *
 * hybridexec.c
 *	  Module entry point: defines the hybridexec.* settings, asks for shared
 *	  memory, installs the commit-time wake-up and registers the launcher
 *	  (which starts the schedulers and stream workers of every database
 *	  with the extension) when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "utils/guc.h"

#include "hybridexec.h"

PG_MODULE_MAGIC;

int			hx_stream_workers = 2;
char	   *hx_database_name = NULL;
bool		hx_notify = true;
bool		hx_notify_done = true;
int			hx_poll_interval_ms = 1000;
int			hx_stream_batch_size = 256;
int			hx_max_payload_kb = 1024;
int			hx_retry_backoff_ms = 100;
char	   *hx_time_zone = NULL;
int			hx_batch_workers = 2;
int			hx_scheduler_naptime_ms = 1000;
int			hx_batch_nice = 10;
char	   *hx_currency = NULL;
int			hx_retention_s = 7 * 24 * 3600;
int			hx_retention_dead_s = 30 * 24 * 3600;
int			hx_retention_batch = 10000;
int			hx_ledger_retention_s = 400 * 24 * 3600;
int			hx_alert_backlog_age_s = 300;
double		hx_alert_failure_rate = 0.1;
static double hx_break_even_share = 0.2;	/* read by hx_advise (SQL) */
static double hx_alert_quality_drop = 0.1;	/* read by hx_health (SQL) */
static int	hx_archive_retention_s = 90 * 24 * 3600;	/* read by hx_retention_step (SQL) */

void		_PG_init(void);

static void hx_define_settings(void);

/*
 * _PG_init
 *		Runs once per process that loads the library.  Settings are defined
 *		everywhere; shared memory and workers only when preloaded.
 */
void
_PG_init(void)
{
	hx_define_settings();
	hx_wakeup_init();
	hx_finished_init();
	hx_drop_init();
	hx_launcher_init();

	if (!process_shared_preload_libraries_in_progress)
		return;

	hx_shmem_init_hooks();
	hx_register_launcher();
}

/*
 * hx_define_settings
 *		Defines every hybridexec.* setting and reserves the prefix.
 */
static void
hx_define_settings(void)
{
	/*
	 * Settings read only at server start can be defined only while the
	 * library is being preloaded (the server refuses them later); a backend
	 * that loads the library on demand keeps their defaults.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomIntVariable("hybridexec.stream_workers",
								"Number of background workers that run stream tasks, shared by the databases that have the extension.",
								"Each database gets an equal share (the first ones by oid one more), at least one while there are as many workers as databases; 0 disables the in-database stream path: tasks then wait for external executors.",
								&hx_stream_workers,
								2, 0, HX_MAX_STREAM_WORKERS,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);

		DefineCustomStringVariable("hybridexec.database_name",
								   "The only database whose tasks the workers run; empty for every database that has the extension.",
								   "Template databases and those that do not allow connections are never served.",
								   &hx_database_name,
								   "",
								   PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);

		DefineCustomIntVariable("hybridexec.batch_workers",
								"Batch workers that can run at once, shared by the databases that have the extension.",
								"Batch workers are started on demand and count against max_worker_processes; runs beyond this wait for a free worker, and while another database waits, one takes no more than its share.",
								&hx_batch_workers,
								2, 1, HX_MAX_BATCH_WORKERS,
								PGC_POSTMASTER, 0,
								NULL, NULL, NULL);
	}

	DefineCustomIntVariable("hybridexec.scheduler_naptime",
							"How often the scheduler relaunches interrupted runs, starts adaptive and opportunistic windows, escalates late tasks and runs maintenance.",
							NULL,
							&hx_scheduler_naptime_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.batch_nice",
							"CPU nice value batch workers run at, so that stream workers get the CPU first.",
							"0 runs batch work at the server's own priority.",
							&hx_batch_nice,
							10, 0, 19,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("hybridexec.notify",
							 "Sends NOTIFY hx_stream, once per transaction, when stream tasks are queued.",
							 "For clients that LISTEN (external executors, dashboards); the in-database workers do not need it.",
							 &hx_notify,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomBoolVariable("hybridexec.notify_done",
							 "Sends NOTIFY hx_done with the id, type and status of every task that finishes (done, dead or cancelled).",
							 "As JSON arrays, as few per transaction as 8,000-byte payloads allow; hx_await() does not need it.",
							 &hx_notify_done,
							 true,
							 PGC_SUSET, 0,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.poll_interval",
							"Longest time an idle stream worker, or hx_await(), sleeps before looking anyway.",
							"Both are woken at commit; the poll is only a safety net.",
							&hx_poll_interval_ms,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.stream_batch_size",
							"Most stream tasks a worker claims and commits together.",
							"A worker claims about 10 ms of the run time it measured, up to this many; while handlers write, at most 64 (PostgreSQL's per-backend subtransaction cache, whose overflow slows other sessions' snapshots). Each task still runs in its own subtransaction: one failure never undoes another task's work.",
							&hx_stream_batch_size,
							256, 1, 1024,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.max_payload_size",
							"Largest payload hx_submit accepts.",
							NULL,
							&hx_max_payload_kb,
							1024, 1, 256 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.retry_backoff",
							"Delay before the first retry of a failed stream task; doubles with each attempt, at most one minute.",
							NULL,
							&hx_retry_backoff_ms,
							100, 0, 60 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("hybridexec.time_zone",
							   "Time zone of rule time-of-day conditions that name none.",
							   NULL,
							   &hx_time_zone,
							   "UTC",
							   PGC_SIGHUP, 0,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("hybridexec.currency",
							   "Currency of new hx_price rows that name none.",
							   NULL,
							   &hx_currency,
							   "USD",
							   PGC_USERSET, 0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.retention",
							"Done and cancelled tasks older than this are deleted by the scheduler; 0 or -1 keeps every finished task.",
							"The hx_cost ledger and the statistics are kept.",
							&hx_retention_s,
							7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.retention_dead",
							"Dead tasks older than this are deleted by the scheduler; 0 or -1 keeps them.",
							"Never sooner than hybridexec.retention; when that keeps every task, dead ones are kept too.",
							&hx_retention_dead_s,
							30 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.archive_retention",
							"Payloads and results of done tasks that retention deletes are kept this long in hx_archive, for hx_replay; 0 or -1 keeps none.",
							NULL,
							&hx_archive_retention_s,
							90 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.retention_batch",
							"Finished tasks deleted per transaction by the retention step.",
							NULL,
							&hx_retention_batch,
							10000, 1, 1000000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.ledger_retention",
							"Bookings of hx_cost older than this are rolled into daily totals (hx_cost_day) by the scheduler; 0 or -1 keeps every booking.",
							"Whole local days (hybridexec.time_zone) are rolled up once they are this old; hx_stat_minute rows as old go too.",
							&hx_ledger_retention_s,
							400 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("hybridexec.alert_backlog_age",
							"hx_health() reports stream tasks queued longer than this.",
							NULL,
							&hx_alert_backlog_age_s,
							300, 1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomRealVariable("hybridexec.break_even_share",
							 "hx_advise() recommends batch-first below this share of work that needs real time, and streaming more above it.",
							 NULL,
							 &hx_break_even_share,
							 0.2, 0.0, 1.0,
							 PGC_USERSET, 0,
							 NULL, NULL, NULL);

	DefineCustomRealVariable("hybridexec.alert_quality_drop",
							 "hx_health() reports task types whose average evaluation over the last hour fell by more than this against their 7-day average.",
							 NULL,
							 &hx_alert_quality_drop,
							 0.1, 0.0, 1000000.0,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

	DefineCustomRealVariable("hybridexec.alert_failure_rate",
							 "hx_health() reports task types whose share of failed attempts over the last 15 minutes is above this.",
							 NULL,
							 &hx_alert_failure_rate,
							 0.1, 0.0, 1.0,
							 PGC_SIGHUP, 0,
							 NULL, NULL, NULL);

#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("hybridexec");
#else
	EmitWarningsOnPlaceholders("hybridexec");
#endif
}
