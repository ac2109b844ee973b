/*-------------------------------------------------------------------------
 *
 * history.c
 *	  Writing a window run's done tasks into hx_task_history directly, as
 *	  COPY writes rows: the fast way of a chunk's move (task_state.c owns
 *	  the move and its statement; this file only writes what it deleted).
 *
 *	  The move's DELETE of the queue's rows returns them (RETURNING t.*) to
 *	  hx_history_writer, which makes each the history's row of a done task
 *	  (status, attempt, result, times, worker and run set here, every other
 *	  column as it was), inserts them a thousand at a time with
 *	  table_multi_insert (one WAL record per page, not per row), adds their
 *	  index entries, and hands each to the ledger's receiver.  Written with
 *	  INSERT ... SELECT from the DELETE's rows instead, every row was also
 *	  copied into a tuplestore, projected and checked again: a sixth of a
 *	  batch worker's time.
 *
 *	  Only while hx_task_history has no trigger (a watched table's
 *	  write-back, anything a user added), no row security and the current
 *	  user may insert into it; otherwise hx_history_writer gives none and
 *	  the move runs its INSERT statement, which fires and checks all that.  The
 *	  history's check constraint holds by construction (status 'done'),
 *	  and its NOT NULL columns are the queue's, copied.
 *
 *	  Runs in the move's transaction, SPI connected, while the DELETE runs
 *	  (and once after it, for the last rows): its rows are in hx_task
 *	  only, so the inserts change nothing the DELETE reads.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/attmap.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "hybridexec.h"
#include "history.h"

/* rows per table_multi_insert, as COPY buffers them */
#define HX_HISTORY_BUFFER 1000

typedef struct HxHistoryWriter
{
	DestReceiver pub;
	Relation	rel;			/* hx_task_history, RowExclusiveLock */
	MemoryContext cxt;			/* the slots' and their tuples' */
	EState	   *estate;
	ResultRelInfo *rri;			/* its indexes open */
	AttrMap    *map;			/* history column -> the DELETE's column */
	HxHistoryDone done;			/* what the rows become */
	DestReceiver *book;			/* the ledger's receiver of the rows written */
	AttrNumber	att[HX_HIST_NCOLS]; /* where they go, 1-based */
	Datum		status;			/* 'done' */
	TupleTableSlot *slots[HX_HISTORY_BUFFER];
	int			nslots;			/* made so far */
	int			n;				/* filled, not yet inserted */
	int			written;
	CommandId	cid;
} HxHistoryWriter;

/* the columns a done task's row gets anew, by name (HX_HIST_*) */
static const char *const set_columns[HX_HIST_NCOLS] = {
	"id", "status", "attempts", "result", "started_at", "finished_at", "worker_pid",
	"run_id", "lease_token", "lease_expires_at"
};

static bool hx_history_receive(TupleTableSlot *slot, DestReceiver *self);
static void hx_history_startup(DestReceiver *self, int operation, TupleDesc typeinfo);
static void hx_history_nothing(DestReceiver *self);
static void hx_history_flush(HxHistoryWriter *w);

/*
 * hx_history_open
 *		hx_task_history, locked for the move's inserts.
 */
static Relation
hx_history_open(void)
{
	Oid			relid = get_relname_relid("hx_task_history", hx_cached_schema());

	if (!OidIsValid(relid))
		elog(ERROR, "hybridexec: hx_task_history is missing");
	return table_open(relid, RowExclusiveLock);
}

/*
 * hx_history_writer
 *		A receiver for the rows a move deletes from the queue (all of
 *		hx_task's columns, by name): writes each into hx_task_history as
 *		done says, and hands it to a ledger's receiver (hx_book_receiver_for,
 *		room for "expected" rows; hx_history_book gives it for
 *		hx_book_moved).  hx_history_finish writes the last ones.  NULL when
 *		the rows must go in by an INSERT statement instead: the history has
 *		a trigger or row security, or the current user may not insert (the
 *		statement fires, checks and refuses as SQL does); the lock taken to
 *		look stays, so no trigger can come in between.  In a transaction,
 *		SPI connected, the extension's schema cached.
 */
DestReceiver *
hx_history_writer(const HxHistoryDone *done, int expected)
{
	Relation	rel = hx_history_open();
	HxHistoryWriter *w;
	int			c;

	if (rel->trigdesc != NULL || rel->rd_rel->relrowsecurity ||
		rel->rd_rel->relkind != RELKIND_RELATION ||
		pg_class_aclcheck(RelationGetRelid(rel), GetUserId(), ACL_INSERT) != ACLCHECK_OK)
	{
		table_close(rel, NoLock);
		return NULL;
	}
	w = palloc0(sizeof(HxHistoryWriter));
	w->pub.receiveSlot = hx_history_receive;
	w->pub.rStartup = hx_history_startup;
	w->pub.rShutdown = hx_history_nothing;
	w->pub.rDestroy = hx_history_nothing;
	w->pub.mydest = DestNone;
	w->cxt = CurrentMemoryContext;
	w->rel = rel;
	w->done = *done;
	for (c = 0; c < HX_HIST_NCOLS; c++)
	{
		w->att[c] = get_attnum(RelationGetRelid(w->rel), set_columns[c]);
		if (w->att[c] == InvalidAttrNumber)
			elog(ERROR, "hybridexec: hx_task_history has no column %s", set_columns[c]);
	}
	w->status = CStringGetTextDatum("done");
	w->estate = CreateExecutorState();
	w->rri = makeNode(ResultRelInfo);
	InitResultRelInfo(w->rri, w->rel, 1, NULL, 0);
	ExecOpenIndices(w->rri, false);
	w->cid = GetCurrentCommandId(true);
	w->book = hx_book_receiver_for(RelationGetDescr(w->rel), expected);
	return (DestReceiver *) w;
}

/*
 * hx_history_book
 *		The ledger's receiver of a writer's rows, for hx_book_moved (or
 *		hx_book_forget) once the writer is done.
 */
DestReceiver *
hx_history_book(DestReceiver *self)
{
	return ((HxHistoryWriter *) self)->book;
}

/*
 * hx_history_startup
 *		Maps the history's columns to the DELETE's (by name: the history
 *		may have been created after columns of hx_task were dropped, so
 *		their numbers can differ).
 */
static void
hx_history_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
	HxHistoryWriter *w = (HxHistoryWriter *) self;

	if (w->map == NULL)
#if PG_VERSION_NUM >= 160000
		w->map = build_attrmap_by_name(typeinfo, RelationGetDescr(w->rel), false);
#else
		w->map = build_attrmap_by_name(typeinfo, RelationGetDescr(w->rel));
#endif
}

static void
hx_history_nothing(DestReceiver *self)
{
}

/*
 * hx_history_set
 *		Sets one of the columns a done task's row gets anew (HX_HIST_*).
 */
static inline void
hx_history_set(HxHistoryWriter *w, TupleTableSlot *dst, int col, Datum value, bool isnull)
{
	dst->tts_values[w->att[col] - 1] = value;
	dst->tts_isnull[w->att[col] - 1] = isnull;
}

/*
 * hx_history_receive
 *		Makes one deleted row the history's row of a done task, in the next
 *		free slot; writes the slots when they are full.
 */
static bool
hx_history_receive(TupleTableSlot *slot, DestReceiver *self)
{
	HxHistoryWriter *w = (HxHistoryWriter *) self;
	TupleDesc	desc = RelationGetDescr(w->rel);
	TupleTableSlot *dst;
	int			a;
	int64		id;
	Datum		result;
	bool		isnull;

	if (w->map == NULL)
		elog(ERROR, "hybridexec: the history writer was not started");
	slot_getallattrs(slot);
	if (w->n == w->nslots)
	{
		MemoryContext old = MemoryContextSwitchTo(w->cxt);

		w->slots[w->nslots++] = MakeSingleTupleTableSlot(desc, table_slot_callbacks(w->rel));
		MemoryContextSwitchTo(old);
	}
	dst = w->slots[w->n];
	ExecClearTuple(dst);
	for (a = 0; a < desc->natts; a++)
	{
		AttrNumber	from = w->map->attnums[a];

		if (from == 0)
		{
			dst->tts_values[a] = (Datum) 0;
			dst->tts_isnull[a] = true;
			continue;
		}
		dst->tts_values[a] = slot->tts_values[from - 1];
		dst->tts_isnull[a] = slot->tts_isnull[from - 1];
	}
	id = DatumGetInt64(dst->tts_values[w->att[HX_HIST_ID] - 1]);
	hx_history_set(w, dst, HX_HIST_STATUS, w->status, false);
	hx_history_set(w, dst, HX_HIST_ATTEMPTS,
				   Int32GetDatum(DatumGetInt32(dst->tts_values[w->att[HX_HIST_ATTEMPTS] - 1]) +
								 w->done.attempts_add), false);
	result = w->done.result_of(id, &isnull);
	hx_history_set(w, dst, HX_HIST_RESULT, result, isnull);
	hx_history_set(w, dst, HX_HIST_STARTED_AT, w->done.started, false);
	hx_history_set(w, dst, HX_HIST_FINISHED_AT, w->done.finished, false);
	hx_history_set(w, dst, HX_HIST_WORKER_PID, w->done.pid, false);
	hx_history_set(w, dst, HX_HIST_RUN_ID, w->done.run, false);
	hx_history_set(w, dst, HX_HIST_LEASE_TOKEN, (Datum) 0, true);
	hx_history_set(w, dst, HX_HIST_LEASE_EXPIRES_AT, (Datum) 0, true);
	ExecStoreVirtualTuple(dst);
	/* its own copy: the DELETE's row is gone with the next */
	ExecMaterializeSlot(dst);
	if (++w->n == HX_HISTORY_BUFFER)
		hx_history_flush(w);
	return true;
}

/*
 * hx_history_flush
 *		Inserts the filled slots into hx_task_history, their index entries,
 *		and hands them to the ledger's receiver.
 */
static void
hx_history_flush(HxHistoryWriter *w)
{
	int			i;

	if (w->n == 0)
		return;
	table_multi_insert(w->rel, w->slots, w->n, w->cid, 0, NULL);
	for (i = 0; i < w->n; i++)
	{
		List	   *recheck;

		recheck = ExecInsertIndexTuples(w->rri, w->slots[i], w->estate, false, false, NULL, NIL);
		if (recheck != NIL)
			elog(ERROR, "hybridexec: hx_task_history has a deferred constraint");
		ResetPerTupleExprContext(w->estate);
		w->book->receiveSlot(w->slots[i], w->book);
	}
	w->written += w->n;
	w->n = 0;
}

/*
 * hx_history_finish
 *		Writes what the writer still holds and closes it; returns how many
 *		rows it wrote in all.
 */
int
hx_history_finish(DestReceiver *self)
{
	HxHistoryWriter *w = (HxHistoryWriter *) self;
	int			i;

	hx_history_flush(w);
	for (i = 0; i < w->nslots; i++)
		ExecDropSingleTupleTableSlot(w->slots[i]);
	w->nslots = 0;
	hx_history_forget(self);
	return w->written;
}

/*
 * hx_history_forget
 *		Closes a writer without writing what it holds (the move failed).
 */
void
hx_history_forget(DestReceiver *self)
{
	HxHistoryWriter *w = (HxHistoryWriter *) self;

	if (w->rri == NULL)
		return;
	ExecCloseIndices(w->rri);
	FreeExecutorState(w->estate);
	table_close(w->rel, NoLock);
	w->rri = NULL;
}
