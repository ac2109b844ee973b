/*-------------------------------------------------------------------------
 *
 * attach.c
 *	  The code of watched tables (hx_attach) that touches a user's table:
 *	  it runs sealed (hx_seal) as the table's owner, in a
 *	  security-restricted operation with search_path = pg_catalog,
 *	  pg_temp - the way REFRESH MATERIALIZED VIEW runs a view's query - so
 *	  that a trigger the owner adds to the table, or a function its filter
 *	  calls, never runs with the rights of whoever inserted the row or
 *	  completed the task.  And the check of a filter: one expression,
 *	  analysed without being run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/parsenodes.h"
#include "parser/analyze.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "hybridexec.h"

/* what the code of a watched table runs with: other schemas named in full */
#define HX_OWNER_SEARCH_PATH	"pg_catalog, pg_temp"

PG_FUNCTION_INFO_V1(hx_exec_as_owner);
PG_FUNCTION_INFO_V1(hx_check_filter);

static Oid	hx_rel_owner(Oid relid);

/*
 * hx_rel_owner
 *		The owner of a relation; a clear error when it does not exist.
 */
static Oid
hx_rel_owner(Oid relid)
{
	HeapTuple	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	Oid			owner;

	if (!HeapTupleIsValid(tup))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * hx_exec_as_owner
 *		SQL (_hybridexec.hx_exec_as_owner(rel, query, a, b) RETURNS SETOF
 *		jsonb): runs query, with $1 = a and $2 = b (jsonb), as the owner of
 *		rel (see the file's header) and returns the first column of each
 *		row it returns, which must be jsonb.  Internal: the query is built
 *		by hybridexec's own functions (format with %I), with a filter that
 *		hx_check_filter accepted.
 */
Datum
hx_exec_as_owner(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			types[2] = {JSONBOID, JSONBOID};
	Datum		args[2];
	char		nulls[2];
	HxSeal		seal;
	char	   *query;
	int			rc;
	uint64		k;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		elog(ERROR, "hx_exec_as_owner needs a relation and a query");
	query = text_to_cstring(PG_GETARG_TEXT_PP(1));
	args[0] = PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2);
	nulls[0] = PG_ARGISNULL(2) ? 'n' : ' ';
	args[1] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[1] = PG_ARGISNULL(3) ? 'n' : ' ';

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	hx_seal(&seal, hx_rel_owner(PG_GETARG_OID(0)), HX_OWNER_SEARCH_PATH);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	rc = SPI_execute_with_args(query, 2, types, args, nulls, false, 0);
	if (rc < 0)
		elog(ERROR, "query on a watched table failed: %s", SPI_result_code_string(rc));
	if (SPI_tuptable != NULL)
	{
		if (SPI_tuptable->tupdesc->natts < 1 ||
			SPI_gettypeid(SPI_tuptable->tupdesc, 1) != JSONBOID)
			elog(ERROR, "a query on a watched table must return jsonb");
		for (k = 0; k < SPI_processed; k++)
		{
			bool		isnull;
			Datum		value = SPI_getbinval(SPI_tuptable->vals[k],
											  SPI_tuptable->tupdesc, 1, &isnull);

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &value, &isnull);
		}
	}
	SPI_finish();
	hx_unseal(&seal);
	return (Datum) 0;
}

/*
 * hx_check_filter
 *		SQL (_hybridexec.hx_check_filter(rel, filter)): raises a clear error
 *		unless filter is one boolean expression over the columns of rel.
 *		It is parsed on its own (so that it cannot close a parenthesis and
 *		go on with more SQL), then analysed as "SELECT (filter)::boolean
 *		FROM rel" as rel's owner would run it - names, types, the functions
 *		it calls - but never planned nor executed.
 */
Datum
hx_check_filter(PG_FUNCTION_ARGS)
{
	Oid			relid = PG_GETARG_OID(0);
	char	   *filter = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *relname;
	List	   *raw;
	SelectStmt *select;
	ResTarget  *target;
	char	   *sql;
	HxSeal		seal;

	raw = raw_parser(filter, RAW_PARSE_PLPGSQL_EXPR);
	select = (list_length(raw) == 1 && IsA(linitial_node(RawStmt, raw)->stmt, SelectStmt))
		? (SelectStmt *) linitial_node(RawStmt, raw)->stmt : NULL;
	target = (select != NULL && list_length(select->targetList) == 1)
		? linitial_node(ResTarget, select->targetList) : NULL;
	if (select == NULL || target == NULL || target->name != NULL ||
		select->distinctClause != NIL || select->fromClause != NIL ||
		select->whereClause != NULL || select->groupClause != NIL ||
		select->havingClause != NULL || select->windowClause != NIL ||
		select->sortClause != NIL || select->limitCount != NULL ||
		select->limitOffset != NULL || select->lockingClause != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("filter must be one boolean expression: %s", filter),
				 errhint("For example priority = 'urgent' AND body <> ''; no FROM, WHERE or other clauses, no second expression.")));

	relname = get_rel_name(relid);
	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	sql = psprintf("SELECT (\n%s\n)::boolean FROM ONLY %s",
				   filter, quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
													  relname));

	hx_seal(&seal, hx_rel_owner(relid), HX_OWNER_SEARCH_PATH);
	raw = raw_parser(sql, RAW_PARSE_DEFAULT);
	if (list_length(raw) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("filter must be one boolean expression: %s", filter)));
#if PG_VERSION_NUM >= 150000
	(void) parse_analyze_fixedparams(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
#else
	(void) parse_analyze(linitial_node(RawStmt, raw), sql, NULL, 0, NULL);
#endif
	hx_unseal(&seal);
	PG_RETURN_VOID();
}
