/*-------------------------------------------------------------------------
 *
 * worker_common.c
 *	  Plumbing shared by hybridexec's background workers (stream, batch,
 *	  scheduler): the transaction bracket every unit of work runs in,
 *	  finding the extension in the worker's database, and running the
 *	  workers' own kept plans on hx_task with a plan shape that does not
 *	  depend on the statistics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"

#include "hybridexec.h"
#include "task_exec.h"

static Oid	hx_extension_schema(Oid ext);

/*
 * hx_worker_begin_xact
 *		Starts a transaction with SPI connected and a snapshot pushed, the
 *		bracket every unit of work of a worker runs in.  No transaction may
 *		be open.
 */
void
hx_worker_begin_xact(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/*
 * hx_worker_end_xact
 *		Closes the bracket of hx_worker_begin_xact and commits.
 */
void
hx_worker_end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
}

/*
 * hx_worker_find_extension
 *		The schema of the extension in our database, or InvalidOid when it
 *		is not created (yet).  Loads the rule cache for that schema (which
 *		also resolves table names) and the plans that record outcomes.  In
 *		a transaction, with SPI connected.
 */
Oid
hx_worker_find_extension(void)
{
	Oid			ext = get_extension_oid(HX_EXTENSION_NAME, true);
	Oid			schema;

	if (!OidIsValid(ext))
		return InvalidOid;
	schema = hx_extension_schema(ext);
	if (!OidIsValid(schema))
		return InvalidOid;
	hx_rules_ensure(schema);
	hx_exec_prepare(schema);
	return schema;
}

/*
 * hx_extension_schema
 *		Schema of an extension, read from pg_extension (PostgreSQL 15 does
 *		not export get_extension_schema).  In a transaction.
 */
static Oid
hx_extension_schema(Oid ext)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	Oid			schema = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
		schema = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return schema;
}

/*
 * hx_execute_plan
 *		SPI_execute_plan for the workers' own kept statements on hx_task
 *		(claims, chunk reads, bookings), planned and run with sequential
 *		and bitmap scans and sorts disabled, so that they walk their index
 *		in order and find rows by primary key whatever the statistics say.  Otherwise a plan cached while
 *		the queue was empty, or held only other work, can scan and sort the
 *		whole table on every claim once a burst arrives (seen: 20,000
 *		stream tasks not started after a minute).  JIT is off too: the
 *		penalty costs of disabled plan types would push every plan (and the
 *		ledger trigger's, planned inside) over jit_above_cost, and compiling
 *		takes far longer than these statements run.  The settings are
 *		undone before returning, or by the abort of the transaction on
 *		error, so handlers never see them.  Needs SPI connected.
 */
int
hx_execute_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
				bool read_only, long count)
{
	static const char *const off[] = {"enable_seqscan", "enable_bitmapscan",
	"enable_sort", "jit"};
	int			nest = NewGUCNestLevel();
	int			rc;
	int			i;

	for (i = 0; i < lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	AtEOXact_GUC(true, nest);
	return rc;
}
