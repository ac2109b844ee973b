/*-------------------------------------------------------------------------
 *
 * wakeup.c
 *	  Commit-time wake-up of the stream workers.
 *
 *	  The hx_task_wake trigger counts the stream tasks a transaction queues
 *	  and, when hybridexec.notify is on, sends one NOTIFY hx_stream per
 *	  transaction for clients that LISTEN.  Background workers cannot
 *	  LISTEN, so during COMMIT a transaction callback sets the latches of as
 *	  many idle stream workers as it queued tasks.
 *
 *	  The wake-up is sent at PRE_COMMIT, with the committing transaction's
 *	  id in the worker's slot: the worker waits on that transaction's lock
 *	  (XactLockTableWait) before it claims, so it sees the tasks as soon as
 *	  they are visible, while the process wake-up overlaps the commit's WAL
 *	  flush instead of following it.  Should the commit fail after all, the
 *	  worker simply finds nothing.  Workers that are busy look for more work
 *	  when they finish, so no wake-up is lost; the timed poll is only a
 *	  safety net.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

/* stream tasks queued by the current transaction */
static int	pending_stream_tasks = 0;

/* nesting level that sent NOTIFY hx_stream; 0 = not sent in this xact */
static int	notify_sent_level = 0;

/*
 * the lowest claim key among them, kept from the first one until the end
 * of the transaction (the floor is lowered before and after the commit)
 */
static int32 pending_negprio;
static int64 pending_id;
static bool pending_key_set = false;

/* where hx_task keeps the key's columns (attribute numbers), by relation */
static Oid	key_relid = InvalidOid;
static AttrNumber key_priority_att;
static AttrNumber key_id_att;
static AttrNumber key_run_after_att;

static void hx_xact_callback(XactEvent event, void *arg);
static void hx_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
								SubTransactionId parentSubid, void *arg);
static void hx_wake_idle_workers(int wanted, TransactionId xid);
static bool hx_note_claim_key(Relation rel, HeapTuple tuple);

PG_FUNCTION_INFO_V1(hx_task_wake);

/*
 * hx_wakeup_init
 *		Installs the transaction callbacks; called from _PG_init.
 */
void
hx_wakeup_init(void)
{
	RegisterXactCallback(hx_xact_callback, NULL);
	RegisterSubXactCallback(hx_subxact_callback, NULL);
}

/*
 * hx_task_wake
 *		BEFORE ROW trigger on hx_task for rows that become queued stream
 *		tasks: remembers to wake a worker at commit and sends NOTIFY
 *		hx_stream once per transaction.  A BEFORE trigger costs no entry in
 *		the after-trigger queue, which matters for bulk submits; should the
 *		row not be stored after all, the statement fails and at worst a
 *		worker wakes for nothing.
 */
Datum
hx_task_wake(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("hx_task_wake() must be called as a trigger")));

	/* a task not due yet (run_at, a type's limit) wakes no one */
	if (!hx_note_claim_key(trigdata->tg_relation,
						   TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
						   trigdata->tg_newtuple : trigdata->tg_trigtuple))
		return PointerGetDatum(TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) ?
							   trigdata->tg_newtuple : trigdata->tg_trigtuple);
	pending_stream_tasks++;
	if (hx_notify && notify_sent_level == 0)
	{
		Async_Notify("hx_stream", "");
		notify_sent_level = GetCurrentTransactionNestLevel();
	}
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		return PointerGetDatum(NULL);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
		return PointerGetDatum(trigdata->tg_newtuple);
	return PointerGetDatum(trigdata->tg_trigtuple);
}

/*
 * hx_note_claim_key
 *		Keeps the lowest claim key ((-priority), id) of the stream tasks the
 *		transaction queues, and returns true, unless the task is not due
 *		before a later moment (run_after in the future): it returns false
 *		then, and the timed looks find the task when it is due.  A row
 *		whose key cannot be read (NULL id from a BEFORE trigger of the
 *		user's) counts as the lowest possible.
 */
static bool
hx_note_claim_key(Relation rel, HeapTuple tuple)
{
	TupleDesc	desc = RelationGetDescr(rel);
	bool		pnull;
	bool		inull;
	Datum		p;
	Datum		i;
	int32		negprio;
	int64		id;

	if (RelationGetRelid(rel) != key_relid)
	{
		key_priority_att = SPI_fnumber(desc, "priority");
		key_id_att = SPI_fnumber(desc, "id");
		key_run_after_att = SPI_fnumber(desc, "run_after");
		if (key_priority_att <= 0 || key_id_att <= 0 || key_run_after_att <= 0)
			elog(ERROR, "hx_task_wake() fired on a table without priority, id and run_after");
		key_relid = RelationGetRelid(rel);
	}
	p = heap_getattr(tuple, key_run_after_att, desc, &pnull);
	if (!pnull && DatumGetTimestampTz(p) > GetCurrentTimestamp())
		return false;
	p = heap_getattr(tuple, key_priority_att, desc, &pnull);
	i = heap_getattr(tuple, key_id_att, desc, &inull);
	negprio = pnull ? PG_INT32_MIN : -DatumGetInt32(p);
	id = inull ? PG_INT64_MIN : DatumGetInt64(i);
	if (!pending_key_set ||
		hx_claim_key_before(negprio, id, pending_negprio, pending_id))
	{
		pending_negprio = negprio;
		pending_id = id;
		pending_key_set = true;
	}
	return true;
}

/*
 * hx_xact_callback
 *		Just before the commit record is written, wakes idle workers for the
 *		tasks this transaction queued; at any end of transaction, forgets
 *		the counts.
 */
static void
hx_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
			if (pending_key_set)
				hx_claim_floor_lower(pending_negprio, pending_id);
			if (pending_stream_tasks > 0)
				hx_wake_idle_workers(pending_stream_tasks,
									 GetTopTransactionIdIfAny());
			pending_stream_tasks = 0;
			break;
		case XACT_EVENT_COMMIT:
			if (pending_key_set)
				hx_claim_floor_lower(pending_negprio, pending_id);
			pending_key_set = false;
			pending_stream_tasks = 0;
			notify_sent_level = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			pending_key_set = false;
			pending_stream_tasks = 0;
			notify_sent_level = 0;
			break;
		default:
			break;
	}
}

/*
 * hx_subxact_callback
 *		A rolled-back subtransaction takes its NOTIFY with it, so a later
 *		task in the same transaction must send it again.
 */
static void
hx_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB &&
		notify_sent_level >= GetCurrentTransactionNestLevel())
		notify_sent_level = 0;
}

/*
 * hx_wake_idle_workers
 *		Sets the latch of up to "wanted" idle stream workers of this
 *		database, clearing their
 *		idle flag so concurrent committers pick others, and tells each which
 *		transaction to wait for.  Always the lowest idle slots first, not
 *		round-robin: a worker that ran a moment ago is the quickest to wake
 *		(its CPU and caches are warm), and the others stay asleep when the
 *		load is light.  Must not fail.
 */
static void
hx_wake_idle_workers(int wanted, TransactionId xid)
{
	Latch	   *latches[HX_MAX_STREAM_WORKERS];
	int			nlatches = 0;
	int			i;

	if (hx_shared == NULL || hx_shared->nslots == 0)
		return;

	SpinLockAcquire(&hx_shared->mutex);
	for (i = 0; i < hx_shared->nslots && nlatches < wanted; i++)
	{
		HxWorkerSlot *s = &hx_shared->slots[i];

		if (s->pid != 0 && s->idle && s->latch != NULL &&
			s->dboid == MyDatabaseId && !s->stop)
		{
			s->idle = false;
			s->wait_xid = xid;
			latches[nlatches++] = s->latch;
		}
	}
	SpinLockRelease(&hx_shared->mutex);

	for (i = 0; i < nlatches; i++)
		SetLatch(latches[i]);
}
