/*-------------------------------------------------------------------------
 *
 * submit.c
 *	  hx_submit(): checks a task, classifies it with the cached rules and
 *	  inserts it into hx_task with one kept SPI plan.  The hx_task_wake
 *	  trigger then wakes a stream worker when the transaction commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

#define SUBMIT_NARGS 12

static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr dedupe_plan = NULL;
static Oid	plans_schema = InvalidOid;

static void hx_prepare_submit_plans(Oid schema);
static void hx_warn_other_database(void);

PG_FUNCTION_INFO_V1(hx_submit);

/*
 * hx_submit
 *		SQL: classify and queue one task; returns its id.  With a dedupe_key
 *		that an unfinished task of the same type already has, returns that
 *		task's id and queues nothing.
 */
Datum
hx_submit(PG_FUNCTION_ARGS)
{
	Oid			schema = hx_schema_for_function(fcinfo->flinfo->fn_oid);
	HxTaskArgs	args;
	HxDecision	d;
	Datum		values[SUBMIT_NARGS];
	char		nulls[SUBMIT_NARGS];
	int64		id = 0;
	bool		isnull;
	int			rc;

	hx_require_preload("hx_submit()");
	hx_rules_ensure(schema);
	hx_check_task_args(fcinfo, &args);
	hx_classify_task(&args, &d);
	if (d.stream)
		hx_warn_other_database();

	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(args.task_type);
	values[1] = JsonbPGetDatum(args.payload);
	values[2] = CStringGetTextDatum(d.stream ? "stream" : "batch");
	if (d.window_name)
		values[3] = CStringGetTextDatum(d.window_name);
	else
		nulls[3] = 'n';
	values[4] = CStringGetTextDatum(d.rule_name);
	values[5] = CStringGetTextDatum(d.reason);
	values[6] = CStringGetTextDatum(args.origin);
	values[7] = Int32GetDatum(args.priority);
	if (args.sla)
		values[8] = IntervalPGetDatum(args.sla);
	else
		nulls[8] = 'n';
	if (args.has_deadline)
		values[9] = TimestampTzGetDatum(args.deadline);
	else
		nulls[9] = 'n';
	if (args.department)
		values[10] = CStringGetTextDatum(args.department);
	else
		nulls[10] = 'n';
	if (args.dedupe_key)
		values[11] = CStringGetTextDatum(args.dedupe_key);
	else
		nulls[11] = 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_prepare_submit_plans(schema);

	rc = SPI_execute_plan(insert_plan, values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into hx_task: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	else
	{
		Datum		dv[2] = {values[0], values[11]};

		/* dedupe: an unfinished task with this key exists */
		rc = SPI_execute_plan(dedupe_plan, dv, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("task with dedupe_key \"%s\" finished while being submitted again",
							args.dedupe_key),
					 errhint("Retry the hx_submit() call.")));
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	}
	SPI_finish();

	PG_RETURN_INT64(id);
}

/*
 * hx_prepare_submit_plans
 *		Prepares and keeps the insert and dedupe plans for the extension's
 *		schema.  Runs inside SPI; the rule cache must be loaded.
 */
static void
hx_prepare_submit_plans(Oid schema)
{
	Oid			argtypes[SUBMIT_NARGS] = {TEXTOID, JSONBOID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, INT4OID, INTERVALOID, TIMESTAMPTZOID,
	TEXTOID, TEXTOID};
	Oid			dedupe_types[2] = {TEXTOID, TEXTOID};
	const char *task = hx_qualified("hx_task");
	char	   *sql;

	if (insert_plan != NULL && plans_schema == schema)
		return;
	if (insert_plan != NULL)
	{
		SPI_freeplan(insert_plan);
		SPI_freeplan(dedupe_plan);
		insert_plan = dedupe_plan = NULL;
	}

	sql = psprintf("INSERT INTO %s (task_type, payload, route, window_name, "
				   "rule_name, reason, origin, priority, sla, deadline, "
				   "department, dedupe_key) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
				   "ON CONFLICT (task_type, dedupe_key) "
				   "WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed') "
				   "DO NOTHING RETURNING id", task);
	insert_plan = SPI_prepare(sql, SUBMIT_NARGS, argtypes);
	if (insert_plan == NULL)
		elog(ERROR, "could not prepare hx_submit insert: %s",
			 SPI_result_code_string(SPI_result));

	sql = psprintf("SELECT id FROM %s WHERE task_type = $1 AND dedupe_key = $2 "
				   "AND status IN ('queued', 'running', 'failed')", task);
	dedupe_plan = SPI_prepare(sql, 2, dedupe_types);
	if (dedupe_plan == NULL)
		elog(ERROR, "could not prepare hx_submit dedupe lookup");

	SPI_keepplan(insert_plan);
	SPI_keepplan(dedupe_plan);
	plans_schema = schema;
}

/*
 * hx_warn_other_database
 *		Stream tasks only run in hybridexec.database_name; warn once per
 *		session when they are queued elsewhere.
 */
static void
hx_warn_other_database(void)
{
	static bool checked = false;
	char	   *dbname;

	if (checked)
		return;
	checked = true;
	dbname = get_database_name(MyDatabaseId);
	if (dbname != NULL && hx_stream_workers > 0 &&
		strcmp(dbname, hx_database_name) != 0)
		ereport(WARNING,
				(errmsg("stream tasks queued in database \"%s\" wait for external executors",
						dbname),
				 errdetail("The hybridexec stream workers serve database \"%s\".",
						   hx_database_name),
				 errhint("Set hybridexec.database_name = '%s' and restart the server to run in-database handlers here.",
						 dbname)));
}
