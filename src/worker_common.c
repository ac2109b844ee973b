/*-------------------------------------------------------------------------
 *
 * worker_common.c
 *	  Plumbing shared by hybridexec's background workers (stream, batch,
 *	  scheduler): the transaction bracket every unit of work runs in, and
 *	  finding the extension (its schema and owner) in the database.
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
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/fmgroids.h"
#include "utils/snapmgr.h"

#include "hybridexec.h"


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
 * hx_worker_catch
 *		In a PG_CATCH block of a worker: copies the error into cxt (which
 *		must outlive the transaction), logs it and aborts the transaction,
 *		so that the worker can carry on.
 */
ErrorData *
hx_worker_catch(MemoryContext cxt)
{
	ErrorData  *edata;

	HOLD_INTERRUPTS();
	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	RESUME_INTERRUPTS();
	return edata;
}

/*
 * hx_worker_find_extension
 *		The schema of the extension in our database, or InvalidOid when it
 *		is not created (yet).  Loads the rule cache for that schema (which
 *		also tells the kept statements their schema and owner).  In a
 *		transaction, with SPI connected.
 */
Oid
hx_worker_find_extension(void)
{
	Oid			schema;
	Oid			owner;

	if (!hx_extension_lookup(&schema, &owner))
		return InvalidOid;
	hx_rules_ensure(schema);
	return schema;
}

/*
 * hx_extension_lookup
 *		The schema and owner of the extension in this database, read from
 *		pg_extension (PostgreSQL 15 exports no get_extension_schema); false
 *		when it is not created.  In a transaction.
 */
bool
hx_extension_lookup(Oid *schema, Oid *owner)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	bool		found = false;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(HX_EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		*schema = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
		*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}
