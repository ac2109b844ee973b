/*-------------------------------------------------------------------------
 *
 * stmt.c
 *	  The statements hybridexec's C code runs through SPI.  Each is a static
 *	  HxStmt beside the code that owns it: its text (with "@extschema@"
 *	  standing for the extension's schema; internal objects live in schema
 *	  _hybridexec) and its argument types.  It is prepared the first time
 *	  it runs for a given extension schema and the plan is kept, so no
 *	  statement is parsed or planned per call.
 *
 *	  The workers' statements on hx_task run with sequential and bitmap
 *	  scans, sorts and JIT switched off (index_order), see hx_execute_plan.
 *
 *	  Callers hold a transaction with SPI connected and the rule cache
 *	  loaded (hx_rules_ensure), which is where the schema comes from.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "nodes/params.h"
#include "lib/stringinfo.h"
#include "utils/guc.h"

#include "hybridexec.h"

static SPIPlanPtr hx_stmt_plan(HxStmt *stmt);
static int	hx_index_order_begin(void);

/*
 * hx_stmt_plan
 *		The kept plan of a statement for the current extension schema,
 *		preparing it when it has none or one for a schema that is gone.
 */
static SPIPlanPtr
hx_stmt_plan(HxStmt *stmt)
{
	Oid			schema = hx_cached_schema();
	const char *quoted = hx_cached_schema_quoted();
	StringInfoData sql;
	const char *p;
	const char *mark;
	SPIPlanPtr	plan;

	if (stmt->plan != NULL && stmt->schema == schema)
		return stmt->plan;
	if (stmt->plan != NULL)
	{
		SPI_freeplan(stmt->plan);
		stmt->plan = NULL;
	}

	initStringInfo(&sql);
	for (p = stmt->sql; (mark = strstr(p, "@extschema@")) != NULL; p = mark + strlen("@extschema@"))
	{
		appendBinaryStringInfo(&sql, p, mark - p);
		appendStringInfoString(&sql, quoted);
	}
	appendStringInfoString(&sql, p);

	plan = hx_prepare(sql.data, stmt->nargs, stmt->argtypes);
	if (plan == NULL)
		elog(ERROR, "could not prepare hybridexec statement \"%s\": %s",
			 sql.data, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	stmt->plan = plan;
	stmt->schema = schema;
	return plan;
}

/*
 * hx_stmt_exec
 *		Runs a statement with its kept plan; returns SPI's result code.
 */
int
hx_stmt_exec(HxStmt *stmt, Datum *values, const char *nulls,
			 bool read_only, long count)
{
	SPIPlanPtr	plan = hx_stmt_plan(stmt);

	if (stmt->index_order)
		return hx_execute_plan(plan, values, nulls, read_only, count);
	return SPI_execute_plan(plan, values, nulls, read_only, count);
}

/*
 * hx_stmt_exec_dest
 *		Runs a statement with its kept plan, its rows going to dest rather
 *		than into SPI_tuptable (planned and run like hx_execute_plan when
 *		the statement asks for index order); returns SPI's result code.
 */
int
hx_stmt_exec_dest(HxStmt *stmt, Datum *values, const char *nulls, DestReceiver *dest)
{
	SPIPlanPtr	plan = hx_stmt_plan(stmt);
	ParamListInfo params = makeParamList(stmt->nargs);
	SPIExecuteOptions options;
	int			nest = 0;
	int			rc;
	int			i;

	for (i = 0; i < stmt->nargs; i++)
	{
		params->params[i].value = values[i];
		params->params[i].isnull = nulls != NULL && nulls[i] == 'n';
		params->params[i].pflags = PARAM_FLAG_CONST;
		params->params[i].ptype = stmt->argtypes[i];
	}
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.dest = dest;
	if (stmt->index_order)
		nest = hx_index_order_begin();
	rc = SPI_execute_plan_extended(plan, &options);
	if (stmt->index_order)
		AtEOXact_GUC(true, nest);
	return rc;
}

/*
 * hx_stmt_value
 *		Runs a statement that returns one row of one column and returns
 *		that value (by reference values live in SPI's memory until the
 *		next statement or SPI_finish).
 */
Datum
hx_stmt_value(HxStmt *stmt, Datum *values, const char *nulls, bool *isnull)
{
	int			rc = hx_stmt_exec(stmt, values, nulls, false, 2);

	if ((rc != SPI_OK_SELECT && rc != SPI_OK_UPDATE_RETURNING &&
		 rc != SPI_OK_INSERT_RETURNING && rc != SPI_OK_DELETE_RETURNING) ||
		SPI_processed != 1)
		elog(ERROR, "hybridexec statement returned %llu rows (%s), not one: %s",
			 (unsigned long long) SPI_processed, SPI_result_code_string(rc),
			 stmt->sql);
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
}

/*
 * hx_execute_plan
 *		SPI_execute_plan for the workers' own kept statements on hx_task
 *		(claims, chunk reads, bookings), planned and run with sequential
 *		and bitmap scans and sorts disabled, so that they walk their index
 *		in order and find rows by primary key whatever the statistics say.
 *		Otherwise a plan cached while the queue was empty, or held only
 *		other work, can scan and sort the whole table on every claim once a
 *		burst arrives (seen: 20,000 stream tasks not started after a
 *		minute).  JIT is off too: the penalty costs of disabled plan types
 *		would push every plan (and the ledger trigger's, planned inside)
 *		over jit_above_cost, and compiling takes far longer than these
 *		statements run.  The settings are undone before returning, or by
 *		the abort of the transaction on error, so handlers never see them.
 *		Needs SPI connected.
 */
int
hx_execute_plan(SPIPlanPtr plan, Datum *values, const char *nulls,
				bool read_only, long count)
{
	int			nest = hx_index_order_begin();
	int			rc;

	rc = SPI_execute_plan(plan, values, nulls, read_only, count);
	AtEOXact_GUC(true, nest);
	return rc;
}

/*
 * hx_index_order_begin
 *		Switches sequential and bitmap scans, sorts and JIT off (see
 *		hx_execute_plan) in a new GUC nest level, which it returns for the
 *		caller to pop with AtEOXact_GUC(true, level).
 */
static int
hx_index_order_begin(void)
{
	static const char *const off[] = {"enable_seqscan", "enable_bitmapscan",
	"enable_sort", "jit"};
	int			nest = NewGUCNestLevel();
	int			i;

	for (i = 0; i < lengthof(off); i++)
		(void) set_config_option(off[i], "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	return nest;
}
