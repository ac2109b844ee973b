/*-------------------------------------------------------------------------
 *
 * classify.c
 *	  The rule engine: checks a task's arguments, walks the cached rules in
 *	  order and returns the first match with the reason it matched.  Used by
 *	  hx_submit() for every task and exposed as hx_decide(), which
 *	  hx_classify() wraps with a cost estimate.
 *
 *	  Matching needs no query: rules and types come from rules.c's cache.
 *	  A sampled rule (hx_rule.sample, a percentage rollout) takes the tasks
 *	  whose hx_sample_point falls below its sample.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

/* argument positions shared by hx_submit, hx_decide and hx_classify */
#define ARG_TASK_TYPE	0
#define ARG_PAYLOAD		1
#define ARG_SLA			2
#define ARG_ORIGIN		3
#define ARG_PRIORITY	4
#define ARG_DEPARTMENT	5
#define ARG_DEDUPE_KEY	6
#define ARG_DEADLINE	7
#define ARG_AT			8

/* local time of the task in one time zone, computed once per zone */
typedef struct HxLocalTime
{
	const char *zone;
	bool		valid;
	int64		usecs;			/* since local midnight */
	int			isodow;			/* 1 = Monday ... 7 = Sunday */
} HxLocalTime;

static Interval *hx_effective_sla(const HxTaskArgs *args, bool *from_deadline);
static const char *hx_own_window(const HxRule *rules, int nrules, int after,
								 const HxTaskArgs *args, Interval *sla,
								 bool from_deadline, HxLocalTime *lt);
static bool hx_rule_matches(const HxRule *r, const HxTaskArgs *args,
							Interval *sla, bool from_deadline,
							HxLocalTime *lt, StringInfo why,
							const char *own_window);
static void hx_local_time(TimestampTz at, const char *zone, HxLocalTime *lt);
static bool hx_sample_takes(const HxRule *r, const HxTaskArgs *args, StringInfo why);

PG_FUNCTION_INFO_V1(hx_sample_point);
static int	hx_interval_cmp(Interval *a, Interval *b);
static char *hx_interval_text(Interval *i);
static char *hx_time_text(TimeADT t);
static bool hx_sql_condition(const HxTaskArgs *args, bool by_department,
							 const char *own_window);

PG_FUNCTION_INFO_V1(hx_decide);
PG_FUNCTION_INFO_V1(hx_check_key_length_sql);

/*
 * hx_check_task_args
 *		Reads the task arguments of hx_submit/hx_decide into *args and
 *		rejects bad ones with a clear error; with_at: the call has the
 *		classification moment "at" (hx_decide, hx_classify) after them,
 *		else it is now.  The rule cache must be loaded.
 */
void
hx_check_task_args(FunctionCallInfo fcinfo, HxTaskArgs *args, bool with_at)
{
	Jsonb	   *payload;
	Size		size;
	Interval	zero;
	Interval	horizon;

	memset(args, 0, sizeof(*args));

	if (PG_ARGISNULL(ARG_TASK_TYPE))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task type must not be NULL"),
				 errhint("Pass the name of a type registered with hx_register().")));
	args->task_type = text_to_cstring(PG_GETARG_TEXT_PP(ARG_TASK_TYPE));
	hx_check_key_length("task type", args->task_type);
	if (hx_type_lookup(args->task_type) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("unknown task type \"%s\"", args->task_type),
				 errhint("Register it first with hx_register('%s', handler => ...); registered types are listed in hx_type.",
						 args->task_type)));

	if (PG_ARGISNULL(ARG_PAYLOAD))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("payload of task type \"%s\" must not be NULL", args->task_type),
				 errhint("Pass '{}' for a task without input.")));
	payload = PG_GETARG_JSONB_P(ARG_PAYLOAD);
	size = VARSIZE(payload);
	if (size > (Size) hx_max_payload_kb * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("payload of task type \"%s\" is too large: %zu bytes",
						args->task_type, size),
				 errdetail("The limit is %d kB (hybridexec.max_payload_size).",
						   hx_max_payload_kb),
				 errhint("Store large inputs in a table and pass their key in the payload, or raise hybridexec.max_payload_size.")));
	args->payload = payload;

	memset(&zero, 0, sizeof(zero));
	memset(&horizon, 0, sizeof(horizon));
	horizon.month = HX_MAX_HORIZON_YEARS * MONTHS_PER_YEAR;
	if (!PG_ARGISNULL(ARG_SLA))
	{
		args->sla = PG_GETARG_INTERVAL_P(ARG_SLA);
		if (hx_interval_cmp(args->sla, &zero) < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sla must not be negative: %s", hx_interval_text(args->sla)),
					 errhint("The SLA is how soon the result is needed, e.g. '5 seconds'; pass NULL for no SLA.")));
		if (hx_interval_cmp(args->sla, &horizon) > 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sla must be at most %d years, not %s", HX_MAX_HORIZON_YEARS,
							hx_interval_text(args->sla)),
					 errhint("Pass NULL for a task with no SLA at all.")));
	}

	if (PG_ARGISNULL(ARG_ORIGIN))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("origin must not be NULL"),
				 errhint("Use 'user' when someone is waiting for the result, 'background' otherwise.")));
	args->origin = text_to_cstring(PG_GETARG_TEXT_PP(ARG_ORIGIN));
	hx_check_key_length("origin", args->origin);

	if (PG_ARGISNULL(ARG_PRIORITY))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("priority must not be NULL"),
				 errhint("The default priority is 0; higher runs first.")));
	args->priority = PG_GETARG_INT32(ARG_PRIORITY);
	if (args->priority < -HX_MAX_PRIORITY || args->priority > HX_MAX_PRIORITY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("priority must be between %d and %d, not %d",
						-HX_MAX_PRIORITY, HX_MAX_PRIORITY, args->priority),
				 errhint("Higher runs first; 0 is the default.")));

	if (!PG_ARGISNULL(ARG_DEPARTMENT))
	{
		args->department = text_to_cstring(PG_GETARG_TEXT_PP(ARG_DEPARTMENT));
		hx_check_key_length("department", args->department);
	}
	if (!PG_ARGISNULL(ARG_DEDUPE_KEY))
	{
		args->dedupe_key = text_to_cstring(PG_GETARG_TEXT_PP(ARG_DEDUPE_KEY));
		hx_check_key_length("dedupe_key", args->dedupe_key);
	}

	if (with_at)
	{
		if (PG_ARGISNULL(ARG_AT))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("at must not be NULL"),
					 errhint("Leave it out to classify as of now().")));
		args->at = PG_GETARG_TIMESTAMPTZ(ARG_AT);
		if (TIMESTAMP_NOT_FINITE(args->at))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("at must be a finite time"),
					 errhint("Leave it out to classify as of now().")));
	}
	else
		args->at = GetCurrentTransactionStartTimestamp();

	if (!PG_ARGISNULL(ARG_DEADLINE))
	{
		TimestampTz deadline = PG_GETARG_TIMESTAMPTZ(ARG_DEADLINE);
		TimestampTz earliest = hx_add_years(args->at, -HX_MAX_HORIZON_YEARS);
		TimestampTz latest = hx_add_years(args->at, HX_MAX_HORIZON_YEARS);

		if (TIMESTAMP_NOT_FINITE(deadline) || deadline < earliest || deadline > latest)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("deadline must be a finite time within %d years of now",
							HX_MAX_HORIZON_YEARS),
					 errhint("Pass NULL for a task with no deadline.")));
		args->has_deadline = true;
		args->deadline = deadline;
	}
}

/*
 * hx_check_key_length
 *		Text that becomes a key (it is indexed, or grouped by in the books)
 *		is at most HX_MAX_KEY_CHARS characters; a clear error past it.
 */
void
hx_check_key_length(const char *what, const char *value)
{
	int			len = pg_mbstrlen(value);

	if (len > HX_MAX_KEY_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("%s is too long: %d characters", what, len),
				 errdetail("The limit is %d characters.", HX_MAX_KEY_CHARS),
				 errhint("Use a shorter name or key; store long data in the payload.")));
}

/*
 * hx_check_key_length_sql
 *		SQL (_hybridexec.hx_check_key_length(what, value)): the same check,
 *		for the functions written in SQL that take such text.
 */
Datum
hx_check_key_length_sql(PG_FUNCTION_ARGS)
{
	hx_check_key_length(text_to_cstring(PG_GETARG_TEXT_PP(0)),
						text_to_cstring(PG_GETARG_TEXT_PP(1)));
	PG_RETURN_VOID();
}

/*
 * hx_add_years
 *		t plus (or minus) some years ("timestamp out of range" near the ends
 *		of the range: only a far-off "at" gets there).
 */
TimestampTz
hx_add_years(TimestampTz t, int years)
{
	Interval	span;

	memset(&span, 0, sizeof(span));
	span.month = years * MONTHS_PER_YEAR;
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t),
												   IntervalPGetDatum(&span)));
}

/*
 * hx_classify_task
 *		First enabled rule whose conditions all hold, with the reason; an
 *		error when none does.  The rule cache must be loaded.
 */
void
hx_classify_task(const HxTaskArgs *args, HxDecision *decision)
{
	int			n;
	int			i;
	HxRule	   *r = hx_rules_get(&n);
	bool		from_deadline;
	Interval   *sla = hx_effective_sla(args, &from_deadline);
	HxLocalTime lt;
	StringInfoData why;

	memset(&lt, 0, sizeof(lt));
	initStringInfo(&why);
	decision->sample_rule = NULL;

	for (i = 0; i < n; i++)
	{
		const char *own = NULL;

		/* streaming is weighed against the window the task would get */
		if (r[i].worth_streaming >= 0)
			own = hx_own_window(r, n, i, args, sla, from_deadline, &lt);
		resetStringInfo(&why);
		if (hx_rule_matches(&r[i], args, sla, from_deadline, &lt, &why, own))
		{
			/* a rollout: the first sampled rule that saw the task is kept */
			if (r[i].sample > 0)
			{
				if (decision->sample_rule == NULL)
					decision->sample_rule = r[i].name;
				if (!hx_sample_takes(&r[i], args, &why))
					continue;
			}
			decision->stream = r[i].stream;
			decision->window_name = r[i].stream ? NULL : r[i].window_name;
			decision->rule_name = r[i].name;
			decision->reason = psprintf("rule \"%s\" (position %d): %s",
										r[i].name, r[i].position,
										why.len > 0 ? why.data : "catch-all, no conditions");
			return;
		}
	}

	ereport(ERROR,
			(errcode(ERRCODE_CASE_NOT_FOUND),
			 errmsg("no rule in hx_rule matches task type \"%s\"", args->task_type),
			 errdetail("%d enabled rules were tried.", n),
			 errhint("Add a catch-all rule (all conditions NULL) with the highest position, or enable the one you have.")));
}

/*
 * hx_effective_sla
 *		The SLA the rules compare: the smaller of the sla argument and the
 *		time left until the deadline (never below zero); NULL = none.
 */
static Interval *
hx_effective_sla(const HxTaskArgs *args, bool *from_deadline)
{
	Interval   *left;
	Interval	zero;

	*from_deadline = false;
	if (!args->has_deadline)
		return args->sla;

	left = DatumGetIntervalP(DirectFunctionCall2(timestamp_mi,
												 TimestampTzGetDatum(args->deadline),
												 TimestampTzGetDatum(args->at)));
	memset(&zero, 0, sizeof(zero));
	if (hx_interval_cmp(left, &zero) < 0)
		*left = zero;
	if (args->sla != NULL && hx_interval_cmp(args->sla, left) <= 0)
		return args->sla;
	*from_deadline = true;
	return left;
}

/* appends one matched condition to the reason */
#define WHY(...) \
	do { \
		if (why->len > 0) \
			appendStringInfoString(why, ", "); \
		appendStringInfo(why, __VA_ARGS__); \
	} while (0)

/*
 * hx_own_window
 *		The window a task would get if rule "after" did not match it: that
 *		of the first later rule that matches on its own conditions and asks
 *		no cost function, when it routes to batch; NULL when that rule
 *		streams or none matches (streaming is then weighed against the
 *		soonest window).  Costs no query.
 */
static const char *
hx_own_window(const HxRule *rules, int nrules, int after, const HxTaskArgs *args,
			  Interval *sla, bool from_deadline, HxLocalTime *lt)
{
	StringInfoData scratch;
	int			j;

	initStringInfo(&scratch);
	for (j = after + 1; j < nrules; j++)
	{
		const HxRule *r = &rules[j];

		if (r->budget_exhausted >= 0 || r->worth_streaming >= 0)
			continue;
		resetStringInfo(&scratch);
		if (hx_rule_matches(r, args, sla, from_deadline, lt, &scratch, NULL) &&
			(r->sample <= 0 || hx_sample_takes(r, args, &scratch)))
			return r->stream ? NULL : r->window_name;
	}
	return NULL;
}

/*
 * hx_rule_matches
 *		True when every condition of the rule holds for the task; the held
 *		conditions are described in "why".
 */
static bool
hx_rule_matches(const HxRule *r, const HxTaskArgs *args, Interval *sla,
				bool from_deadline, HxLocalTime *lt, StringInfo why,
				const char *own_window)
{
	const char *sla_src = from_deadline ? " (from deadline)" : "";

	if (r->task_type != NULL)
	{
		if (strcmp(r->task_type, args->task_type) != 0)
			return false;
		WHY("task_type = '%s'", r->task_type);
	}
	if (r->origin != NULL)
	{
		if (strcmp(r->origin, args->origin) != 0)
			return false;
		WHY("origin = '%s'", r->origin);
	}
	if (r->department != NULL)
	{
		if (args->department == NULL || strcmp(r->department, args->department) != 0)
			return false;
		WHY("department = '%s'", r->department);
	}
	if (r->min_sla != NULL)
	{
		if (sla == NULL)
			WHY("no SLA >= min_sla %s", hx_interval_text(r->min_sla));
		else if (hx_interval_cmp(sla, r->min_sla) >= 0)
			WHY("sla %s%s >= min_sla %s", hx_interval_text(sla), sla_src,
				hx_interval_text(r->min_sla));
		else
			return false;
	}
	if (r->max_sla != NULL)
	{
		if (sla == NULL || hx_interval_cmp(sla, r->max_sla) >= 0)
			return false;
		WHY("sla %s%s < max_sla %s", hx_interval_text(sla), sla_src,
			hx_interval_text(r->max_sla));
	}
	if (r->payload_match != NULL)
	{
		if (!DatumGetBool(DirectFunctionCall2(jsonb_contains,
											  JsonbPGetDatum(args->payload),
											  JsonbPGetDatum(r->payload_match))))
			return false;
		WHY("payload contains %s",
			JsonbToCString(NULL, &r->payload_match->root, VARSIZE(r->payload_match)));
	}
	if (r->has_time || r->days_mask != 0)
	{
		const char *zone = r->time_zone ? r->time_zone : hx_time_zone;

		if (lt->zone == NULL || strcmp(lt->zone, zone) != 0)
			hx_local_time(args->at, zone, lt);
		if (!lt->valid)
			return false;
		if (r->has_time)
		{
			bool		in;

			if (r->local_from < r->local_until)
				in = lt->usecs >= r->local_from && lt->usecs < r->local_until;
			else
				in = lt->usecs >= r->local_from || lt->usecs < r->local_until;
			if (!in)
				return false;
			WHY("local time %s in [%s, %s) %s", hx_time_text(lt->usecs),
				hx_time_text(r->local_from), hx_time_text(r->local_until), zone);
		}
		if (r->days_mask != 0)
		{
			if ((r->days_mask & (1 << lt->isodow)) == 0)
				return false;
			WHY("local day of week %d in days (%s)", lt->isodow, zone);
		}
	}
	/* the conditions that cost a query come last */
	if (r->budget_exhausted >= 0)
	{
		bool		exhausted = args->department != NULL &&
			hx_sql_condition(args, true, NULL);

		if (exhausted != (bool) r->budget_exhausted)
			return false;
		WHY("budget of department '%s' %s", args->department ? args->department : "(none)",
			exhausted ? "exhausted" : "not exhausted");
	}
	if (r->worth_streaming >= 0)
	{
		bool		worth = hx_sql_condition(args, false, own_window);

		if (worth != (bool) r->worth_streaming)
			return false;
		WHY("latency saved%s %s the extra cost of streaming",
			own_window ? psprintf(" (window %s)", own_window) : "",
			worth ? "is worth" : "is not worth");
	}
	return true;
}

/*
 * hx_sample_point_of
 *		Where a key falls in a rule's rollout, in [0, 1): 53 bits of a
 *		64-bit hash of the key seeded with a hash of the rule's name, so
 *		that two sampled rules choose independently.
 */
static double
hx_sample_point_of(const char *rule_name, const char *key, int keylen)
{
	uint64		seed = hash_bytes_extended((const unsigned char *) rule_name,
										   (int) strlen(rule_name), 0);
	uint64		h = hash_bytes_extended((const unsigned char *) key, keylen, seed);

	return (double) (h >> 11) / (double) (UINT64CONST(1) << 53);
}

/*
 * hx_sample_point
 *		SQL: hx_sample_point(rule_name, key), the point hx_sample_takes
 *		compares with a rule's sample.
 */
Datum
hx_sample_point(PG_FUNCTION_ARGS)
{
	text	   *rule = PG_GETARG_TEXT_PP(0);
	text	   *key = PG_GETARG_TEXT_PP(1);

	PG_RETURN_FLOAT8(hx_sample_point_of(text_to_cstring(rule), VARDATA_ANY(key),
										VARSIZE_ANY_EXHDR(key)));
}

/*
 * hx_sample_takes
 *		Whether sampled rule r, whose other conditions hold, takes the
 *		task: its dedupe key, else its id, falls below the rule's sample;
 *		"why" says so.  A dry run (hx_classify) of a task without a key has
 *		no id yet: the rule is reported as the one that would take the
 *		task's share.
 */
static bool
hx_sample_takes(const HxRule *r, const HxTaskArgs *args, StringInfo why)
{
	char		idbuf[32];
	const char *key;
	const char *by;
	double		point;

	if (args->dedupe_key != NULL)
	{
		key = args->dedupe_key;
		by = "dedupe key";
	}
	else if (args->id != 0)
	{
		snprintf(idbuf, sizeof(idbuf), INT64_FORMAT, args->id);
		key = idbuf;
		by = "id";
	}
	else
	{
		WHY("sample %g (a task without a dedupe key is sampled by its id, which a dry run does not have)",
			r->sample);
		return true;
	}
	point = hx_sample_point_of(r->name, key, (int) strlen(key));
	if (point >= r->sample)
		return false;
	WHY("sampled by %s: %.4f < sample %g", by, point, r->sample);
	return true;
}

/*
 * hx_sql_condition
 *		Asks one of the cost functions about the task, as the extension's
 *		owner: hx_budget_exhausted(department, at) when by_department, else
 *		hx_worth_streaming(task_type, payload, at, own_window).  Runs its
 *		own SPI connection; needs a transaction and the loaded rule cache.
 */
static bool
hx_sql_condition(const HxTaskArgs *args, bool by_department, const char *own_window)
{
	static HxStmt budget = {
		"SELECT @extschema@.hx_budget_exhausted($1, $2)",
		2, {TEXTOID, TIMESTAMPTZOID}
	};
	static HxStmt worth = {
		"SELECT @extschema@.hx_worth_streaming($1, $2, $3, $4)",
		4, {TEXTOID, JSONBOID, TIMESTAMPTZOID, TEXTOID}
	};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', own_window ? ' ' : 'n'};
	HxUserSave	save;
	bool		isnull;
	bool		result;

	if (by_department)
	{
		values[0] = CStringGetTextDatum(args->department);
		values[1] = TimestampTzGetDatum(args->at);
	}
	else
	{
		values[0] = CStringGetTextDatum(args->task_type);
		values[1] = JsonbPGetDatum(args->payload);
		values[2] = TimestampTzGetDatum(args->at);
		values[3] = own_window ? CStringGetTextDatum(own_window) : (Datum) 0;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	hx_become_owner(&save);
	result = DatumGetBool(hx_stmt_value(by_department ? &budget : &worth,
										values, by_department ? NULL : nulls, &isnull));
	if (isnull)
		result = false;
	hx_restore_user(&save);
	SPI_finish();
	return result;
}

/*
 * hx_local_time
 *		Time of day and ISO day of week of "at" in the named zone.
 */
static void
hx_local_time(TimestampTz at, const char *zone, HxLocalTime *lt)
{
	pg_tz	   *tz = pg_tzset(zone);
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			dow;

	lt->zone = zone;
	lt->valid = false;
	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown time zone \"%s\" in hybridexec rules", zone),
				 errhint("Fix hx_rule.time_zone or hybridexec.time_zone; names are listed in pg_timezone_names.")));
	if (TIMESTAMP_NOT_FINITE(at) ||
		timestamp2tm(at, &tzoff, &tm, &fsec, NULL, tz) != 0)
		return;
	lt->usecs = ((((int64) tm.tm_hour * MINS_PER_HOUR) + tm.tm_min) * SECS_PER_MINUTE +
				 tm.tm_sec) * USECS_PER_SEC + fsec;
	dow = j2day(date2j(tm.tm_year, tm.tm_mon, tm.tm_mday));
	lt->isodow = (dow == 0) ? 7 : dow;
	lt->valid = true;
}

/*
 * hx_interval_cmp
 *		Interval comparison with PostgreSQL's own semantics.
 */
static int
hx_interval_cmp(Interval *a, Interval *b)
{
	return DatumGetInt32(DirectFunctionCall2(interval_cmp,
											 IntervalPGetDatum(a),
											 IntervalPGetDatum(b)));
}

/*
 * hx_interval_text
 *		An interval as PostgreSQL prints it.
 */
static char *
hx_interval_text(Interval *i)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(i)));
}

/*
 * hx_time_text
 *		A time of day as HH:MM:SS.
 */
static char *
hx_time_text(TimeADT t)
{
	return DatumGetCString(DirectFunctionCall1(time_out, TimeADTGetDatum(t)));
}

/*
 * hx_decide
 *		SQL: the decision for a task at a given moment, without queuing it.
 *		Works without the preload: it only reads rules.
 */
Datum
hx_decide(PG_FUNCTION_ARGS)
{
	HxTaskArgs	args;
	HxDecision	d;
	TupleDesc	desc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	hx_rules_ensure(hx_schema_for_function(fcinfo->flinfo->fn_oid));
	hx_check_task_args(fcinfo, &args, true);
	hx_classify_task(&args, &d);

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "hx_decide must return a record");
	desc = BlessTupleDesc(desc);

	values[0] = CStringGetTextDatum(d.stream ? "stream" : "batch");
	if (d.window_name)
		values[1] = CStringGetTextDatum(d.window_name);
	else
		nulls[1] = true;
	values[2] = CStringGetTextDatum(d.rule_name);
	values[3] = CStringGetTextDatum(d.reason);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}
