/*-------------------------------------------------------------------------
 *
 * cron.c
 *	  Cron schedules as pg_cron reads them: parsing (with an error that
 *	  names the bad field) and the next/previous moment a schedule fires,
 *	  in a given time zone.  Used to validate hx_window.schedule and to plan
 *	  adaptive windows; pg_cron itself fires the jobs.
 *
 *	  Syntax: five fields "minute hour day-of-month month day-of-week",
 *	  each a comma list of "*", "N", "N-M", optionally with "/step";
 *	  months and weekdays may be given by their English abbreviations;
 *	  weekday 7 is Sunday like 0.  When both day fields are restricted
 *	  (neither starts with "*"), a day matches if either does; otherwise
 *	  both must (as in Vixie cron and pg_cron).  A step needs "*" or a
 *	  range before it ("5/15" is an error, as in pg_cron).  Macros:
 *	  @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/timestamp.h"

#include "hybridexec.h"

typedef struct HxCron
{
	bool		minute[60];
	bool		hour[24];
	bool		dom[32];		/* 1..31 */
	bool		month[13];		/* 1..12 */
	bool		dow[8];			/* 0..6, Sunday = 0 (7 folded onto 0) */
	bool		dom_any;
	bool		dow_any;
} HxCron;

static const char *const month_names[] = {"jan", "feb", "mar", "apr", "may", "jun",
"jul", "aug", "sep", "oct", "nov", "dec", NULL};
static const char *const day_names[] = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL};

PG_FUNCTION_INFO_V1(hx_cron_next);
PG_FUNCTION_INFO_V1(hx_cron_prev);

/*
 * hx_cron_fail
 *		Reports a bad schedule, naming the field.
 */
static void
hx_cron_fail(const char *schedule, const char *field, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid cron schedule \"%s\"", schedule),
			 field ? errdetail("Field %s: %s.", field, why) : errdetail("%s.", why),
			 errhint("Use five fields: minute hour day-of-month month day-of-week, e.g. '0 2 * * *' (02:00 every day), or @hourly, @daily, @weekly, @monthly, @yearly.")));
}

/*
 * hx_cron_number
 *		Reads a number or (when names is given) a name at *p; advances *p.
 */
static bool
hx_cron_number(const char **p, const char *const *names, int name_base, int *out)
{
	const char *s = *p;

	if (isdigit((unsigned char) *s))
	{
		int			v = 0;

		while (isdigit((unsigned char) *s) && v < 1000)
			v = v * 10 + (*s++ - '0');
		*p = s;
		*out = v;
		return true;
	}
	if (names != NULL && isalpha((unsigned char) s[0]) &&
		isalpha((unsigned char) s[1]) && isalpha((unsigned char) s[2]))
	{
		int			i;

		for (i = 0; names[i] != NULL; i++)
			if (pg_strncasecmp(s, names[i], 3) == 0)
			{
				*p = s + 3;
				*out = i + name_base;
				return true;
			}
	}
	return false;
}

/*
 * hx_cron_field
 *		Parses one field into set[lo..hi]; returns whether it was "*".
 */
static bool
hx_cron_field(const char *schedule, const char *name, const char *text,
			  bool *set, int lo, int hi, const char *const *names, int name_base)
{
	const char *p = text;

	/*
	 * Like Vixie cron and pg_cron, a day field that starts with "*" (even
	 * "*\/10") counts as unrestricted when the two day fields are combined.
	 */
	bool		any = (text[0] == '*');

	for (;;)
	{
		int			from,
					to,
					step = 1,
					v;
		bool		range = true;

		if (*p == '*')
		{
			from = lo;
			to = hi;
			p++;
		}
		else
		{
			if (!hx_cron_number(&p, names, name_base, &from))
				hx_cron_fail(schedule, name, psprintf("\"%s\" is not a number, a range or *", text));
			to = from;
			range = (*p == '-');
			if (range)
			{
				p++;
				if (!hx_cron_number(&p, names, name_base, &to))
					hx_cron_fail(schedule, name, psprintf("\"%s\" has a range without an end", text));
			}
		}
		if (*p == '/')
		{
			/* pg_cron takes a step only after "*" or a range, not "5/15" */
			if (!range)
				hx_cron_fail(schedule, name,
							 psprintf("\"%s\" has a step after a single number; write a range (\"%d-%d/...\") or \"*/...\"",
									  text, from, hi));
			p++;
			if (!hx_cron_number(&p, NULL, 0, &step) || step < 1)
				hx_cron_fail(schedule, name, psprintf("\"%s\" has a step that is not a positive number", text));
		}
		if (from < lo || to > hi || from > to)
			hx_cron_fail(schedule, name,
						 psprintf("\"%s\" is outside %d-%d", text, lo, hi));
		for (v = from; v <= to; v += step)
			set[v] = true;
		if (*p == '\0')
			break;
		if (*p != ',')
			hx_cron_fail(schedule, name, psprintf("unexpected \"%c\" in \"%s\"", *p, text));
		p++;
	}
	return any;
}

/*
 * hx_cron_parse
 *		Parses a schedule or raises a clear error.
 */
static void
hx_cron_parse(const char *schedule, HxCron *cron)
{
	static const char *const field_names[5] = {"1 (minute)", "2 (hour)",
	"3 (day of month)", "4 (month)", "5 (day of week)"};
	const char *text = schedule;
	char	   *copy;
	char	   *fields[5];
	char	   *tok;
	char	   *save;
	int			n = 0;

	while (isspace((unsigned char) *text))
		text++;
	if (text[0] == '@')
	{
		if (pg_strcasecmp(text, "@yearly") == 0 || pg_strcasecmp(text, "@annually") == 0)
			text = "0 0 1 1 *";
		else if (pg_strcasecmp(text, "@monthly") == 0)
			text = "0 0 1 * *";
		else if (pg_strcasecmp(text, "@weekly") == 0)
			text = "0 0 * * 0";
		else if (pg_strcasecmp(text, "@daily") == 0 || pg_strcasecmp(text, "@midnight") == 0)
			text = "0 0 * * *";
		else if (pg_strcasecmp(text, "@hourly") == 0)
			text = "0 * * * *";
		else
			hx_cron_fail(schedule, NULL, "Unknown macro");
	}

	copy = pstrdup(text);
	for (tok = strtok_r(copy, " \t\n", &save); tok != NULL;
		 tok = strtok_r(NULL, " \t\n", &save))
	{
		if (n == 5)
			hx_cron_fail(schedule, NULL, "It has more than five fields");
		fields[n++] = tok;
	}
	if (n < 5)
		hx_cron_fail(schedule, NULL, psprintf("It has %d field(s), not five", n));

	memset(cron, 0, sizeof(*cron));
	hx_cron_field(schedule, field_names[0], fields[0], cron->minute, 0, 59, NULL, 0);
	hx_cron_field(schedule, field_names[1], fields[1], cron->hour, 0, 23, NULL, 0);
	cron->dom_any = hx_cron_field(schedule, field_names[2], fields[2], cron->dom, 1, 31, NULL, 0);
	hx_cron_field(schedule, field_names[3], fields[3], cron->month, 1, 12, month_names, 1);
	cron->dow_any = hx_cron_field(schedule, field_names[4], fields[4], cron->dow, 0, 7, day_names, 0);
	if (cron->dow[7])
		cron->dow[0] = true;
}

/*
 * hx_cron_day_matches
 *		Whether a calendar day matches the two day fields.
 */
static bool
hx_cron_day_matches(const HxCron *cron, const struct pg_tm *tm)
{
	bool		dom = cron->dom[tm->tm_mday];
	bool		dow = cron->dow[j2day(date2j(tm->tm_year, tm->tm_mon, tm->tm_mday))];

	if (cron->dom_any || cron->dow_any)
		return dom && dow;
	return dom || dow;
}

/*
 * hx_tm_step
 *		Moves a wall-clock time to the start (forward) or the last minute
 *		(backward) of the next/previous month, day, hour or minute.
 */
static void
hx_tm_step(struct pg_tm *tm, char unit, bool forward)
{
	int			d = forward ? 1 : -1;

	switch (unit)
	{
		case 'M':
			tm->tm_mon += d;
			if (tm->tm_mon > 12)
			{
				tm->tm_mon = 1;
				tm->tm_year++;
			}
			else if (tm->tm_mon < 1)
			{
				tm->tm_mon = 12;
				tm->tm_year--;
			}
			tm->tm_mday = forward ? 1 : day_tab[isleap(tm->tm_year)][tm->tm_mon - 1];
			tm->tm_hour = forward ? 0 : 23;
			tm->tm_min = forward ? 0 : 59;
			return;
		case 'd':
			tm->tm_mday += d;
			if (tm->tm_mday > day_tab[isleap(tm->tm_year)][tm->tm_mon - 1] || tm->tm_mday < 1)
			{
				hx_tm_step(tm, 'M', forward);
				return;
			}
			tm->tm_hour = forward ? 0 : 23;
			tm->tm_min = forward ? 0 : 59;
			return;
		case 'h':
			tm->tm_hour += d;
			if (tm->tm_hour > 23 || tm->tm_hour < 0)
			{
				hx_tm_step(tm, 'd', forward);
				return;
			}
			tm->tm_min = forward ? 0 : 59;
			return;
		default:
			tm->tm_min += d;
			if (tm->tm_min > 59 || tm->tm_min < 0)
				hx_tm_step(tm, 'h', forward);
			return;
	}
}

/*
 * The largest jump of a wall clock at a time-zone transition we allow for:
 * DST moves clocks by one hour (half an hour on Lord Howe Island), and
 * zone changes by law by a few; three hours covers them.
 */
#define HX_CRON_SLACK	(3 * USECS_PER_HOUR)

/*
 * hx_cron_match
 *		Walks the wall-clock time *tm forward or backward to the nearest
 *		minute the schedule matches (tm itself included) and returns it as
 *		an absolute time, ambiguous and skipped local times read as
 *		PostgreSQL reads them.  Returns false when none comes within ten
 *		years of start_year.
 */
static bool
hx_cron_match(const HxCron *cron, pg_tz *tz, struct pg_tm *tm, bool forward,
			  int start_year, TimestampTz *result)
{
	int			guard;

	for (guard = 0; guard < 1000000 && abs(tm->tm_year - start_year) <= 10; guard++)
	{
		if (!cron->month[tm->tm_mon])
			hx_tm_step(tm, 'M', forward);
		else if (!hx_cron_day_matches(cron, tm))
			hx_tm_step(tm, 'd', forward);
		else if (!cron->hour[tm->tm_hour])
			hx_tm_step(tm, 'h', forward);
		else if (!cron->minute[tm->tm_min])
			hx_tm_step(tm, 'm', forward);
		else
		{
			int			tzoff = DetermineTimeZoneOffset(tm, tz);
			Timestamp	local;

			if (tm2timestamp(tm, 0, &tzoff, &local) != 0)
				ereport(ERROR,
						(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
						 errmsg("timestamp out of range")));
			*result = (TimestampTz) local;
			return true;
		}
	}
	return false;
}

/*
 * hx_cron_next_time
 *		The first moment strictly after "from" (forward) or the last moment
 *		not after it (backward) at which the schedule fires, reading the
 *		schedule's fields as wall-clock time in time_zone.  Returns
 *		DT_NOBEGIN when it does not fire within ten years (such as Feb 31).
 *
 *		Around a DST change wall-clock order and absolute order differ (an
 *		hour repeats or is skipped), so the walk starts HX_CRON_SLACK of
 *		wall-clock time on the far side of "from" and keeps the earliest
 *		(latest) fire after (before) it among the matches within
 *		HX_CRON_SLACK of the first one: the answer is the same whichever
 *		instant of a repeated hour "from" is.
 */
TimestampTz
hx_cron_next_time(const char *schedule, TimestampTz from,
				  const char *time_zone, bool forward)
{
	HxCron		cron;
	pg_tz	   *tz = pg_tzset(time_zone);
	struct pg_tm tm;
	fsec_t		fsec;
	int			tzoff;
	int			start_year;
	TimestampTz best = DT_NOBEGIN;
	Timestamp	wall_limit = 0;
	TimestampTz candidate;

	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", time_zone),
				 errhint("Use a name from pg_timezone_names.")));
	hx_cron_parse(schedule, &cron);
	if (TIMESTAMP_NOT_FINITE(from))
		return DT_NOBEGIN;

	if (timestamp2tm(forward ? from - HX_CRON_SLACK : from + HX_CRON_SLACK,
					 &tzoff, &tm, &fsec, NULL, tz) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	tm.tm_sec = 0;
	start_year = tm.tm_year;

	while (hx_cron_match(&cron, tz, &tm, forward, start_year, &candidate))
	{
		Timestamp	wall;

		if (tm2timestamp(&tm, 0, NULL, &wall) != 0)
			break;
		if (best != DT_NOBEGIN && (forward ? wall > wall_limit : wall < wall_limit))
			break;
		if (forward ? candidate > from : candidate <= from)
		{
			if (best == DT_NOBEGIN)
				wall_limit = forward ? wall + HX_CRON_SLACK : wall - HX_CRON_SLACK;
			if (best == DT_NOBEGIN || (forward ? candidate < best : candidate > best))
				best = candidate;
		}
		hx_tm_step(&tm, 'm', forward);
	}
	return best;
}

/*
 * hx_cron_call
 *		Shared body of the two SQL functions.
 */
static Datum
hx_cron_call(FunctionCallInfo fcinfo, bool forward)
{
	char	   *schedule = text_to_cstring(PG_GETARG_TEXT_PP(0));
	TimestampTz from = PG_GETARG_TIMESTAMPTZ(1);
	char	   *zone = text_to_cstring(PG_GETARG_TEXT_PP(2));
	TimestampTz result = hx_cron_next_time(schedule, from, zone, forward);

	if (result == DT_NOBEGIN)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(result);
}

/*
 * hx_cron_next
 *		SQL: hx_cron_next(schedule, after, time_zone).
 */
Datum
hx_cron_next(PG_FUNCTION_ARGS)
{
	return hx_cron_call(fcinfo, true);
}

/*
 * hx_cron_prev
 *		SQL: hx_cron_prev(schedule, before, time_zone).
 */
Datum
hx_cron_prev(PG_FUNCTION_ARGS)
{
	return hx_cron_call(fcinfo, false);
}
