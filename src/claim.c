/*-------------------------------------------------------------------------
 *
 * claim.c
 *	  The stream claim: one UPDATE that takes up to N due stream tasks of
 *	  types with an in-database handler (FOR UPDATE SKIP LOCKED, so
 *	  concurrent claimers never get the same task), marks them running for a
 *	  worker and counts their attempt.
 *
 *	  The stream workers run it directly with a kept plan; hx_stream_claim()
 *	  exposes the very same plan to SQL, for the isolation tests and tools.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

#include "hybridexec.h"

static SPIPlanPtr claim_plan = NULL;
static Oid	claim_schema = InvalidOid;

PG_FUNCTION_INFO_V1(hx_stream_claim);

/*
 * hx_claim_run
 *		Runs the claim for worker_pid, taking at most max tasks; the claimed
 *		rows (id, task_type, payload, attempts, max_attempts, handler,
 *		run_as, timeout_ms, batch_handler, micro_batch_size) are left in SPI_tuptable.
 *		Tasks of a micro-batched type are taken only once their batch is
 *		ready (hx_micro_batch_ready).  The tasks are picked in claim
 *		order from hx_task_stream_claim_idx, then updated by primary key,
 *		with a plan that cannot turn into a table scan (hx_execute_plan).
 *		Needs SPI connected and the rule cache loaded for the extension's
 *		schema.
 */
uint64
hx_claim_run(Oid schema, int worker_pid, int max)
{
	Datum		args[2] = {Int32GetDatum(worker_pid), Int32GetDatum(max)};
	int			rc;

	if (claim_plan == NULL || claim_schema != schema)
	{
		Oid			types[2] = {INT4OID, INT4OID};
		SPIPlanPtr	plan;

		if (claim_plan != NULL)
			SPI_freeplan(claim_plan);
		claim_plan = NULL;
		plan = hx_prepare(psprintf(
								   "WITH c AS MATERIALIZED (SELECT q.id FROM %1$s q "
								   "WHERE q.status IN ('queued', 'failed') AND q.route = 'stream' "
								   "AND q.run_after <= clock_timestamp() "
								   "AND EXISTS (SELECT 1 FROM %2$s y1 "
								   "WHERE y1.task_type = q.task_type "
								   "AND (y1.handler IS NOT NULL OR y1.batch_handler IS NOT NULL) "
								   "AND (y1.micro_batch_size IS NULL "
								   "OR %3$s(y1.task_type, y1.micro_batch_size, y1.micro_batch_wait))) "
								   "ORDER BY q.priority DESC, q.id LIMIT $2 "
								   "FOR UPDATE OF q SKIP LOCKED) "
								   "UPDATE %1$s t "
								   "SET status = 'running', attempts = t.attempts + 1, "
								   "started_at = clock_timestamp(), worker_pid = $1 "
								   "FROM %2$s y "
								   "WHERE t.id = ANY (ARRAY(SELECT c.id FROM c)) "
								   "AND y.task_type = t.task_type "
								   "RETURNING t.id, t.task_type, t.payload, t.attempts, "
								   "y.max_attempts, y.handler, y.run_as, "
								   "extract(epoch FROM y.timeout)::double precision * 1000, "
								   "y.batch_handler, coalesce(y.micro_batch_size, 0)",
								   hx_qualified("hx_task"), hx_qualified("hx_type"),
								   hx_qualified("hx_micro_batch_ready")),
						   2, types);
		if (plan == NULL)
			elog(ERROR, "could not prepare the stream claim: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		claim_plan = plan;
		claim_schema = schema;
	}

	rc = hx_execute_plan(claim_plan, args, NULL, false, 0);
	if (rc != SPI_OK_UPDATE_RETURNING)
		elog(ERROR, "stream claim failed: %s", SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * hx_stream_claim
 *		SQL: the workers' claim, for worker_pid, at most max tasks; returns
 *		the claimed tasks.  Meant for tests and tools: the tasks are marked
 *		running for worker_pid, and only a live stream worker (or the sweep)
 *		ever moves them on.
 */
Datum
hx_stream_claim(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			schema = hx_schema_for_function(fcinfo->flinfo->fn_oid);
	uint64		n;
	uint64		i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("worker_pid and max must not be NULL")));

	InitMaterializedSRF(fcinfo, 0);
	hx_rules_ensure(schema);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	n = hx_claim_run(schema, PG_GETARG_INT32(0), PG_GETARG_INT32(1));
	for (i = 0; i < n; i++)
	{
		Datum		values[8];
		bool		nulls[8];
		int			k;

		for (k = 0; k < 8; k++)
			values[k] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
									  k + 1, &nulls[k]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}
