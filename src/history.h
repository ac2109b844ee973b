/*-------------------------------------------------------------------------
 *
 * history.h
 *	  Writing a window run's done tasks into hx_task_history directly
 *	  (history.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef HX_HISTORY_H
#define HX_HISTORY_H

#include "tcop/dest.h"

/* the columns a done task's row gets anew (history.c's set_columns) */
enum
{
	HX_HIST_ID,					/* read only: the result's key */
	HX_HIST_STATUS,
	HX_HIST_ATTEMPTS,
	HX_HIST_RESULT,
	HX_HIST_STARTED_AT,
	HX_HIST_FINISHED_AT,
	HX_HIST_WORKER_PID,
	HX_HIST_RUN_ID,
	HX_HIST_LEASE_TOKEN,
	HX_HIST_LEASE_EXPIRES_AT,
	HX_HIST_NCOLS
};

/* what the moved rows become: done, with these */
typedef struct HxHistoryDone
{
	int			attempts_add;	/* to the queue's attempts */
	Datum		(*result_of) (int64 id, bool *isnull);	/* the task's result */
	Datum		started;		/* timestamptz */
	Datum		finished;		/* timestamptz */
	Datum		pid;			/* int4 */
	Datum		run;			/* int8 */
} HxHistoryDone;

extern DestReceiver *hx_history_writer(const HxHistoryDone *done, int expected);
extern DestReceiver *hx_history_book(DestReceiver *self);
extern int	hx_history_finish(DestReceiver *self);
extern void hx_history_forget(DestReceiver *self);

#endif							/* HX_HISTORY_H */
