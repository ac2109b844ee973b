/*-------------------------------------------------------------------------
 *
 * task_exec.h
 *	  Running handlers (task_exec.c), shared by the worker kinds of
 *	  hybridexec.
 *
 *-------------------------------------------------------------------------
 */
#ifndef HX_TASK_EXEC_H
#define HX_TASK_EXEC_H

#include "postgres.h"

#include "task_state.h"

/* runs in the transaction that books a task run alone: done, failed */
typedef void (*HxBookHook) (void *arg, int done, int failed);

extern void hx_exec_handler(HxTask *task, HxOutcome *out, MemoryContext cxt);
extern void hx_exec_batch(HxTask *tasks, int n, HxOutcome *outs,
						  MemoryContext cxt);
extern bool hx_exec_alone(HxTask *task, MemoryContext cxt, HxBookHook book,
						  void *arg);

#endif							/* HX_TASK_EXEC_H */
