/*-------------------------------------------------------------------------
 *
 * cost.c
 *	  Log-scale latency histograms for the rolling statistics of ledger.sql
 *	  (hx_stat_minute): a histogram is a bigint[] of HX_HIST_BUCKETS
 *	  counters, bucket 0 for durations under one millisecond and bucket k
 *	  (1 .. HX_HIST_BUCKETS - 1) for [2^(k-1), 2^k) milliseconds, the last
 *	  one open-ended.  Histograms of any number of minutes add up
 *	  element-wise, and percentiles are read from the sum, so hx_stats
 *	  never looks at individual tasks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "hybridexec.h"

PG_FUNCTION_INFO_V1(hx_hist_bucket);
PG_FUNCTION_INFO_V1(hx_hist_accum);
PG_FUNCTION_INFO_V1(hx_hist_merge);
PG_FUNCTION_INFO_V1(hx_hist_percentile);

/*
 * hx_hist_bucket_of
 *		Bucket index of a duration in milliseconds.
 */
int
hx_hist_bucket_of(double ms)
{
	int			b;

	if (isnan(ms) || ms < 1.0)
		return 0;
	b = (int) floor(log2(ms)) + 1;
	return Min(b, HX_HIST_BUCKETS - 1);
}

/*
 * hx_hist_counts
 *		The counters of a histogram array into counts[] (zeros for NULL);
 *		rejects arrays of another shape.
 */
static void
hx_hist_counts(ArrayType *arr, int64 *counts)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	memset(counts, 0, sizeof(int64) * HX_HIST_BUCKETS);
	if (arr == NULL)
		return;
	if (ARR_NDIM(arr) > 1 || ARR_ELEMTYPE(arr) != INT8OID)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a histogram must be a one-dimensional bigint array"),
				 errhint("Pass a column of hx_stat_minute or the result of hx_hist().")));
	deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &nulls, &n);
	if (n > HX_HIST_BUCKETS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a histogram has at most %d buckets, not %d", HX_HIST_BUCKETS, n),
				 errhint("Pass a column of hx_stat_minute or the result of hx_hist().")));
	for (i = 0; i < n; i++)
		if (!nulls[i])
			counts[i] = DatumGetInt64(elems[i]);
}

/*
 * hx_hist_array
 *		A bigint[] of the counters, in the current memory context.
 */
ArrayType *
hx_hist_array(const int64 *counts)
{
	Datum		elems[HX_HIST_BUCKETS];
	int			i;

	for (i = 0; i < HX_HIST_BUCKETS; i++)
		elems[i] = Int64GetDatum(counts[i]);
	return construct_array(elems, HX_HIST_BUCKETS, INT8OID, 8,
						   FLOAT8PASSBYVAL, TYPALIGN_DOUBLE);
}

/*
 * hx_hist_bucket
 *		SQL: bucket index (0-based) of a duration in milliseconds.
 */
Datum
hx_hist_bucket(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(hx_hist_bucket_of(PG_GETARG_FLOAT8(0)));
}

/*
 * hx_hist_accum
 *		Transition function of the aggregate hx_hist(ms): counts one
 *		duration.  In an aggregate the state array is ours and is changed
 *		in place; called directly it returns a new array.
 */
Datum
hx_hist_accum(PG_FUNCTION_ARGS)
{
	MemoryContext aggcxt;
	ArrayType  *state;
	int64	   *data;

	if (AggCheckCallContext(fcinfo, &aggcxt))
	{
		if (PG_ARGISNULL(0))
		{
			MemoryContext old = MemoryContextSwitchTo(aggcxt);
			int64		zero[HX_HIST_BUCKETS];

			memset(zero, 0, sizeof(zero));
			state = hx_hist_array(zero);
			MemoryContextSwitchTo(old);
		}
		else
			state = PG_GETARG_ARRAYTYPE_P(0);
		if (ARR_NDIM(state) != 1 || ARR_DIMS(state)[0] != HX_HIST_BUCKETS ||
			ARR_HASNULL(state) || ARR_ELEMTYPE(state) != INT8OID)
			elog(ERROR, "hx_hist: unexpected state array");
		if (!PG_ARGISNULL(1))
		{
			data = (int64 *) ARR_DATA_PTR(state);
			data[hx_hist_bucket_of(PG_GETARG_FLOAT8(1))]++;
		}
		PG_RETURN_ARRAYTYPE_P(state);
	}
	else
	{
		int64		counts[HX_HIST_BUCKETS];

		hx_hist_counts(PG_ARGISNULL(0) ? NULL : PG_GETARG_ARRAYTYPE_P(0), counts);
		if (!PG_ARGISNULL(1))
			counts[hx_hist_bucket_of(PG_GETARG_FLOAT8(1))]++;
		PG_RETURN_ARRAYTYPE_P(hx_hist_array(counts));
	}
}

/*
 * hx_hist_merge
 *		SQL: element-wise sum of two histograms (NULL counts as empty); the
 *		transition function of hx_hist_sum() too.
 */
Datum
hx_hist_merge(PG_FUNCTION_ARGS)
{
	int64		a[HX_HIST_BUCKETS];
	int64		b[HX_HIST_BUCKETS];
	int			i;

	if (PG_ARGISNULL(0) && PG_ARGISNULL(1))
		PG_RETURN_NULL();
	hx_hist_counts(PG_ARGISNULL(0) ? NULL : PG_GETARG_ARRAYTYPE_P(0), a);
	hx_hist_counts(PG_ARGISNULL(1) ? NULL : PG_GETARG_ARRAYTYPE_P(1), b);
	for (i = 0; i < HX_HIST_BUCKETS; i++)
		a[i] += b[i];
	PG_RETURN_ARRAYTYPE_P(hx_hist_array(a));
}

/*
 * hx_hist_percentile
 *		SQL: the q-quantile (0..1) of a histogram in milliseconds,
 *		interpolated linearly inside its bucket; NULL when it is empty.
 *		The open last bucket answers its lower bound.
 */
Datum
hx_hist_percentile(PG_FUNCTION_ARGS)
{
	int64		counts[HX_HIST_BUCKETS];
	double		q = PG_GETARG_FLOAT8(1);
	double		total = 0;
	double		rank;
	double		seen = 0;
	int			i;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (isnan(q) || q < 0.0 || q > 1.0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("quantile must be between 0 and 1, not %g", q),
				 errhint("Use 0.5 for the median, 0.95 for p95.")));
	hx_hist_counts(PG_GETARG_ARRAYTYPE_P(0), counts);
	for (i = 0; i < HX_HIST_BUCKETS; i++)
		total += counts[i];
	if (total <= 0)
		PG_RETURN_NULL();

	rank = q * total;
	for (i = 0; i < HX_HIST_BUCKETS; i++)
	{
		double		lo = (i == 0) ? 0.0 : ldexp(1.0, i - 1);
		double		hi = ldexp(1.0, i);

		if (counts[i] == 0)
			continue;
		if (seen + counts[i] >= rank)
		{
			if (i == HX_HIST_BUCKETS - 1)
				PG_RETURN_FLOAT8(lo);
			PG_RETURN_FLOAT8(lo + (hi - lo) * Max(rank - seen, 0.0) / counts[i]);
		}
		seen += counts[i];
	}
	PG_RETURN_NULL();			/* not reached */
}
