/*-------------------------------------------------------------------------
 *
 * worker_common.c
 *	  Plumbing shared by hybridexec's background workers (stream, batch,
 *	  scheduler): the transaction bracket every unit of work runs in, and
 *	  finding the extension in the worker's database.
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
