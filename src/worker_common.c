/*-------------------------------------------------------------------------
 *
 * worker_common.c
 *	  Plumbing shared by hybridexec's background workers (launcher,
 *	  stream, batch, scheduler): how each is described to the postmaster,
 *	  the transaction bracket every unit of work runs in, and finding the
 *	  extension (its schema and owner) in the database.
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
#include "postmaster/bgworker.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
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
 * hx_worker_describe
 *		Fills in a background worker of this library that connects to a
 *		database: it runs function, shows as type (pg_stat_activity's
 *		backend_type) and name, and is restarted after restart_time
 *		seconds (or BGW_NEVER_RESTART).  The caller sets main_arg, extra
 *		and notify_pid.
 */
void
hx_worker_describe(BackgroundWorker *worker, const char *function,
				   const char *type, const char *name, int restart_time)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart_time;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "hybridexec");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", name);
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
 *
 *		The SQL objects must be those of this library's version: after the
 *		library is upgraded and before ALTER EXTENSION hybridexec UPDATE,
 *		a background worker treats the extension as not there yet (and says
 *		so in the log, once), while a backend gets a clear error.  During
 *		the extension's own scripts the check is off: they run against the
 *		version they create.
 */
bool
hx_extension_lookup(Oid *schema, Oid *owner)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	bool		found = false;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum(HX_EXTENSION_NAME));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d;

		*schema = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
		*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		d = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);
		if (!isnull)
			version = TextDatumGetCString(d);
		found = true;
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (found && !creating_extension &&
		(version == NULL || strcmp(version, HX_VERSION) != 0))
	{
		static bool told = false;

		if (!IsBackgroundWorker)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("extension hybridexec is at version %s, but its library is version %s",
							version ? version : "?", HX_VERSION),
					 errhint("Run ALTER EXTENSION hybridexec UPDATE; in this database (its tasks and settings are kept).")));
		if (!told)
			ereport(LOG,
					(errmsg("hybridexec: the extension in database \"%s\" is at version %s, but the library is version %s: its workers wait for ALTER EXTENSION hybridexec UPDATE",
							get_database_name(MyDatabaseId), version ? version : "?", HX_VERSION)));
		told = true;
		return false;
	}
	return found;
}
