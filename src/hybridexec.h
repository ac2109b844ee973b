/*-------------------------------------------------------------------------
 *
 * hybridexec.h
 *	  Declarations shared by the files of the hybridexec extension: its
 *	  settings, its shared-memory state and the entry points each file
 *	  offers the others.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HYBRIDEXEC_H
#define HYBRIDEXEC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/date.h"
#include "utils/jsonb.h"

#define HX_EXTENSION_NAME	"hybridexec"
#define HX_MAX_STREAM_WORKERS	64
#define HX_MAX_BATCH_WORKERS	32

/* ---- settings (hybridexec.c) ---- */
extern int	hx_stream_workers;
extern char *hx_database_name;
extern bool hx_notify;
extern int	hx_poll_interval_ms;
extern int	hx_stream_batch_size;
extern int	hx_max_payload_kb;
extern int	hx_retry_backoff_ms;
extern char *hx_time_zone;
extern int	hx_batch_workers;
extern int	hx_scheduler_naptime_ms;
extern int	hx_batch_nice;
extern char *hx_currency;
extern int	hx_retention_s;
extern int	hx_retention_batch;
extern int	hx_alert_backlog_age_s;
extern double hx_alert_failure_rate;

/* ---- shared memory (shmem.c) ---- */

/* One stream worker as seen by everyone else. */
typedef struct HxWorkerSlot
{
	pid_t		pid;			/* 0 when the slot is free */
	Latch	   *latch;			/* the worker's process latch */
	bool		idle;			/* waiting for work; cleared by the waker */
	TransactionId wait_xid;		/* committing xact that woke us, or invalid */
	TimestampTz started_at;
	TimestampTz last_task_at;
	uint64		tasks_done;
	uint64		tasks_failed;
} HxWorkerSlot;

/* One batch worker slot: the run it serves. */
typedef struct HxBatchSlot
{
	int64		run_id;			/* 0 when the slot is free */
	pid_t		pid;			/* 0 until the worker has started */
	int			part;			/* which share of the run's tasks */
	int			parts;			/* how many workers share the run */
	bool		finishing;		/* done with its share, about to exit */
	TimestampTz launched_at;
} HxBatchSlot;

typedef struct HxShared
{
	slock_t		mutex;			/* protects everything below */
	int			nbatch;
	HxBatchSlot batch[HX_MAX_BATCH_WORKERS];
	int			nslots;
	HxWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} HxShared;

extern HxShared *hx_shared;

extern void hx_shmem_init_hooks(void);
extern void hx_require_preload(const char *what);
extern void hx_slot_attach(int slot);
extern void hx_slot_set_idle(int slot, bool idle);
extern void hx_slot_wait_for_committer(int slot);
extern void hx_slot_count(int slot, int done, int failed);
extern int	hx_live_worker_pids(int *pids, int max);

/*
 * hx_prepare
 *		SPI_prepare with a generic plan from the first execution: our
 *		statements are short and run many times, so re-planning them as
 *		custom plans would cost more than it could ever save.
 */
static inline SPIPlanPtr
hx_prepare(const char *sql, int nargs, Oid *argtypes)
{
	return SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}

/* ---- waking workers at commit (wakeup.c) ---- */
extern void hx_wakeup_init(void);

/* ---- rules and types cache (rules.c) ---- */

/* A task type as hx_submit needs it. */
typedef struct HxTypeInfo
{
	char		task_type[NAMEDATALEN * 4];	/* hash key */
	bool		has_handler;
} HxTypeInfo;

/* One enabled rule, decoded once per cache load. */
typedef struct HxRule
{
	char	   *name;
	int			position;
	char	   *task_type;		/* NULL = any */
	char	   *origin;
	char	   *department;
	Interval   *min_sla;
	Interval   *max_sla;
	Jsonb	   *payload_match;
	bool		has_time;		/* local_from/local_until set */
	TimeADT		local_from;
	TimeADT		local_until;
	int			days_mask;		/* bit d set for ISO day d; 0 = any */
	char	   *time_zone;		/* NULL = hybridexec.time_zone */
	int8		budget_exhausted;	/* -1 = any, else the wanted answer */
	int8		worth_streaming;	/* -1 = any, else the wanted answer */
	bool		stream;			/* route */
	char	   *window_name;
} HxRule;

extern Oid	hx_schema_for_function(Oid fn_oid);
extern void hx_rules_ensure(Oid schema);
extern HxTypeInfo *hx_type_lookup(const char *task_type);
extern HxRule *hx_rules_get(int *nrules);
extern bool hx_rules_read_payload(void);
extern const char *hx_qualified(const char *relname);

/* ---- classification (classify.c) ---- */

/* A task as the rules see it. */
typedef struct HxTaskArgs
{
	const char *task_type;
	Jsonb	   *payload;
	Interval   *sla;			/* NULL = none */
	const char *origin;
	int32		priority;
	const char *department;		/* NULL = none */
	const char *dedupe_key;
	bool		has_deadline;
	TimestampTz deadline;
	TimestampTz at;
} HxTaskArgs;

typedef struct HxDecision
{
	bool		stream;
	const char *window_name;	/* NULL for stream */
	const char *rule_name;
	char	   *reason;
} HxDecision;

extern void hx_check_task_args(FunctionCallInfo fcinfo, HxTaskArgs *args);
extern void hx_classify_task(const HxTaskArgs *args, HxDecision *decision);

/* ---- the stream claim (claim.c) ---- */
extern uint64 hx_claim_run(Oid schema, int worker_pid, int max);

/* ---- worker plumbing (worker_common.c) ---- */
extern void hx_worker_begin_xact(const char *activity);
extern void hx_worker_end_xact(void);
extern Oid	hx_worker_find_extension(void);
extern int	hx_execute_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
							bool read_only, long count);

/* ---- stream workers (stream_worker.c, task_exec.c) ---- */
extern PGDLLEXPORT void hx_stream_worker_main(Datum main_arg);

/* ---- cron schedules (cron.c) ---- */
extern TimestampTz hx_cron_next_time(const char *schedule, TimestampTz after,
									 const char *time_zone, bool forward);

/* ---- batch runs (batch_launch.c, batch_worker.c) ---- */

/* What a batch worker is started with (bgw_extra). */
typedef struct HxBatchStart
{
	int64		run_id;
	TransactionId launcher_xid;	/* wait for it: the run row commits with it */
	Oid			dboid;
	int			part;			/* this worker takes tasks with id % parts = part */
	int			parts;
} HxBatchStart;

extern void hx_batch_slot_attach(int slot, int64 run_id);
extern int	hx_batch_live_pids(int *pids, int max);
extern bool hx_batch_slot_finish(int slot, int64 run_id);
extern bool hx_stream_work_waiting(void);
extern PGDLLEXPORT void hx_batch_worker_main(Datum main_arg);

/* ---- the scheduler (scheduler.c) ---- */
extern void hx_register_scheduler(void);
extern PGDLLEXPORT void hx_scheduler_main(Datum main_arg);

#endif							/* HYBRIDEXEC_H */
