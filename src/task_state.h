/*-------------------------------------------------------------------------
 *
 * task_state.h
 *	  The one owner of a task's state (task_state.c): the shape of a
 *	  claimed task, the claims, and the bookings of outcomes, shared by the
 *	  stream workers, the batch workers and the external executors' SQL
 *	  functions.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HX_TASK_STATE_H
#define HX_TASK_STATE_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "storage/itemptr.h"
#include "utils/array.h"
#include "utils/uuid.h"

/*
 * A task as every claim returns it (and as a batch chunk reads the tasks
 * it is about to run), copied out of the claiming transaction.
 */
typedef struct HxTask
{
	int64		id;
	char	   *task_type;
	Datum		payload;		/* jsonb, detoasted copy */
	int			attempts;		/* including this one */
	int			max_attempts;
	Oid			handler;		/* InvalidOid when the type has none */
	Oid			batch_handler;	/* InvalidOid when the type has none */
	Oid			run_as;
	double		timeout_ms;
	int			micro_batch_size;	/* stream task of a micro-batched type: at
									 * most this many per batch-handler call;
									 * 0 = not micro-batched */
	bool		batch;			/* route batch: a failure waits for the next
								 * run of its window, no backoff */
	int64		run_id;			/* window run that took it; 0 = none */
	bool		has_lease;
	pg_uuid_t	lease_token;	/* external executors only */
	TimestampTz lease_expires_at;
	char	   *window_name;	/* NULL for stream tasks */
	int32		priority;
	bool		has_deadline;
	TimestampTz deadline;
	TimestampTz submitted_at;
	bool		has_tid;		/* tid is where the row read was */
	ItemPointerData tid;		/* (a window run's chunk reads it, to move
								 * the row without an index probe) */
} HxTask;

/* What one handler call gave. */
typedef struct HxOutcome
{
	bool		ok;
	Datum		result;			/* jsonb copy when ok and not NULL */
	bool		result_null;
	int			sqlerrcode;		/* when !ok */
	char	   *message;
	char	   *detail;
	char	   *hint;
	char	   *context;
} HxOutcome;

/* claims: the attempt is counted and the task is running for worker_pid */
extern int	hx_claim_stream(int worker_pid, int max, HxTask **tasks,
							MemoryContext cxt);
extern int	hx_claim_stream_next(int worker_pid, int max, HxTask **tasks,
								 MemoryContext cxt);
extern int	hx_claim_isolated(int worker_pid, HxTask **tasks,
							  MemoryContext cxt);
extern int	hx_claim_ids(ArrayType *ids, int worker_pid, int64 run_id,
						 HxTask **tasks, MemoryContext cxt);
extern int	hx_claim_isolated_ids(ArrayType *ids, int worker_pid, int64 run_id,
								  HxTask **tasks, MemoryContext cxt,
								  double *wait_ms);
extern int	hx_read_waiting(ArrayType *ids, HxTask **tasks, MemoryContext cxt);
extern int	hx_pick_chunk(int64 run_id, const char *window_name, int chunk_size,
						  int part, ArrayType *skip, HxTask **tasks,
						  MemoryContext cxt);
extern int	hx_limit_chunk(HxTask *tasks, int n, int64 run_id, int part,
						   double *wait_ms);

/* outcomes */
extern int	hx_book_done(HxTask *tasks, HxOutcome *outs, int n);
extern int	hx_book_chunk_done(HxTask *tasks, HxOutcome *outs, int n,
							   int64 run_id);
extern int	hx_book_failures(HxTask *tasks, HxOutcome *outs, int n,
							 TimestampTz *next_retry);
extern void hx_book_quarantine(int64 id, const char *why, int sqlerrcode);
extern int	hx_sweep_stream(void);

/* a duplicate submission that asks for more (submit.c) */
extern bool hx_upgrade_duplicate(int64 id, bool stream, int32 priority,
								 bool has_deadline, TimestampTz deadline,
								 const char *why);

#endif							/* HX_TASK_STATE_H */
