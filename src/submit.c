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
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

#define SUBMIT_NARGS 12

/* the columns every insert fills, in the order of parameters $1..$11 */
#define HX_TASK_COLUMNS \
	"task_type, payload, route, window_name, rule_name, reason, " \
	"origin, priority, sla, deadline, department"

static SPIPlanPtr insert_plan = NULL;		/* with a dedupe_key */
static SPIPlanPtr plain_plan = NULL;	/* without: no arbiter index to check */
static SPIPlanPtr dedupe_plan = NULL;
static SPIPlanPtr bulk_plan = NULL;		/* a decision per payload */
static SPIPlanPtr uniform_plan = NULL;	/* one decision for all */
static Oid	plans_schema = InvalidOid;

static void hx_prepare_submit_plans(Oid schema);
static void hx_warn_other_database(void);
static void hx_common_values(const HxTaskArgs *args, Datum *values, char *nulls);

PG_FUNCTION_INFO_V1(hx_submit);
PG_FUNCTION_INFO_V1(hx_submit_batch);

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
	hx_common_values(&args, values, nulls);
	if (args.dedupe_key)
		values[11] = CStringGetTextDatum(args.dedupe_key);
	else
		nulls[11] = 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_prepare_submit_plans(schema);

	rc = SPI_execute_plan(args.dedupe_key ? insert_plan : plain_plan,
						  values, nulls, false, 1);
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
 * hx_submit_batch
 *		SQL: classify and queue one task per element of payloads[] (same
 *		type and other arguments), with one INSERT; returns the ids in the
 *		order of the payloads (the INSERT reads the arrays with a function
 *		scan and stores and returns rows in that order; no sort needed).
 *		Each payload is classified on its own, as payload_match rules may
 *		tell them apart.
 *
 *		Arguments: task_type, payloads, sla, origin, priority, department,
 *		deadline.
 */
Datum
hx_submit_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			schema = hx_schema_for_function(fcinfo->flinfo->fn_oid);
	LOCAL_FCINFO(one, 8);
	ArrayType  *arr;
	Datum	   *payloads;
	bool	   *pnulls;
	int			n;
	int			i;
	Datum	   *routes,
			   *windows,
			   *rules,
			   *reasons;
	bool	   *wnulls;
	int			dims[1];
	int			lbs[1] = {1};
	Datum		values[11];
	char		nulls[11];
	int			rc;
	uint64		k;
	HxTaskArgs	args;
	bool		uniform;

	hx_require_preload("hx_submit_batch()");
	hx_rules_ensure(schema);

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payloads must not be NULL"),
				 errhint("Pass an array of jsonb, one element per task.")));
	arr = PG_GETARG_ARRAYTYPE_P(1);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("payloads must be a one-dimensional array")));
	deconstruct_array(arr, JSONBOID, -1, false, TYPALIGN_INT,
					  &payloads, &pnulls, &n);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (n == 0)
		return (Datum) 0;

	/* check and classify each task exactly as hx_submit would */
	InitFunctionCallInfoData(*one, fcinfo->flinfo, 8, fcinfo->fncollation, NULL, NULL);
	one->args[0] = fcinfo->args[0];
	one->args[2] = fcinfo->args[2];
	one->args[3] = fcinfo->args[3];
	one->args[4] = fcinfo->args[4];
	one->args[5] = fcinfo->args[5];
	one->args[6].value = (Datum) 0;
	one->args[6].isnull = true;
	one->args[7] = fcinfo->args[6];

	uniform = !hx_rules_read_payload();
	routes = palloc(sizeof(Datum) * n);
	windows = palloc(sizeof(Datum) * n);
	wnulls = palloc(sizeof(bool) * n);
	rules = palloc(sizeof(Datum) * n);
	reasons = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
	{
		one->args[1].value = payloads[i];
		one->args[1].isnull = pnulls[i];
		hx_check_task_args(one, &args);
		payloads[i] = JsonbPGetDatum(args.payload);

		/*
		 * Tasks that differ only in their payload get the same decision
		 * unless a rule looks at the payload: classify once then.
		 */
		if (i == 0 || !uniform)
		{
			HxDecision	d;

			hx_classify_task(&args, &d);
			if (d.stream)
				hx_warn_other_database();
			routes[i] = CStringGetTextDatum(d.stream ? "stream" : "batch");
			wnulls[i] = (d.window_name == NULL);
			windows[i] = wnulls[i] ? (Datum) 0 : CStringGetTextDatum(d.window_name);
			rules[i] = CStringGetTextDatum(d.rule_name);
			reasons[i] = CStringGetTextDatum(d.reason);
		}
		else
		{
			routes[i] = routes[0];
			wnulls[i] = wnulls[0];
			windows[i] = windows[0];
			rules[i] = rules[0];
			reasons[i] = reasons[0];
		}
	}

	dims[0] = n;
	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(args.task_type);
	values[1] = PointerGetDatum(construct_array(payloads, n, JSONBOID, -1, false, TYPALIGN_INT));
	if (uniform)
	{
		values[2] = routes[0];
		values[3] = windows[0];
		nulls[3] = wnulls[0] ? 'n' : ' ';
		values[4] = rules[0];
		values[5] = reasons[0];
	}
	else
	{
		values[2] = PointerGetDatum(construct_array(routes, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[3] = PointerGetDatum(construct_md_array(windows, wnulls, 1, dims, lbs,
													   TEXTOID, -1, false, TYPALIGN_INT));
		values[4] = PointerGetDatum(construct_array(rules, n, TEXTOID, -1, false, TYPALIGN_INT));
		values[5] = PointerGetDatum(construct_array(reasons, n, TEXTOID, -1, false, TYPALIGN_INT));
	}
	hx_common_values(&args, values, nulls);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_prepare_submit_plans(schema);
	rc = SPI_execute_plan(uniform ? uniform_plan : bulk_plan, values, nulls, false, 0);
	if (rc != SPI_OK_INSERT_RETURNING || SPI_processed != (uint64) n)
		elog(ERROR, "could not insert %d tasks into hx_task: %s", n,
			 SPI_result_code_string(rc));
	for (k = 0; k < SPI_processed; k++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[k],
									   SPI_tuptable->tupdesc, 1, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * hx_common_values
 *		Fills parameters $7..$11 (origin, priority, sla, deadline,
 *		department), which the single and the bulk insert share.
 */
static void
hx_common_values(const HxTaskArgs *args, Datum *values, char *nulls)
{
	values[6] = CStringGetTextDatum(args->origin);
	values[7] = Int32GetDatum(args->priority);
	if (args->sla)
		values[8] = IntervalPGetDatum(args->sla);
	else
		nulls[8] = 'n';
	if (args->has_deadline)
		values[9] = TimestampTzGetDatum(args->deadline);
	else
		nulls[9] = 'n';
	if (args->department)
		values[10] = CStringGetTextDatum(args->department);
	else
		nulls[10] = 'n';
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
		SPI_freeplan(plain_plan);
		SPI_freeplan(dedupe_plan);
		SPI_freeplan(bulk_plan);
		SPI_freeplan(uniform_plan);
		insert_plan = plain_plan = dedupe_plan = bulk_plan = uniform_plan = NULL;
	}

	sql = psprintf("INSERT INTO %s (" HX_TASK_COLUMNS ", dedupe_key) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
				   "ON CONFLICT (task_type, dedupe_key) "
				   "WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed') "
				   "DO NOTHING RETURNING id", task);
	insert_plan = hx_prepare(sql, SUBMIT_NARGS, argtypes);
	if (insert_plan == NULL)
		elog(ERROR, "could not prepare hx_submit insert: %s",
			 SPI_result_code_string(SPI_result));

	sql = psprintf("INSERT INTO %s (" HX_TASK_COLUMNS ", dedupe_key) "
				   "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
				   "RETURNING id", task);
	plain_plan = hx_prepare(sql, SUBMIT_NARGS, argtypes);
	if (plain_plan == NULL)
		elog(ERROR, "could not prepare hx_submit insert");

	{
		Oid			bulk_types[11] = {TEXTOID, JSONBARRAYOID, TEXTARRAYOID,
			TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTOID, INT4OID,
		INTERVALOID, TIMESTAMPTZOID, TEXTOID};

		sql = psprintf("INSERT INTO %s (" HX_TASK_COLUMNS ") "
					   "SELECT $1, u.p, u.r, u.w, u.n, u.why, $7, $8, $9, $10, $11 "
					   "FROM unnest($2, $3, $4, $5, $6) AS u (p, r, w, n, why) "
					   "RETURNING id", task);
		bulk_plan = hx_prepare(sql, 11, bulk_types);
		if (bulk_plan == NULL)
			elog(ERROR, "could not prepare hx_submit_batch insert");

		/* the same with one decision for all: unnest of one array only */
		bulk_types[2] = bulk_types[3] = bulk_types[4] = bulk_types[5] = TEXTOID;
		sql = psprintf("INSERT INTO %s (" HX_TASK_COLUMNS ") "
					   "SELECT $1, u.p, $3, $4, $5, $6, $7, $8, $9, $10, $11 "
					   "FROM unnest($2) AS u (p) "
					   "RETURNING id", task);
		uniform_plan = hx_prepare(sql, 11, bulk_types);
		if (uniform_plan == NULL)
			elog(ERROR, "could not prepare hx_submit_batch insert");
	}

	sql = psprintf("SELECT id FROM %s WHERE task_type = $1 AND dedupe_key = $2 "
				   "AND status IN ('queued', 'running', 'failed')", task);
	dedupe_plan = hx_prepare(sql, 2, dedupe_types);
	if (dedupe_plan == NULL)
		elog(ERROR, "could not prepare hx_submit dedupe lookup");

	SPI_keepplan(insert_plan);
	SPI_keepplan(plain_plan);
	SPI_keepplan(dedupe_plan);
	SPI_keepplan(bulk_plan);
	SPI_keepplan(uniform_plan);
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

	if (checked || hx_database_name == NULL)
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
