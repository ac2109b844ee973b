/*-------------------------------------------------------------------------
 *
 * submit.c
 *	  The submitter's side: hx_submit() and hx_submit_batch() check a task,
 *	  classify it with the cached rules and insert it into hx_task with a
 *	  kept plan (the hx_task_wake trigger then wakes a stream worker when
 *	  the transaction commits); hx_wait() waits for a task to finish.
 *
 *	  They run as their caller, who needs no right on hx_task: the caller
 *	  is recorded as the task's submitted_by, the checks are made for it
 *	  (may it submit for that department?), and the statements run as the
 *	  extension's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
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
#include "utils/wait_event.h"

#include "hybridexec.h"

/* the columns every insert fills, in the order of parameters $1..$12 */
#define HX_TASK_COLUMNS \
	"task_type, payload, route, window_name, rule_name, reason, " \
	"origin, priority, sla, deadline, department, submitted_by"

/* how often hx_wait looks */
#define HX_WAIT_POLL_MS	5

static HxStmt insert_dedupe = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ", dedupe_key) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
	"ON CONFLICT (task_type, dedupe_key) "
	"WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed') "
	"DO NOTHING RETURNING id",
	13, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
	INTERVALOID, TIMESTAMPTZOID, TEXTOID, OIDOID, TEXTOID}
};

/* without a dedupe key: no arbiter index to check */
static HxStmt insert_plain = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
	12, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, INT4OID,
	INTERVALOID, TIMESTAMPTZOID, TEXTOID, OIDOID}
};

static HxStmt dedupe_lookup = {
	"SELECT id FROM ONLY @extschema@.hx_task WHERE task_type = $1 AND dedupe_key = $2 "
	"AND status IN ('queued', 'running', 'failed')",
	2, {TEXTOID, TEXTOID}
};

/* a decision per payload */
static HxStmt insert_bulk = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"SELECT $1, u.p, u.r, u.w, u.n, u.why, $7, $8, $9, $10, $11, $12 "
	"FROM unnest($2, $3, $4, $5, $6) AS u (p, r, w, n, why) RETURNING id",
	12, {TEXTOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, TEXTOID, INT4OID, INTERVALOID, TIMESTAMPTZOID, TEXTOID, OIDOID}
};

/* one decision for all: unnest of one array only */
static HxStmt insert_uniform = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"SELECT $1, u.p, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 "
	"FROM unnest($2) AS u (p) RETURNING id",
	12, {TEXTOID, JSONBARRAYOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	INT4OID, INTERVALOID, TIMESTAMPTZOID, TEXTOID, OIDOID}
};

static HxStmt may_submit_for = {
	"SELECT _hybridexec.hx_may_submit_for($1, $2)",
	2, {OIDOID, TEXTOID}
};

static HxStmt wait_status = {
	"SELECT t.status, t.xmin, t.submitted_by, t.department FROM @extschema@.hx_task t WHERE t.id = $1",
	1, {INT8OID}
};

static int64 hx_submit_one(FunctionCallInfo fcinfo, Oid submitted_by);
static void hx_check_department(Oid submitter, const char *department);
static void hx_warn_other_database(void);
static void hx_common_values(const HxTaskArgs *args, Oid submitted_by,
							 Datum *values, char *nulls);

PG_FUNCTION_INFO_V1(hx_submit);
PG_FUNCTION_INFO_V1(hx_submit_as);
PG_FUNCTION_INFO_V1(hx_submit_batch);
PG_FUNCTION_INFO_V1(hx_wait);
PG_FUNCTION_INFO_V1(hx_require_read_committed);

/*
 * hx_submit
 *		SQL: classify and queue one task for the caller; returns its id.
 *		With a dedupe_key that an unfinished task of the same type already
 *		has, returns that task's id and queues nothing.
 */
Datum
hx_submit(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(hx_submit_one(fcinfo, GetUserId()));
}

/*
 * hx_submit_as
 *		SQL (_hybridexec.hx_submit_as(submitted_by, task_type, payload, sla,
 *		origin)): hx_submit on behalf of a role, for the rows of watched
 *		tables (submitted by the role that attached the table).  Internal.
 */
Datum
hx_submit_as(PG_FUNCTION_ARGS)
{
	LOCAL_FCINFO(inner, 8);
	int			i;

	if (PG_ARGISNULL(0))
		elog(ERROR, "hx_submit_as needs a role");
	InitFunctionCallInfoData(*inner, fcinfo->flinfo, 8, PG_GET_COLLATION(), NULL, NULL);
	for (i = 0; i < 8; i++)
	{
		inner->args[i].value = (Datum) 0;
		inner->args[i].isnull = true;
	}
	for (i = 0; i < 4; i++)
		inner->args[i] = fcinfo->args[i + 1];
	inner->args[4].value = Int32GetDatum(0);	/* priority */
	inner->args[4].isnull = false;
	PG_RETURN_INT64(hx_submit_one(inner, PG_GETARG_OID(0)));
}

/*
 * hx_submit_one
 *		Checks, classifies and queues the task hx_submit's arguments in
 *		fcinfo describe, submitted by submitted_by; returns its id.
 */
static int64
hx_submit_one(FunctionCallInfo fcinfo, Oid submitted_by)
{
	Oid			schema = hx_schema_for_function(fcinfo->flinfo->fn_oid);
	HxTaskArgs	args;
	HxDecision	d;
	HxUserSave	save;
	Datum		values[13];
	char		nulls[13];
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
	hx_common_values(&args, submitted_by, values, nulls);
	if (args.dedupe_key)
		values[12] = CStringGetTextDatum(args.dedupe_key);
	else
		nulls[12] = 'n';

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	hx_check_department(submitted_by, args.department);

	rc = hx_stmt_exec(args.dedupe_key ? &insert_dedupe : &insert_plain,
					  values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into hx_task: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	else
	{
		Datum		dv[2] = {values[0], values[12]};

		/* dedupe: an unfinished task with this key exists */
		rc = hx_stmt_exec(&dedupe_lookup, dv, NULL, false, 1);
		if (rc != SPI_OK_SELECT || SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("task with dedupe_key \"%s\" finished while being submitted again",
							args.dedupe_key),
					 errhint("Retry the hx_submit() call.")));
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	}
	hx_restore_user(&save);
	SPI_finish();
	return id;
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
	Oid			submitted_by = GetUserId();
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
	Datum		values[12];
	char		nulls[12];
	int			rc;
	uint64		k;
	HxTaskArgs	args;
	HxUserSave	save;
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
	hx_common_values(&args, submitted_by, values, nulls);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	hx_check_department(submitted_by, args.department);
	rc = hx_stmt_exec(uniform ? &insert_uniform : &insert_bulk, values, nulls, false, 0);
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
	hx_restore_user(&save);
	SPI_finish();
	return (Datum) 0;
}

/*
 * hx_common_values
 *		Fills parameters $7..$12 (origin, priority, sla, deadline,
 *		department, submitted_by), which the single and the bulk insert
 *		share.
 */
static void
hx_common_values(const HxTaskArgs *args, Oid submitted_by, Datum *values,
				 char *nulls)
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
	values[11] = ObjectIdGetDatum(submitted_by);
}

/*
 * hx_check_department
 *		Once any department membership is defined (hx_department_member), a
 *		role submits only for departments it is a member of (administrators
 *		for any).  In SPI, as the owner.
 */
static void
hx_check_department(Oid submitter, const char *department)
{
	Datum		values[2];
	bool		isnull;
	char	   *role;

	if (department == NULL)
		return;
	values[0] = ObjectIdGetDatum(submitter);
	values[1] = CStringGetTextDatum(department);
	if (DatumGetBool(hx_stmt_value(&may_submit_for, values, NULL, &isnull)))
		return;
	role = GetUserNameFromId(submitter, true);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("role \"%s\" may not submit tasks for department \"%s\"",
					role ? role : "?", department),
			 errdetail("Department memberships are defined in hx_department_member, and the role is not a member of this department."),
			 errhint("An administrator adds it: INSERT INTO hx_department_member (role, department) VALUES ('%s', '%s');",
					 role ? role : "?", department)));
}

/*
 * hx_wait
 *		SQL: waits until the task is done, dead or cancelled, or the
 *		timeout passes; returns its status then.  Looks every 5 ms, each
 *		time with a new snapshot (so READ COMMITTED only).  A task the
 *		caller may not see does not exist for it; one queued or changed by
 *		the calling transaction (or a subtransaction of it) is refused,
 *		since no worker can see it before the transaction commits.
 */
Datum
hx_wait(PG_FUNCTION_ARGS)
{
	Oid			caller = GetUserId();
	HxUserSave	save;
	int64		id;
	Datum		arg;
	TimestampTz give_up;
	char	   *status = NULL;
	bool		first = true;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task id must not be NULL")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be NULL"),
				 errhint("Leave it out to wait at most 30 seconds.")));
	hx_check_read_committed("hx_wait", "task");
	id = PG_GETARG_INT64(0);
	arg = Int64GetDatum(id);
	give_up = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
													  TimestampTzGetDatum(GetCurrentTimestamp()),
													  PG_GETARG_DATUM(1)));

	hx_rules_ensure(hx_schema_for_function(fcinfo->flinfo->fn_oid));
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	for (;;)
	{
		HeapTuple	tup;
		TupleDesc	desc;
		bool		isnull;
		TransactionId xmin;
		Oid			submitted_by;
		Datum		dept;
		char	   *department;

		if (hx_stmt_exec(&wait_status, &arg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read task %lld", (long long) id);
		if (SPI_processed != 1 && first)
			hx_task_invisible(id, "wait for");
		if (SPI_processed != 1)
			break;				/* retention took it meanwhile */
		tup = SPI_tuptable->vals[0];
		desc = SPI_tuptable->tupdesc;
		status = TextDatumGetCString(SPI_getbinval(tup, desc, 1, &isnull));
		xmin = DatumGetTransactionId(SPI_getbinval(tup, desc, 2, &isnull));
		submitted_by = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
		dept = SPI_getbinval(tup, desc, 4, &isnull);
		department = isnull ? NULL : TextDatumGetCString(dept);
		if (first)
		{
			if (!hx_caller_sees(caller, submitted_by, department))
				hx_task_invisible(id, "wait for");
			if (TransactionIdIsCurrentTransactionId(xmin))
				ereport(ERROR,
						(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						 errmsg("task %lld was queued or changed by this transaction", (long long) id),
						 errhint("Workers only see committed tasks: commit, then wait.")));
			first = false;
		}
		if (strcmp(status, "done") == 0 || strcmp(status, "dead") == 0 ||
			strcmp(status, "cancelled") == 0 || GetCurrentTimestamp() >= give_up)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 HX_WAIT_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* the status lives in SPI's memory: copy it out before SPI_finish */
	if (status != NULL)
		status = strcpy(SPI_palloc(strlen(status) + 1), status);
	hx_restore_user(&save);
	SPI_finish();
	if (status == NULL)
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(status));
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

/*
 * hx_check_read_committed
 *		A clear error unless the transaction reads committed data afresh
 *		with each statement: function, which waits for a what (a task, a
 *		run) to change, would otherwise never see it change.
 */
void
hx_check_read_committed(const char *function, const char *what)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s needs READ COMMITTED isolation", function),
				 errhint("In REPEATABLE READ or SERIALIZABLE the %s never seems to change; wait outside that transaction.",
						 what)));
}

/*
 * hx_require_read_committed
 *		SQL (_hybridexec.hx_require_read_committed(caller, what)):
 *		hx_check_read_committed, for the waiting functions written in SQL.
 */
Datum
hx_require_read_committed(PG_FUNCTION_ARGS)
{
	hx_check_read_committed(text_to_cstring(PG_GETARG_TEXT_PP(0)),
							text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}
