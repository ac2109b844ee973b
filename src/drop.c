/*-------------------------------------------------------------------------
 *
 * drop.c
 *	  What DROP EXTENSION hybridexec takes along that PostgreSQL cannot:
 *	  the pg_cron jobs that open the windows.  They live in pg_cron's
 *	  table, not among the extension's objects, and would otherwise stay
 *	  behind calling functions that no longer exist.  A utility hook sees
 *	  the DROP before it runs and unschedules them in the same transaction,
 *	  so a DROP that fails (or is rolled back) keeps them.  CREATE, ALTER
 *	  and DROP EXTENSION hybridexec also tell the launcher to look at the
 *	  database again when they commit (whatever version's script runs).
 *
 *	  The hook also makes way for statements that need a database to have
 *	  no other connections (DROP DATABASE, ALTER DATABASE ... RENAME TO or
 *	  SET TABLESPACE, CREATE DATABASE ... TEMPLATE): it stops the workers
 *	  of that database first and keeps them out for a few seconds
 *	  (hx_db_pause), as PostgreSQL does with autovacuum.
 *
 *	  The hook is installed in every process that loads the library; with
 *	  the library in shared_preload_libraries, as hybridexec requires,
 *	  that is every backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"

#include "hybridexec.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

static void hx_drop_cron_jobs(void);
static void hx_make_way(Node *parsetree);

/*
 * hx_process_utility
 *		ProcessUtility hook: before DROP EXTENSION names hybridexec (and it
 *		exists here), removes this database's window jobs; then runs the
 *		statement as usual.
 */
static void
hx_process_utility(PlannedStmt *pstmt, const char *queryString,
#if PG_VERSION_NUM >= 140000
				   bool readOnlyTree,
#endif
				   ProcessUtilityContext context, ParamListInfo params,
				   QueryEnvironment *queryEnv, DestReceiver *dest,
				   QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, DropStmt) &&
		((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION)
	{
		ListCell   *lc;

		foreach(lc, ((DropStmt *) parsetree)->objects)
		{
			if (strcmp(strVal(lfirst(lc)), HX_EXTENSION_NAME) == 0 &&
				OidIsValid(get_extension_oid(HX_EXTENSION_NAME, true)))
			{
				hx_drop_cron_jobs();
				hx_launcher_note_change();
			}
		}
	}
	if ((IsA(parsetree, CreateExtensionStmt) &&
		 strcmp(((CreateExtensionStmt *) parsetree)->extname, HX_EXTENSION_NAME) == 0) ||
		(IsA(parsetree, AlterExtensionStmt) &&
		 strcmp(((AlterExtensionStmt *) parsetree)->extname, HX_EXTENSION_NAME) == 0))
		hx_launcher_note_change();
	hx_make_way(parsetree);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString,
#if PG_VERSION_NUM >= 140000
							 readOnlyTree,
#endif
							 context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString,
#if PG_VERSION_NUM >= 140000
								readOnlyTree,
#endif
								context, params, queryEnv, dest, qc);
}

/*
 * hx_drop_cron_jobs
 *		Unschedules the window and schedule jobs of this database, when
 *		pg_cron is installed here.  In the transaction of the DROP.
 */
static void
hx_drop_cron_jobs(void)
{
	if (!OidIsValid(get_extension_oid("pg_cron", true)))
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* a fixed statement run once per DROP: no plan worth keeping */
	if (SPI_execute("SELECT cron.unschedule(jobid) FROM cron.job"
					" WHERE (jobname LIKE 'hybridexec window %' OR jobname LIKE 'hybridexec schedule %')"
					" AND database = current_database()",
					false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not unschedule the pg_cron jobs of hybridexec's windows and schedules");
	SPI_finish();
}

/*
 * hx_make_way
 *		Before a statement that needs a database without other connections,
 *		stops our workers there (see hx_db_pause).  A database we do not
 *		serve, or a name that does not exist, is left to the statement; so
 *		is one the caller does not own (superusers own every one): each of
 *		these statements needs that, and a caller who would be refused must
 *		not get to stop the workers on the way.
 */
static void
hx_make_way(Node *parsetree)
{
	const char *dbname = NULL;
	ListCell   *lc;

	if (IsA(parsetree, DropdbStmt))
		dbname = ((DropdbStmt *) parsetree)->dbname;
	else if (IsA(parsetree, RenameStmt) &&
			 ((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
		dbname = ((RenameStmt *) parsetree)->subname;
	else if (IsA(parsetree, AlterDatabaseStmt))
	{
		foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
			if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
				dbname = ((AlterDatabaseStmt *) parsetree)->dbname;
	}
	else if (IsA(parsetree, CreatedbStmt))
	{
		foreach(lc, ((CreatedbStmt *) parsetree)->options)
			if (strcmp(((DefElem *) lfirst(lc))->defname, "template") == 0)
				dbname = defGetString((DefElem *) lfirst(lc));
	}
	if (dbname != NULL)
	{
		Oid			dboid = get_database_oid(dbname, true);

#if PG_VERSION_NUM >= 160000
		if (OidIsValid(dboid) && object_ownercheck(DatabaseRelationId, dboid, GetUserId()))
#else
		if (OidIsValid(dboid) && pg_database_ownercheck(dboid, GetUserId()))
#endif
			hx_db_pause(dboid);
	}
}

/*
 * hx_drop_init
 *		Installs the hook.  From _PG_init.
 */
void
hx_drop_init(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = hx_process_utility;
}
