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
#define HX_INTERNAL_SCHEMA	"_hybridexec"
#define HX_MAX_STREAM_WORKERS	64
#define HX_MAX_BATCH_WORKERS	32
#define HX_MAX_DATABASES	64

/*
 * Text that becomes a key (task type, department, origin, dedupe key,
 * executor, window and rule names) is at most this many characters, so
 * that it always fits an index entry; SLAs and deadlines are at most this
 * far from now, so that every sum of times the scheduler makes stays a
 * timestamp.
 */
#define HX_MAX_KEY_CHARS	200
#define HX_MAX_HORIZON_YEARS	100
#define HX_MAX_PRIORITY		1000000

/* scheduler steps whose outcome shared memory keeps (scheduler.c) */
#define HX_MAX_STEPS		8
#define HX_STEP_ERROR_LEN	256

/* ---- settings (hybridexec.c) ---- */
extern int	hx_stream_workers;
extern char *hx_database_name;
extern bool hx_notify;
extern bool hx_notify_done;
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
extern int	hx_retention_dead_s;
extern int	hx_retention_batch;
extern int	hx_ledger_retention_s;
extern int	hx_alert_backlog_age_s;
extern double hx_alert_failure_rate;

/* ---- shared memory (shmem.c) ---- */

/* One stream worker as seen by everyone else. */
typedef struct HxWorkerSlot
{
	Oid			dboid;			/* database the launcher gave the slot to;
								 * InvalidOid = unassigned */
	bool		stop;			/* the launcher wants the slot back: exit
								 * when idle */
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
	Oid			dboid;			/* database of the run (run ids are per
								 * database) */
	int64		run_id;			/* 0 when the slot is free */
	pid_t		pid;			/* 0 until the worker has started */
	int			part;			/* which share of the run's tasks */
	int			parts;			/* how many workers share the run */
	bool		finishing;		/* done with its share, about to exit */
	TimestampTz launched_at;
} HxBatchSlot;

/* The last outcome of one scheduler step. */
typedef struct HxStepStatus
{
	TimestampTz last_ok;		/* 0 = never */
	TimestampTz last_failed;	/* 0 = never, or not since last_ok */
	char		error[HX_STEP_ERROR_LEN];
} HxStepStatus;

/* A key of the stream claim order, ((-priority), id). */
typedef struct HxClaimKey
{
	int32		negprio;
	int64		id;
} HxClaimKey;

/* whether claim key a sorts before claim key b */
static inline bool
hx_claim_key_before(int32 a_negprio, int64 a_id, int32 b_negprio, int64 b_id)
{
	return a_negprio < b_negprio || (a_negprio == b_negprio && a_id < b_id);
}

#define HX_FLOOR_RING	64

/* hx_await() waiters (finished.c): slots, and the words of a filter */
#define HX_MAX_WAITERS		128
#define HX_WAIT_MASK_WORDS	4

/* A backend in hx_await() or hx_wait(), and the ids it waits for. */
typedef struct HxWaiter
{
	Oid			dboid;			/* database of the ids */
	pid_t		pid;			/* 0 when the slot is free */
	Latch	   *latch;
	uint64		mask[HX_WAIT_MASK_WORDS];	/* a bit per id hash */
} HxWaiter;

/*
 * What the launcher knows of one database (launcher.c): whether the
 * extension is there, and the state its workers share, which is per
 * database because task ids are.
 */
typedef enum HxDbState
{
	HX_DB_FREE = 0,				/* entry unused */
	HX_DB_PROBING,				/* a scheduler is looking for the extension */
	HX_DB_SERVED,				/* the extension is there: workers run */
	HX_DB_ABSENT,				/* no extension (at notice_gen absent_gen) */
	HX_DB_PAUSED				/* workers kept out until paused_until (DROP
								 * DATABASE and the like) */
} HxDbState;

typedef struct HxDb
{
	Oid			dboid;
	HxDbState	state;
	uint32		notice_gen;		/* commits that created, updated or dropped
								 * the extension here */
	uint32		absent_gen;		/* notice_gen when found absent */
	TimestampTz paused_until;
	pid_t		scheduler_pid;
	Latch	   *scheduler_latch;
	int			stream_target;	/* stream workers the launcher gives it */
	TimestampTz batch_asked_at; /* last launch that found no fair slot */

	/*
	 * Stream tasks put back after their worker was lost run alone next
	 * time (hx_task.isolated).  A sweep bumps suspects_gen after it
	 * commits; a worker that looked for isolated tasks and found none
	 * records the generation it looked at in suspects_seen, so workers
	 * look only while the two differ.
	 */
	uint32		suspects_gen;
	uint32		suspects_seen;

	/*
	 * The stream claim floor (see hx_claim_stream_next): while a backlog
	 * lasts, claims start after the key (-priority, id) of the last task a
	 * full claim took, instead of stepping again over the index entries of
	 * every task claimed since the last vacuum.  Every transaction that
	 * queues stream tasks lowers the floor to its lowest key if that is
	 * below, and records the key in a ring with a new generation: a claim
	 * that read the floor at an older generation does not raise it past a
	 * key queued since (its snapshot may not have seen the task).
	 */
	bool		floor_set;
	int32		floor_negprio;
	int64		floor_id;
	uint64		floor_gen;		/* lowerings so far */
	HxClaimKey	floor_lowered[HX_FLOOR_RING];	/* the latest, at gen % ring */
	TimestampTz floor_rescan_at;	/* last claim that ignored the floor */
	HxStepStatus steps[HX_MAX_STEPS];
} HxDb;

typedef struct HxShared
{
	/*
	 * set once when shared memory is created: whether the server had been
	 * shut down cleanly (pg_control said so), so that no crash can have
	 * forgotten an attempt; read without the lock
	 */
	bool		clean_start;

	slock_t		mutex;			/* protects everything below */
	Latch	   *launcher_latch;
	int			nsteps;
	HxDb		dbs[HX_MAX_DATABASES];
	int			nbatch;
	HxBatchSlot batch[HX_MAX_BATCH_WORKERS];

	/* the waiters, under a lock of their own (finished.c) */
	slock_t		wait_mutex;
	int			nwaiters;
	HxWaiter	waiters[HX_MAX_WAITERS];
	int			nslots;
	HxWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} HxShared;

extern HxShared *hx_shared;

extern void hx_shmem_init_hooks(void);
extern void hx_require_preload(const char *what);
extern HxDb *hx_db_locked(Oid dboid);
extern void hx_slot_attach(int slot);
extern bool hx_slot_stop_wanted(int slot);
extern void hx_slot_set_idle(int slot, bool idle);
extern void hx_slot_wait_for_committer(int slot);
extern void hx_slot_count(int slot, int done, int failed);
extern uint32 hx_suspects_pending(void);
extern void hx_suspects_bump(void);
extern void hx_suspects_none(uint32 gen);
extern bool hx_claim_floor_get(int32 *negprio, int64 *id, uint64 *gen);
extern void hx_claim_floor_advance(uint64 gen, bool full, int32 negprio,
								   int64 id);
extern void hx_claim_floor_clear(void);
extern void hx_claim_floor_lower(int32 negprio, int64 id);

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

/* ---- kept statements (stmt.c) ---- */

#define HX_STMT_MAX_ARGS	32

/*
 * One SQL statement the C code runs: declared static next to the code that
 * owns it, prepared on first use for the extension's schema (written
 * "@extschema@" in the text; internal objects are in schema _hybridexec)
 * and kept.  index_order: planned and run the way hx_execute_plan does.
 */
typedef struct HxStmt
{
	const char *sql;
	int			nargs;
	Oid			argtypes[HX_STMT_MAX_ARGS];
	bool		index_order;
	SPIPlanPtr	plan;			/* kept plan, NULL until first use */
	Oid			schema;			/* the schema it was prepared for */
} HxStmt;

extern int	hx_stmt_exec(HxStmt *stmt, Datum *values, const char *nulls,
						 bool read_only, long count);
extern int	hx_stmt_exec_dest(HxStmt *stmt, Datum *values, const char *nulls,
							  DestReceiver *dest);
extern Datum hx_stmt_value(HxStmt *stmt, Datum *values, const char *nulls,
						   bool *isnull);
extern int	hx_execute_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
							bool read_only, long count);

/* ---- who runs what (privileges.c) ---- */

/* the user and security context to go back to */
typedef struct HxUserSave
{
	Oid			userid;
	int			sec_context;
} HxUserSave;

/* a sealed call: the user, security context and settings level to go back to */
typedef struct HxSeal
{
	Oid			userid;
	int			sec_context;
	int			nest;
} HxSeal;

extern void hx_become_owner(HxUserSave *save);
extern void hx_seal(HxSeal *seal, Oid role, const char *search_path);
extern void hx_unseal(const HxSeal *seal);
extern void hx_restore_user(const HxUserSave *save);
extern bool hx_caller_sees(Oid caller, Oid submitted_by, const char *department);
extern void hx_task_invisible(int64 id, const char *verb) pg_attribute_noreturn();

/* ---- the ledger (book.c) ---- */
extern bool hx_book_moves;

/*
 * What a statement that moves done tasks into hx_task_history returns for
 * the ledger (hx_book_receiver): the columns of the moved row that a
 * booking reads, in book.c's order.
 */
#define HX_BOOK_RETURNING \
	"id, task_type, status, route, window_name, run_id, rule_name, department, origin, " \
	"executor, submitted_by, submitted_at, sla, deadline, attempts, started_at, worker_pid, " \
	"reported_cost, finished_at"

extern DestReceiver *hx_book_receiver(int offset, int expected);
extern DestReceiver *hx_book_receiver_for(TupleDesc desc, int expected);
extern void hx_book_tuples(DestReceiver *dest, SPITupleTable *tuptable, uint64 n);
extern int	hx_book_moved(DestReceiver *dest);
extern void hx_book_forget(DestReceiver *dest);

/* ---- latency histograms of the statistics (cost.c) ---- */

#define HX_HIST_BUCKETS 32

extern int	hx_hist_bucket_of(double ms);
extern struct ArrayType *hx_hist_array(const int64 *counts);

/* ---- alerts (alert.c) ---- */
extern void hx_alert_send(Jsonb *payload);
extern void hx_alert_dead(int64 task_id, const char *task_type, int attempts,
						  const char *error);

/* ---- waking workers at commit (wakeup.c) ---- */
extern void hx_wakeup_init(void);

/* ---- finished tasks: NOTIFY hx_done, hx_await() (finished.c) ---- */
extern void hx_finished_init(void);
extern void hx_finish_note(int64 id, Datum task_type, const char *status);

/* ---- follow-up tasks: next tiers, dead letters (submit.c) ---- */

extern void hx_submit_follow_ups(int64 *ids, int n, bool dead);

/* ---- DROP EXTENSION (drop.c) ---- */
extern void hx_drop_init(void);

/* ---- rules and types cache (rules.c) ---- */

/* A task type as hx_submit needs it. */
typedef struct HxTypeInfo
{
	char		task_type[NAMEDATALEN * 4];	/* hash key */
	bool		has_handler;
	bool		limited;		/* max_running or rate_limit set */
	bool		refined;		/* refine_with set: done tasks get a next tier */
	bool		dead_letter;	/* dead_letter_type set: dead tasks go to it */
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
	double		sample;			/* share of matching tasks taken; 0 = all */
} HxRule;

extern Oid	hx_schema_for_function(Oid fn_oid);
extern void hx_rules_ensure(Oid schema);
extern HxTypeInfo *hx_type_lookup(const char *task_type);
extern bool hx_types_limited(void);
extern bool hx_types_followed(void);
extern HxRule *hx_rules_get(int *nrules);
extern bool hx_rules_read_payload(void);
extern bool hx_rules_sampled(void);
extern Oid	hx_cached_schema(void);
extern const char *hx_cached_schema_quoted(void);
extern Oid	hx_cached_owner(void);

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
	bool		has_run_at;		/* hx_submit's run_at: not due before */
	TimestampTz run_at;
	int64		id;				/* the task's id when taken before it is
								 * classified (sampled rules), else 0 */
} HxTaskArgs;

typedef struct HxDecision
{
	bool		stream;
	const char *window_name;	/* NULL for stream */
	const char *rule_name;
	char	   *reason;
	const char *sample_rule;	/* the first sampled rule whose other
								 * conditions held, or NULL */
} HxDecision;

extern void hx_check_task_args(FunctionCallInfo fcinfo, HxTaskArgs *args,
							   bool with_at);
extern void hx_check_key_length(const char *what, const char *value);
extern TimestampTz hx_add_years(TimestampTz t, int years);
extern void hx_classify_task(const HxTaskArgs *args, HxDecision *decision);

/* ---- submitting and waiting (submit.c) ---- */
extern void hx_check_read_committed(const char *function, const char *what);

/* ---- worker plumbing (worker_common.c) ---- */
struct BackgroundWorker;
extern void hx_worker_describe(struct BackgroundWorker *worker, const char *function,
							   const char *type, const char *name, int restart_time);
extern void hx_worker_begin_xact(const char *activity);
extern void hx_worker_end_xact(void);
extern Oid	hx_worker_find_extension(void);
extern bool hx_extension_lookup(Oid *schema, Oid *owner);
extern ErrorData *hx_worker_catch(MemoryContext cxt);

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
	int			part;			/* which of the run's workers (0 to parts - 1) */
	int			parts;
} HxBatchStart;

extern void hx_batch_slot_attach(int slot, int64 run_id);
extern int	hx_batch_live_pids(int *pids, int max);
extern bool hx_batch_slot_finish(int slot, int64 run_id);
extern bool hx_stream_work_waiting(void);
extern PGDLLEXPORT void hx_batch_worker_main(Datum main_arg);

/* ---- the scheduler (scheduler.c) ---- */
extern PGDLLEXPORT void hx_scheduler_main(Datum main_arg);

/* ---- the launcher: workers for every database (launcher.c) ---- */
extern void hx_launcher_init(void);
extern void hx_register_launcher(void);
extern PGDLLEXPORT void hx_launcher_main(Datum main_arg);
extern void hx_launcher_wake(void);
extern bool hx_db_found(uint32 gen, bool found);
extern uint32 hx_db_notice_gen(void);
extern void hx_db_pause(Oid dboid);
extern void hx_launcher_note_change(void);

#endif							/* HYBRIDEXEC_H */
