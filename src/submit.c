/*-------------------------------------------------------------------------
 *
 * submit.c
 *	  The submitter's side: hx_submit() and hx_submit_batch() check a task,
 *	  classify it with the cached rules and insert it into hx_task with a
 *	  kept plan (the hx_task_wake trigger then wakes a stream worker when
 *	  the transaction commits).
 *
 *	  They run as their caller, who needs no right on hx_task: the caller
 *	  is recorded as the task's submitted_by, the checks are made for it
 *	  (may it submit for that department?), and the statements run as the
 *	  extension's owner.  While a rule is sampled (a percentage rollout), a
 *	  task without a dedupe key takes its id before it is classified.
 *
 *	  Also the tasks that follow finished ones, submitted by the ledger
 *	  trigger (book.c) in the finishing transaction: the next tier of a
 *	  done task whose type has refine_with, the dead letter of a dead task
 *	  whose type has dead_letter_type (hx_submit_follow_ups).
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
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "hybridexec.h"
#include "task_state.h"

/* where run_at and reuse_within are among the arguments of hx_submit and hx_submit_batch */
#define ARG_RUN_AT			8
#define ARG_REUSE_WITHIN	9
#define BATCH_ARG_RUN_AT	7

/*
 * The columns every insert fills, in the order of parameters $1..$13
 * (run_after: $13, or now() when NULL).
 */
#define HX_TASK_COLUMNS \
	"task_type, payload, route, window_name, rule_name, reason, " \
	"origin, priority, sla, deadline, department, submitted_by, run_after"

/* the types of parameters $7..$13 */
#define HX_COMMON_TYPES \
	TEXTOID, INT4OID, INTERVALOID, TIMESTAMPTZOID, TEXTOID, OIDOID, TIMESTAMPTZOID

/* $14 the dedupe key, $15 the sampled rule that saw the task */
static HxStmt insert_dedupe = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ", dedupe_key, sample_rule) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $14, $15) "
	"ON CONFLICT (task_type, dedupe_key) "
	"WHERE dedupe_key IS NOT NULL AND status IN ('queued', 'running', 'failed') "
	"DO NOTHING RETURNING id",
	15, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, HX_COMMON_TYPES, TEXTOID, TEXTOID}
};

/* without a dedupe key: no arbiter index to check */
static HxStmt insert_plain = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now())) RETURNING id",
	13, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, HX_COMMON_TYPES}
};

/*
 * While a rule is sampled, a task without a dedupe key is sampled by its
 * id, taken before it is classified (hx_take_ids): $14 is left NULL
 * (the dedupe key), $15 the sampled rule that saw the task, $16 the id.
 */
static HxStmt insert_plain_id = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ", sample_rule, id) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $15, $16) "
	"RETURNING id",
	16, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, HX_COMMON_TYPES, TEXTOID, TEXTOID,
	INT8OID}
};

/*
 * Tiered results: the done tasks ($1) of types with refine_with, with
 * what their next tier is submitted with.  Through hx_task: a done task
 * may have moved to hx_task_history.
 */
static HxStmt refine_read = {
	"SELECT t.id, y.refine_with, t.payload, t.priority, t.department, t.submitted_by, t.tier "
	"FROM @extschema@.hx_task t JOIN @extschema@.hx_type y ON y.task_type = t.task_type "
	"WHERE t.id = ANY ($1) AND t.status = 'done' AND y.refine_with IS NOT NULL ORDER BY t.id",
	1, {INT8ARRAYOID}
};

/*
 * Dead letters for people: the dead tasks ($1) of types with
 * dead_letter_type, read as refine_read reads tasks to refine, with the
 * dead task, its attempts and errors as the payload.
 */
static HxStmt dead_letter_read = {
	"SELECT t.id, y.dead_letter_type, jsonb_build_object('task_id', t.id, 'task_type', t.task_type, "
	"'payload', t.payload, 'attempts', t.attempts, 'last_error', t.last_error, 'errors', "
	"coalesce((SELECT jsonb_agg(jsonb_build_object('attempt', e.attempt, 'at', e.at, 'sqlstate', e.sqlstate, "
	"'message', e.message) ORDER BY e.id) FROM @extschema@.hx_error e WHERE e.task_id = t.id), '[]')), "
	"t.priority, t.department, t.submitted_by, 0 "
	"FROM @extschema@.hx_task t JOIN @extschema@.hx_type y ON y.task_type = t.task_type "
	"WHERE t.id = ANY ($1) AND t.status = 'dead' AND y.dead_letter_type IS NOT NULL ORDER BY t.id",
	1, {INT8ARRAYOID}
};

/*
 * A follow-up task (a next tier, a dead letter): the columns of
 * insert_plain_id ($1..$16), its parent ($17, NULL for a dead letter) and
 * tier ($18)
 */
static HxStmt insert_follow_up = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ", sample_rule, id, parent_id, tier) "
	"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()), $15, $16, $17, $18)",
	18, {TEXTOID, JSONBOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, HX_COMMON_TYPES, TEXTOID, TEXTOID,
	INT8OID, INT8OID, INT4OID}
};

/* a watched table's row is the next tier's too: its result is written back again */
static HxStmt refine_source = {
	"INSERT INTO @extschema@.hx_task_source (task_id, source, source_key) "
	"SELECT $1, s.source, s.source_key FROM @extschema@.hx_task_source s WHERE s.task_id = $2",
	2, {INT8OID, INT8OID}
};

/* the next $2 values of hx_task's id sequence ($1) */
static HxStmt take_ids = {
	"SELECT nextval($1) FROM generate_series(1, $2)",
	2, {REGCLASSOID, INT4OID}
};

static HxStmt dedupe_lookup = {
	"SELECT id FROM ONLY @extschema@.hx_task WHERE task_type = $1 AND dedupe_key = $2 "
	"AND status IN ('queued', 'running', 'failed')",
	2, {TEXTOID, TEXTOID}
};

/* a decision per payload */
static HxStmt insert_bulk = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"SELECT $1, u.p, u.r, u.w, u.n, u.why, $7, $8, $9, $10, $11, $12, coalesce($13, now()) "
	"FROM unnest($2, $3, $4, $5, $6) AS u (p, r, w, n, why) RETURNING id",
	13, {TEXTOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, HX_COMMON_TYPES}
};

/* a decision per payload, with the ids taken for sampled rules ($15) and the rules that saw them ($14) */
static HxStmt insert_bulk_ids = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ", sample_rule, id) "
	"SELECT $1, u.p, u.r, u.w, u.n, u.why, $7, $8, $9, $10, $11, $12, coalesce($13, now()), u.s, u.i "
	"FROM unnest($2, $3, $4, $5, $6, $14, $15) AS u (p, r, w, n, why, s, i) RETURNING id",
	15, {TEXTOID, JSONBARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
	TEXTARRAYOID, HX_COMMON_TYPES, TEXTARRAYOID, INT8ARRAYOID}
};

/* one decision for all: unnest of one array only */
static HxStmt insert_uniform = {
	"INSERT INTO @extschema@.hx_task (" HX_TASK_COLUMNS ") "
	"SELECT $1, u.p, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, coalesce($13, now()) "
	"FROM unnest($2) AS u (p) RETURNING id",
	13, {TEXTOID, JSONBARRAYOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, HX_COMMON_TYPES}
};

/*
 * reuse_within: the latest done task of the type and dedupe key ($1, $2)
 * that finished within $3 and that the caller ($4) may see.
 */
static HxStmt reuse_lookup = {
	"SELECT h.id, h.route FROM ONLY @extschema@.hx_task_history h "
	"WHERE h.task_type = $1 AND h.dedupe_key = $2 AND h.dedupe_key IS NOT NULL "
	"AND h.status = 'done' AND h.finished_at >= now() - $3 "
	"AND _hybridexec.hx_visible_to($4, h.submitted_by, h.department) "
	"ORDER BY h.finished_at DESC LIMIT 1",
	4, {TEXTOID, TEXTOID, INTERVALOID, OIDOID}
};

/*
 * A reuse is booked as an attempt of the reused task ($1) that cost
 * nothing, with what streaming and batch would have cost at catalog
 * prices (hx_savings counts what it saved), for the new submission
 * ($2 type, $3 route, $4 department, $5 origin, $6 submitter, $7 sla,
 * $8 deadline); and counted in hx_stat_minute.
 */
static HxStmt reuse_book = {
	"WITH p AS (SELECT coalesce(@extschema@.hx_price_at($2, 'stream', now()), 0) AS stream_cost, "
	"coalesce(@extschema@.hx_price_at($2, 'batch', now()), 0) AS batch_cost, "
	"coalesce((SELECT r.currency FROM _hybridexec.hx_price_rule($2, 'stream', now()) r), "
	"current_setting('hybridexec.currency')) AS currency), "
	"b AS (INSERT INTO @extschema@.hx_cost_attempt (at, task_id, attempt, outcome, task_type, route, "
	"department, origin, submitted_by, submitted_at, sla, deadline, wait_seconds, wall_seconds, "
	"latency_seconds, currency, cost, baseline_cost, batch_cost) "
	"SELECT now(), $1, 0, 'reused', $2, $3, $4, $5, $6, now(), $7, $8, 0, 0, 0, p.currency, 0, "
	"p.stream_cost, p.batch_cost FROM p) "
	"INSERT INTO @extschema@.hx_stat_minute AS s (minute, task_type, route, shard, reused, wait_hist, run_hist) "
	"VALUES (date_trunc('minute', now()), $2, $3, (pg_backend_pid() % 16)::smallint, 1, '{}', '{}') "
	"ON CONFLICT (minute, task_type, route, shard) DO UPDATE SET reused = s.reused + 1",
	8, {INT8OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, REGROLEOID, INTERVALOID, TIMESTAMPTZOID}
};

static HxStmt may_submit_for = {
	"SELECT _hybridexec.hx_may_submit_for($1, $2)",
	2, {OIDOID, TEXTOID}
};

static int64 hx_submit_one(FunctionCallInfo fcinfo, Oid submitted_by);
static int64 *hx_take_ids(int n);
static void hx_follow_up_one(SPITupleTable *found, uint64 k, int64 new_id, bool dead);
static void hx_check_department(Oid submitter, const char *department);
static void hx_warn_other_database(void);
static void hx_check_run_at(FunctionCallInfo fcinfo, int argno, HxTaskArgs *args);
static void hx_common_values(const HxTaskArgs *args, Oid submitted_by,
							 Datum *values, char *nulls);
static void hx_decision_values(const HxTaskArgs *args, const HxDecision *d,
							   const char *reason, Oid submitted_by,
							   Datum *values, char *nulls);

PG_FUNCTION_INFO_V1(hx_submit);
PG_FUNCTION_INFO_V1(hx_submit_as);
PG_FUNCTION_INFO_V1(hx_submit_batch);
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
 *		origin, priority, department, dedupe_key)): hx_submit on behalf of
 *		a role, for the rows of watched tables (submitted by the role that
 *		attached the table) and the ticks of schedules (by the role that
 *		scheduled them).  Internal.
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
	for (i = 0; i < 7; i++)
		inner->args[i] = fcinfo->args[i + 1];
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
	Datum		values[16];
	char		nulls[16];
	Interval   *reuse_within = NULL;
	int64		id = 0;
	bool		isnull;
	int			rc;

	hx_require_preload("hx_submit()");
	hx_rules_ensure(schema);
	hx_check_task_args(fcinfo, &args, false);
	if (PG_NARGS() > ARG_RUN_AT)
		hx_check_run_at(fcinfo, ARG_RUN_AT, &args);
	if (PG_NARGS() > ARG_REUSE_WITHIN && !PG_ARGISNULL(ARG_REUSE_WITHIN))
	{
		Interval	zero;

		memset(&zero, 0, sizeof(zero));
		reuse_within = PG_GETARG_INTERVAL_P(ARG_REUSE_WITHIN);
		if (args.dedupe_key == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reuse_within needs a dedupe_key"),
					 errhint("The dedupe key says which earlier task's result may serve, e.g. dedupe_key => 'report:2026-W48'.")));
		if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(reuse_within),
											  IntervalPGetDatum(&zero))) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("reuse_within must be positive"),
					 errhint("How old a done task's result may be, e.g. '1 day'; leave it out to reuse nothing.")));
	}
	/* a sampled rule samples a task without a dedupe key by its id */
	if (args.dedupe_key == NULL && hx_rules_sampled())
		args.id = hx_take_ids(1)[0];
	hx_classify_task(&args, &d);
	if (d.stream)
		hx_warn_other_database();

	memset(nulls, ' ', sizeof(nulls));
	hx_decision_values(&args, &d, d.reason, submitted_by, values, nulls);
	if (args.dedupe_key)
		values[13] = CStringGetTextDatum(args.dedupe_key);
	else
		nulls[13] = 'n';
	values[15] = Int64GetDatum(args.id);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	hx_check_department(submitted_by, args.department);

	if (reuse_within != NULL)
	{
		Datum		lv[4] = {values[0], values[13], IntervalPGetDatum(reuse_within),
		ObjectIdGetDatum(submitted_by)};

		if (hx_stmt_exec(&reuse_lookup, lv, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look for a task to reuse");
		if (SPI_processed == 1)
		{
			Datum		bv[8];
			char		bn[8] = {' ', ' ', ' ', args.department ? ' ' : 'n', ' ', ' ',
			args.sla ? ' ' : 'n', args.has_deadline ? ' ' : 'n'};

			id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
			bv[0] = Int64GetDatum(id);
			bv[1] = values[0];
			bv[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
			bv[3] = values[10];
			bv[4] = values[6];
			bv[5] = ObjectIdGetDatum(submitted_by);
			bv[6] = values[8];
			bv[7] = values[9];
			if (hx_stmt_exec(&reuse_book, bv, bn, false, 0) != SPI_OK_INSERT)
				elog(ERROR, "could not book the reuse of task %lld", (long long) id);
			hx_restore_user(&save);
			SPI_finish();
			return id;
		}
	}

	rc = hx_stmt_exec(args.dedupe_key ? &insert_dedupe :
					  args.id != 0 ? &insert_plain_id : &insert_plain,
					  values, nulls, false, 1);
	if (rc != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not insert into hx_task: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1)
		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
										 SPI_tuptable->tupdesc, 1, &isnull));
	else
	{
		Datum		dv[2] = {values[0], values[13]};

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
		/* an urgent duplicate does not wait for the night */
		(void) hx_upgrade_duplicate(id, d.stream, args.priority, args.has_deadline,
									args.deadline, d.reason);
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
 *		deadline, run_at.
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
	Datum	   *samples;
	bool	   *snulls;
	int64	   *ids = NULL;
	Datum		values[15];
	char		nulls[15];
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

	/* sampled rules sample each task by its id: each is classified */
	uniform = !hx_rules_read_payload() && !hx_rules_sampled();
	if (hx_rules_sampled())
		ids = hx_take_ids(n);
	samples = palloc(sizeof(Datum) * n);
	snulls = palloc(sizeof(bool) * n);
	routes = palloc(sizeof(Datum) * n);
	windows = palloc(sizeof(Datum) * n);
	wnulls = palloc(sizeof(bool) * n);
	rules = palloc(sizeof(Datum) * n);
	reasons = palloc(sizeof(Datum) * n);
	for (i = 0; i < n; i++)
	{
		one->args[1].value = payloads[i];
		one->args[1].isnull = pnulls[i];
		hx_check_task_args(one, &args, false);
		payloads[i] = JsonbPGetDatum(args.payload);
		if (ids != NULL)
			args.id = ids[i];

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
			snulls[i] = (d.sample_rule == NULL);
			samples[i] = snulls[i] ? (Datum) 0 : CStringGetTextDatum(d.sample_rule);
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

	/* the same for every payload (only the payload differs): checked once */
	hx_check_run_at(fcinfo, BATCH_ARG_RUN_AT, &args);

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
	if (ids != NULL)
	{
		Datum	   *idd = palloc(sizeof(Datum) * n);

		for (i = 0; i < n; i++)
			idd[i] = Int64GetDatum(ids[i]);
		values[13] = PointerGetDatum(construct_md_array(samples, snulls, 1, dims, lbs,
														TEXTOID, -1, false, TYPALIGN_INT));
		values[14] = PointerGetDatum(construct_array(idd, n, INT8OID, 8, FLOAT8PASSBYVAL,
													 TYPALIGN_DOUBLE));
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	hx_check_department(submitted_by, args.department);
	rc = hx_stmt_exec(uniform ? &insert_uniform : ids != NULL ? &insert_bulk_ids : &insert_bulk,
					  values, nulls, false, 0);
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
 * hx_check_run_at
 *		Reads run_at (argument argno of fcinfo) into *args: a task is not
 *		due before it.  It must be finite, within 100 years, and not after
 *		the task's deadline (or the end of its SLA): such a task could never
 *		be on time.  A moment past is now.
 */
static void
hx_check_run_at(FunctionCallInfo fcinfo, int argno, HxTaskArgs *args)
{
	TimestampTz run_at;
	TimestampTz due;

	args->has_run_at = false;
	if (PG_ARGISNULL(argno))
		return;
	run_at = PG_GETARG_TIMESTAMPTZ(argno);
	if (TIMESTAMP_NOT_FINITE(run_at) ||
		run_at > hx_add_years(args->at, HX_MAX_HORIZON_YEARS))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at must be a finite time within %d years of now", HX_MAX_HORIZON_YEARS),
				 errhint("Pass NULL to make the task due at once.")));
	due = args->has_deadline ? args->deadline : DT_NOEND;
	if (args->sla)
		due = Min(due, DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
															   TimestampTzGetDatum(args->at),
															   IntervalPGetDatum(args->sla))));
	if (run_at > due)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("run_at is after the task's deadline (or the end of its SLA)"),
				 errdetail("run_at is %s, the deadline %s.",
						   timestamptz_to_str(run_at), timestamptz_to_str(due)),
				 errhint("A task not due before its deadline could never be on time: move run_at earlier, or the deadline (or SLA) later.")));
	args->has_run_at = true;
	args->run_at = run_at;
}

/*
 * hx_submit_follow_ups
 *		Submits the tasks that follow the n tasks (ids) the ledger trigger
 *		just saw finish.  Without "dead": the next tier of each done task
 *		whose type has refine_with - a task of that type with the same
 *		payload, parent_id pointing at the done task, tier one higher,
 *		origin "refine" - which also takes over the watched table's row it
 *		came from, so that each tier writes its result back.  With "dead":
 *		a task of the dead_letter_type of each dead task whose type has
 *		one, origin "dead_letter", whose payload is the dead task (id,
 *		type, payload, attempts, errors).  Either keeps the priority,
 *		department and submitter of the task it follows and is classified
 *		by the rules like any task.  One that cannot be submitted (no rule
 *		matches it) is a warning: the finished task stays as it is.  In the
 *		transaction that finished them, with the rule cache loaded; own SPI
 *		connection, as the owner.
 */
void
hx_submit_follow_ups(int64 *ids, int n, bool dead)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Datum	   *idd = palloc(sizeof(Datum) * n);
	Datum		arg;
	SPITupleTable *found;
	uint64		nfound;
	int64	   *new_ids;
	HxUserSave	save;
	volatile uint64 k;
	int			i;
	volatile bool all_ok = false;

	for (i = 0; i < n; i++)
		idd[i] = Int64GetDatum(ids[i]);
	arg = PointerGetDatum(construct_array(idd, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	if (hx_stmt_exec(dead ? &dead_letter_read : &refine_read, &arg, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the tasks to follow up");
	found = SPI_tuptable;
	nfound = SPI_processed;
	new_ids = nfound > 0 ? hx_take_ids((int) nfound) : NULL;

	/*
	 * All of them in one subtransaction: a chunk of 5,000 done tasks must
	 * not open 5,000 subtransactions (past 64 a backend's subtransactions
	 * overflow its PGPROC cache, and every snapshot in the server gets
	 * slower).  Only when one fails are they submitted one by one, each
	 * in its own, so that the failing one is a warning.
	 */
	if (nfound > 0)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			for (k = 0; k < nfound; k++)
				hx_follow_up_one(found, k, new_ids[k], dead);
			ReleaseCurrentSubTransaction();
			all_ok = true;
		}
		PG_CATCH();
		{
			MemoryContextSwitchTo(oldcontext);
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}

	for (k = 0; !all_ok && k < nfound; k++)
	{
		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			hx_follow_up_one(found, k, new_ids[k], dead);
			ReleaseCurrentSubTransaction();
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			bool		isnull;
			int64		prior = DatumGetInt64(SPI_getbinval(found->vals[k], found->tupdesc, 1, &isnull));

			MemoryContextSwitchTo(oldcontext);
			edata = CopyErrorData();
			FlushErrorState();
			RollbackAndReleaseCurrentSubTransaction();
			ereport(WARNING,
					(errmsg("could not submit the %s of task %lld: %s",
							dead ? "dead letter" : "next tier", (long long) prior, edata->message),
					 errdetail(dead ? "Task %lld stays dead, in hx_dead." :
							   "Task %lld is done all the same; its result stays the best of its chain.",
							   (long long) prior),
					 errhint("Check hx_classify('%s', origin => '%s'): a rule must match it.",
							 TextDatumGetCString(SPI_getbinval(found->vals[k], found->tupdesc, 2, &isnull)),
							 dead ? "dead_letter" : "refine")));
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	hx_restore_user(&save);
	SPI_finish();
}

/*
 * hx_follow_up_one
 *		Classifies and inserts the task that follows row k of "found" (a row
 *		of refine_read or dead_letter_read), with id new_id; for a next tier,
 *		the watched row it came from becomes its source too.  Raises on
 *		failure.  In SPI, as the owner.
 */
static void
hx_follow_up_one(SPITupleTable *found, uint64 k, int64 new_id, bool dead)
{
	HeapTuple	tup = found->vals[k];
	TupleDesc	desc = found->tupdesc;
	bool		isnull;
	int64		prior = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	int32		tier = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull)) + 1;
	HxTaskArgs	args;
	HxDecision	d;
	Datum		values[18];
	char		nulls[18];
	Datum		src[2];

	memset(&args, 0, sizeof(args));
	args.task_type = TextDatumGetCString(SPI_getbinval(tup, desc, 2, &isnull));
	args.payload = DatumGetJsonbP(SPI_getbinval(tup, desc, 3, &isnull));
	args.origin = dead ? "dead_letter" : "refine";
	args.priority = DatumGetInt32(SPI_getbinval(tup, desc, 4, &isnull));
	values[10] = SPI_getbinval(tup, desc, 5, &isnull);
	args.department = isnull ? NULL : TextDatumGetCString(values[10]);
	args.at = GetCurrentTimestamp();
	args.id = new_id;
	hx_classify_task(&args, &d);

	memset(nulls, ' ', sizeof(nulls));
	hx_decision_values(&args, &d,
					   dead ? psprintf("dead letter of task %lld: %s", (long long) prior, d.reason)
					   : psprintf("tier %d of task %lld: %s", tier, (long long) prior, d.reason),
					   DatumGetObjectId(SPI_getbinval(tup, desc, 6, &isnull)),
					   values, nulls);
	nulls[13] = 'n';
	values[15] = Int64GetDatum(new_id);
	values[16] = Int64GetDatum(prior);
	nulls[16] = dead ? 'n' : ' ';
	values[17] = Int32GetDatum(dead ? 1 : tier);
	if (hx_stmt_exec(&insert_follow_up, values, nulls, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not insert the task that follows task %lld", (long long) prior);
	src[0] = values[15];
	src[1] = values[16];
	if (!dead && hx_stmt_exec(&refine_source, src, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not record the source of the next tier of task %lld", (long long) prior);
}

/*
 * hx_take_ids
 *		The next n ids of hx_task's sequence, for tasks that sampled rules
 *		sample by their id before they are inserted.  Own SPI connection,
 *		as the owner; the rule cache loaded.
 */
static int64 *
hx_take_ids(int n)
{
	Oid			seq = get_relname_relid("hx_task_id_seq", hx_cached_schema());
	int64	   *ids = palloc(sizeof(int64) * n);
	Datum		args[2] = {ObjectIdGetDatum(seq), Int32GetDatum(n)};
	HxUserSave	save;
	uint64		k;

	if (!OidIsValid(seq))
		elog(ERROR, "hybridexec: sequence hx_task_id_seq not found");
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	if (hx_stmt_exec(&take_ids, args, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != (uint64) n)
		elog(ERROR, "could not take %d task ids", n);
	for (k = 0; k < SPI_processed; k++)
	{
		bool		isnull;

		ids[k] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[k],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	hx_restore_user(&save);
	SPI_finish();
	return ids;
}

/*
 * hx_decision_values
 *		Fills the parameters of a single insert that say what the task is
 *		and where it goes - $1..$6 (type, payload, route, window, rule,
 *		reason), $7..$13 (hx_common_values) and $15 (the sampled rule that
 *		saw it) - from its arguments and its decision, with "reason".
 */
static void
hx_decision_values(const HxTaskArgs *args, const HxDecision *d, const char *reason,
				   Oid submitted_by, Datum *values, char *nulls)
{
	values[0] = CStringGetTextDatum(args->task_type);
	values[1] = JsonbPGetDatum(args->payload);
	values[2] = CStringGetTextDatum(d->stream ? "stream" : "batch");
	if (d->window_name)
		values[3] = CStringGetTextDatum(d->window_name);
	else
		nulls[3] = 'n';
	values[4] = CStringGetTextDatum(d->rule_name);
	values[5] = CStringGetTextDatum(reason);
	hx_common_values(args, submitted_by, values, nulls);
	if (d->sample_rule)
		values[14] = CStringGetTextDatum(d->sample_rule);
	else
		nulls[14] = 'n';
}

/*
 * hx_common_values
 *		Fills parameters $7..$13 (origin, priority, sla, deadline,
 *		department, submitted_by, run_after), which the single and the bulk
 *		insert share.
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
	if (args->has_run_at)
		values[12] = TimestampTzGetDatum(args->run_at);
	else
		nulls[12] = 'n';
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
 * hx_warn_other_database
 *		When hybridexec.database_name pins the workers to one database,
 *		stream tasks only run there; warn once per session when they are
 *		queued elsewhere.
 */
static void
hx_warn_other_database(void)
{
	static bool checked = false;
	char	   *dbname;

	if (checked || hx_database_name == NULL || hx_database_name[0] == '\0')
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
				 errhint("Set hybridexec.database_name = '%s' (or empty, for every database) and restart the server to run in-database handlers here.",
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
