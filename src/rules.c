/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  Per-backend cache of the enabled classification rules (hx_rule) and
 *	  the registered task types (hx_type), so that classifying a task costs
 *	  no query.
 *
 *	  The cache is loaded with SPI on first use.  Triggers on hx_rule and
 *	  hx_type call hx_cache_invalidate(), which queues a relcache
 *	  invalidation of the changed table; it is delivered at commit to every
 *	  backend (and at once to the changing one), where our relcache callback
 *	  marks the cache stale.  DROP EXTENSION invalidates the same way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "hybridexec.h"

static MemoryContext cache_cxt = NULL;
static bool cache_valid = false;
static uint64 inval_count = 0;
static bool callback_registered = false;
static Oid	cache_schema = InvalidOid;
static char *cache_schema_quoted = NULL;
static Oid	cache_owner = InvalidOid;
static Oid	rule_relid = InvalidOid;
static Oid	type_relid = InvalidOid;
static HxRule *rules = NULL;
static int	nrules = 0;
static HTAB *types = NULL;
static bool any_limited = false;	/* a type has max_running or rate_limit */
static bool any_followed = false;	/* a type has refine_with or dead_letter_type */
static bool rules_read_payload = false;	/* some rule has payload_match */
static bool rules_sampled = false;	/* some rule has a sample */

static void hx_cache_callback(Datum arg, Oid relid);
static void hx_cache_load(Oid schema);
static void hx_load_types(void);
static void hx_load_rules(void);
static char *hx_text_or_null(HeapTuple tup, TupleDesc desc, int col);

PG_FUNCTION_INFO_V1(hx_cache_invalidate);

/*
 * hx_cache_invalidate
 *		Statement trigger on hx_rule and hx_type (and hx_price,
 *		hx_price_period: book.c's price rules): queue a relcache
 *		invalidation of the table so every backend reloads its cache once
 *		this transaction commits.
 */
Datum
hx_cache_invalidate(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("hx_cache_invalidate() must be called as a trigger")));

	CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
	return PointerGetDatum(NULL);
}

/*
 * hx_cache_callback
 *		Relcache callback: called for every invalidated relation, so it only
 *		compares two oids.
 */
static void
hx_cache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == rule_relid || relid == type_relid)
	{
		cache_valid = false;
		inval_count++;
	}
}

/*
 * hx_schema_for_function
 *		Schema the extension lives in, found through one of its functions:
 *		the function's own schema, unless it is one of the internal ones
 *		(schema _hybridexec), whose extension schema pg_extension tells.
 *		In a transaction.
 */
Oid
hx_schema_for_function(Oid fn_oid)
{
	Oid			ns = get_func_namespace(fn_oid);
	char	   *nsname = get_namespace_name(ns);
	Oid			owner;

	if (nsname != NULL && strcmp(nsname, HX_INTERNAL_SCHEMA) == 0 &&
		!hx_extension_lookup(&ns, &owner))
		elog(ERROR, "hybridexec function %u is not part of the extension", fn_oid);
	return ns;
}

/*
 * hx_rules_ensure
 *		Makes sure the cache holds the current rules and types of the
 *		extension in "schema".  Needs a transaction; may run SPI queries.
 */
void
hx_rules_ensure(Oid schema)
{
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(hx_cache_callback, (Datum) 0);
		callback_registered = true;
	}

	/*
	 * An invalidation may arrive while we load (lock acquisition processes
	 * them); the callback then counts it and we load again.  A failed load
	 * leaves the cache invalid.
	 */
	while (!cache_valid || schema != cache_schema)
	{
		uint64		before = inval_count;

		cache_valid = false;
		hx_cache_load(schema);
		cache_valid = (inval_count == before);
	}
}

/*
 * hx_cached_schema, hx_cached_schema_quoted, hx_cached_owner
 *		The extension's schema (its oid, and its name quoted for SQL text)
 *		and owner, as of the loaded cache.
 */
Oid
hx_cached_schema(void)
{
	Assert(OidIsValid(cache_schema));
	return cache_schema;
}

const char *
hx_cached_schema_quoted(void)
{
	Assert(cache_schema_quoted != NULL);
	return cache_schema_quoted;
}

Oid
hx_cached_owner(void)
{
	if (!OidIsValid(cache_owner))
		elog(ERROR, "the hybridexec rule cache is not loaded");
	return cache_owner;
}

/*
 * hx_type_lookup
 *		The cached registration of a task type, or NULL when unknown.
 */
HxTypeInfo *
hx_type_lookup(const char *task_type)
{
	char		key[sizeof(((HxTypeInfo *) 0)->task_type)];

	if (strlen(task_type) >= sizeof(key))
		return NULL;
	memset(key, 0, sizeof(key));
	strlcpy(key, task_type, sizeof(key));
	return (HxTypeInfo *) hash_search(types, key, HASH_FIND, NULL);
}

/*
 * hx_types_limited
 *		Whether any cached type has a limit (max_running, rate_limit): the
 *		claims look at limits only then.
 */
bool
hx_types_limited(void)
{
	return any_limited;
}

/*
 * hx_types_followed
 *		Whether any cached type has refine_with or dead_letter_type: the
 *		bookings of finished tasks look for tasks to follow them only then.
 */
bool
hx_types_followed(void)
{
	return any_followed;
}

/*
 * hx_rules_get
 *		The cached enabled rules in evaluation order.
 */
HxRule *
hx_rules_get(int *n)
{
	*n = nrules;
	return rules;
}

/*
 * hx_rules_read_payload
 *		True when some enabled rule looks at the payload; otherwise tasks
 *		that differ only in their payload get the same decision.
 */
bool
hx_rules_read_payload(void)
{
	return rules_read_payload;
}

/*
 * hx_rules_sampled
 *		True when some enabled rule takes a sample of its tasks: a task
 *		without a dedupe key then needs its id before it is classified.
 */
bool
hx_rules_sampled(void)
{
	return rules_sampled;
}

/*
 * hx_cache_load
 *		Throws the old cache away and reads rules and types again, as the
 *		extension's owner (the caller may have no right to read them).
 */
static void
hx_cache_load(Oid schema)
{
	MemoryContext old;
	char	   *nspname;
	Oid			ext_schema;
	HxUserSave	save;

	if (cache_cxt == NULL)
		cache_cxt = AllocSetContextCreate(CacheMemoryContext,
										  "hybridexec rule cache",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(cache_cxt);
	rules = NULL;
	nrules = 0;
	types = NULL;

	nspname = get_namespace_name(schema);
	if (nspname == NULL)
		elog(ERROR, "schema with OID %u does not exist", schema);

	old = MemoryContextSwitchTo(cache_cxt);
	cache_schema_quoted = pstrdup(quote_identifier(nspname));
	MemoryContextSwitchTo(old);

	rule_relid = get_relname_relid("hx_rule", schema);
	type_relid = get_relname_relid("hx_type", schema);
	cache_schema = schema;
	cache_owner = InvalidOid;
	if (!OidIsValid(rule_relid) || !OidIsValid(type_relid) ||
		!hx_extension_lookup(&ext_schema, &cache_owner) || ext_schema != schema)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("hybridexec tables are missing from schema \"%s\"", nspname),
				 errhint("Recreate the extension with DROP EXTENSION hybridexec; CREATE EXTENSION hybridexec;")));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	hx_load_types();
	hx_load_rules();
	hx_restore_user(&save);
	SPI_finish();
}

/*
 * hx_load_types
 *		Fills the type hash from hx_type.  Runs inside SPI.
 */
static void
hx_load_types(void)
{
	static HxStmt read_types = {
		"SELECT task_type, handler IS NOT NULL, max_running IS NOT NULL OR rate_limit IS NOT NULL, "
		"refine_with IS NOT NULL, dead_letter_type IS NOT NULL FROM @extschema@.hx_type"
	};
	HASHCTL		ctl;
	uint64		i;

	any_limited = false;
	any_followed = false;
	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(((HxTypeInfo *) 0)->task_type);
	ctl.entrysize = sizeof(HxTypeInfo);
	ctl.hcxt = cache_cxt;
	types = hash_create("hybridexec types", 64, &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);

	if (hx_stmt_exec(&read_types, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read hx_type");

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *name = hx_text_or_null(tup, desc, 1);
		char		key[sizeof(((HxTypeInfo *) 0)->task_type)];
		HxTypeInfo *info;
		bool		isnull;

		if (name == NULL || strlen(name) >= sizeof(key))
			continue;
		memset(key, 0, sizeof(key));
		strlcpy(key, name, sizeof(key));
		info = hash_search(types, key, HASH_ENTER, NULL);
		info->has_handler = DatumGetBool(SPI_getbinval(tup, desc, 2, &isnull));
		info->limited = DatumGetBool(SPI_getbinval(tup, desc, 3, &isnull));
		any_limited |= info->limited;
		info->refined = DatumGetBool(SPI_getbinval(tup, desc, 4, &isnull));
		info->dead_letter = DatumGetBool(SPI_getbinval(tup, desc, 5, &isnull));
		any_followed |= info->refined || info->dead_letter;
	}
}

/*
 * hx_load_rules
 *		Decodes the enabled rules of hx_rule into the cache, in evaluation
 *		order.  Runs inside SPI.
 */
static void
hx_load_rules(void)
{
	static HxStmt read_rules = {
		"SELECT name, position, task_type, origin, department, "
		"min_sla, max_sla, payload_match, local_from, local_until, "
		"days, time_zone, route, window_name, budget_exhausted, worth_streaming, sample::float8 "
		"FROM @extschema@.hx_rule WHERE enabled ORDER BY position, name"
	};
	uint64		i;

	if (hx_stmt_exec(&read_rules, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read hx_rule");

	rules = MemoryContextAllocZero(cache_cxt,
								   sizeof(HxRule) * Max(SPI_processed, 1));
	nrules = (int) SPI_processed;
	rules_read_payload = false;
	rules_sampled = false;

	for (i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HxRule	   *r = &rules[i];
		MemoryContext old;
		bool		isnull;
		Datum		d;
		char	   *route;

		old = MemoryContextSwitchTo(cache_cxt);
		r->name = hx_text_or_null(tup, desc, 1);
		r->position = DatumGetInt32(SPI_getbinval(tup, desc, 2, &isnull));
		r->task_type = hx_text_or_null(tup, desc, 3);
		r->origin = hx_text_or_null(tup, desc, 4);
		r->department = hx_text_or_null(tup, desc, 5);

		d = SPI_getbinval(tup, desc, 6, &isnull);
		if (!isnull)
		{
			r->min_sla = palloc(sizeof(Interval));
			memcpy(r->min_sla, DatumGetIntervalP(d), sizeof(Interval));
		}
		d = SPI_getbinval(tup, desc, 7, &isnull);
		if (!isnull)
		{
			r->max_sla = palloc(sizeof(Interval));
			memcpy(r->max_sla, DatumGetIntervalP(d), sizeof(Interval));
		}
		d = SPI_getbinval(tup, desc, 8, &isnull);
		if (!isnull)
		{
			r->payload_match = DatumGetJsonbPCopy(d);
			rules_read_payload = true;
		}

		d = SPI_getbinval(tup, desc, 9, &isnull);
		if (!isnull)
		{
			r->has_time = true;
			r->local_from = DatumGetTimeADT(d);
			r->local_until = DatumGetTimeADT(SPI_getbinval(tup, desc, 10, &isnull));
		}

		d = SPI_getbinval(tup, desc, 11, &isnull);
		if (!isnull)
		{
			ArrayType  *arr = DatumGetArrayTypeP(d);
			Datum	   *elems;
			bool	   *enulls;
			int			nelems;
			int			k;

			deconstruct_array(arr, INT4OID, 4, true, TYPALIGN_INT,
							  &elems, &enulls, &nelems);
			for (k = 0; k < nelems; k++)
				if (!enulls[k] && DatumGetInt32(elems[k]) >= 1 &&
					DatumGetInt32(elems[k]) <= 7)
					r->days_mask |= 1 << DatumGetInt32(elems[k]);
		}
		r->time_zone = hx_text_or_null(tup, desc, 12);
		route = hx_text_or_null(tup, desc, 13);
		r->stream = (route != NULL && strcmp(route, "stream") == 0);
		r->window_name = hx_text_or_null(tup, desc, 14);
		d = SPI_getbinval(tup, desc, 15, &isnull);
		r->budget_exhausted = isnull ? -1 : (int8) DatumGetBool(d);
		d = SPI_getbinval(tup, desc, 16, &isnull);
		r->worth_streaming = isnull ? -1 : (int8) DatumGetBool(d);
		if (r->worth_streaming >= 0)
			rules_read_payload = true;	/* a latency_value in the payload counts */
		d = SPI_getbinval(tup, desc, 17, &isnull);
		r->sample = isnull ? 0 : DatumGetFloat8(d);
		rules_sampled |= !isnull;
		MemoryContextSwitchTo(old);
	}
}

/*
 * hx_text_or_null
 *		A text column as a C string in the current context, or NULL.
 */
static char *
hx_text_or_null(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}
