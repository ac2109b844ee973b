/*-------------------------------------------------------------------------
 *
 * alert.c
 *	  NOTIFY hx_alert: the one place alerts are sent from.  A payload is a
 *	  JSON object; one that would not fit PostgreSQL's 8000-byte NOTIFY
 *	  limit is shortened (long strings clipped) rather than making the
 *	  transaction that sends it fail - a task's error message of any length
 *	  must never stop its booking.
 *
 *	  Alerts are sent when the current transaction commits, and only if it
 *	  does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "hybridexec.h"

/* what fits a NOTIFY payload, with room to spare */
#define HX_ALERT_MAX_BYTES	7900

PG_FUNCTION_INFO_V1(hx_alert_send_sql);

static Jsonb *hx_jsonb_clip(Jsonb *in, int max_bytes);

/*
 * hx_alert_send
 *		Sends payload (a JSON object) on channel hx_alert at commit,
 *		clipping its strings to 1000, then 100 bytes when it is too long.
 */
void
hx_alert_send(Jsonb *payload)
{
	static const int clips[] = {1000, 100};
	char	   *text = JsonbToCString(NULL, &payload->root, VARSIZE(payload));
	int			i;

	for (i = 0; strlen(text) >= HX_ALERT_MAX_BYTES && i < lengthof(clips); i++)
	{
		Jsonb	   *clipped = hx_jsonb_clip(payload, clips[i]);

		text = JsonbToCString(NULL, &clipped->root, VARSIZE(clipped));
	}
	if (strlen(text) >= HX_ALERT_MAX_BYTES)
		text = "{\"event\": \"alert too large to send\"}";
	Async_Notify("hx_alert", text);
}

/*
 * hx_alert_dead
 *		The alert of a task that gave up: {"event": "dead", "task_id",
 *		"task_type", "attempts", "error"}.
 */
void
hx_alert_dead(int64 task_id, const char *task_type, int attempts,
			  const char *error)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;

#define HX_PUSH_KEY(name) \
	do { \
		k.type = jbvString; \
		k.val.string.val = (name); \
		k.val.string.len = strlen(name); \
		(void) pushJsonbValue(&state, WJB_KEY, &k); \
	} while (0)
#define HX_PUSH_STRING(s) \
	do { \
		v.type = jbvString; \
		v.val.string.val = (char *) (s); \
		v.val.string.len = strlen(s); \
		(void) pushJsonbValue(&state, WJB_VALUE, &v); \
	} while (0)
#define HX_PUSH_NUMBER(n) \
	do { \
		v.type = jbvNumeric; \
		v.val.numeric = int64_to_numeric(n); \
		(void) pushJsonbValue(&state, WJB_VALUE, &v); \
	} while (0)

	(void) pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	HX_PUSH_KEY("event");
	HX_PUSH_STRING("dead");
	HX_PUSH_KEY("task_id");
	HX_PUSH_NUMBER(task_id);
	HX_PUSH_KEY("task_type");
	HX_PUSH_STRING(task_type);
	HX_PUSH_KEY("attempts");
	HX_PUSH_NUMBER(attempts);
	HX_PUSH_KEY("error");
	HX_PUSH_STRING(error ? error : "");
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	hx_alert_send(JsonbValueToJsonb(res));
}

/*
 * hx_alert_send_sql
 *		SQL (_hybridexec.hx_alert_send(payload jsonb)): hx_alert_send, for
 *		the alerts SQL builds (windows that overran or failed, health).
 */
Datum
hx_alert_send_sql(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
		hx_alert_send(PG_GETARG_JSONB_P(0));
	PG_RETURN_VOID();
}

/*
 * hx_jsonb_clip
 *		A copy of in with every string longer than max_bytes cut (on a
 *		character boundary) to about that length and marked with "...".
 */
static Jsonb *
hx_jsonb_clip(Jsonb *in, int max_bytes)
{
	JsonbParseState *state = NULL;
	JsonbIterator *it = JsonbIteratorInit(&in->root);
	JsonbIteratorToken tok;
	JsonbValue	v;
	JsonbValue *res = NULL;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString &&
			v.val.string.len > max_bytes)
		{
			int			keep = pg_mbcliplen(v.val.string.val, v.val.string.len,
											max_bytes);
			char	   *s = palloc(keep + 4);

			memcpy(s, v.val.string.val, keep);
			memcpy(s + keep, "...", 4);
			v.val.string.val = s;
			v.val.string.len = keep + 3;
		}
		res = pushJsonbValue(&state, tok, tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return JsonbValueToJsonb(res);
}
