/*-------------------------------------------------------------------------
 *
 * task_exec.h
 *	  Running one task's handler and recording what came of it; shared by
 *	  the worker kinds of hybridexec.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HX_TASK_EXEC_H
#define HX_TASK_EXEC_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "utils/elog.h"

/* A claimed task, copied out of the claim transaction. */
typedef struct HxTask
{
	int64		id;
	char	   *task_type;
	Datum		payload;		/* jsonb, detoasted copy */
	int			attempts;		/* including this one */
	int			max_attempts;
	Oid			handler;
	Oid			batch_handler;	/* InvalidOid when the type has none */
	Oid			run_as;
	double		timeout_ms;
	int			worker_pid;		/* the claimer, as recorded on the task */
	bool		deferred;		/* a failure waits for the next window run */
	int			micro_batch_size;	/* stream task of a micro-batched type: at
									 * most this many per batch-handler call;
									 * 0 = not micro-batched */
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

extern void hx_exec_prepare(Oid schema);
extern int	hx_tasks_from_spi(HxTask **tasks, MemoryContext cxt, bool deferred);
extern void hx_exec_handler(HxTask *task, HxOutcome *out, MemoryContext cxt);
extern void hx_exec_batch(HxTask *tasks, int n, HxOutcome *outs,
						  MemoryContext cxt);
extern int	hx_record_done(HxTask *tasks, HxOutcome *outs, int n);
extern void hx_record_failure(HxTask *task, HxOutcome *out,
							  TimestampTz *next_retry);

#endif							/* HX_TASK_EXEC_H */
