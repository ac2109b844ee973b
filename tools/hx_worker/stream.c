/*-------------------------------------------------------------------------
 *
 * stream.c
 *	  hx_worker's stream mode: claims stream tasks when a NOTIFY hx_stream
 *	  says some were queued (or every --poll seconds), runs COMMAND for
 *	  each in one of --concurrency slots, renews their leases, and reports
 *	  each outcome.  Outcomes wait in their slot while the connection is
 *	  down and are reported after the reconnect (refused, and dropped, if
 *	  the lease expired meanwhile).  --noop completes every claimed task
 *	  at once with {}.  The --cost-field number is the reported cost, or
 *	  with --unit-price that number times the price (numeric, on the
 *	  server).
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hx_worker.h"

typedef enum
{
	SLOT_FREE,
	SLOT_RUNNING,				/* COMMAND runs */
	SLOT_REPORT,				/* finished; outcome to report */
	SLOT_DROP					/* lease lost; free once COMMAND is gone */
} SlotState;

typedef struct Slot
{
	SlotState	state;
	char		id[24];
	char		token[40];
	char	   *payload;
	char	   *env[3];
	HxwChild	child;
	double		next_heartbeat;
} Slot;

static Slot *slots;
static char lease_text[64];

/*
 * slot_free
 *		Releases what a slot holds.
 */
static void
slot_free(Slot *s)
{
	int			i;

	hxw_child_reset(&s->child);
	free(s->payload);
	for (i = 0; i < 3; i++)
		free(s->env[i]);
	memset(s, 0, sizeof(*s));
	s->child.in_fd = s->child.out_fd = s->child.err_fd = -1;
}

/*
 * env_var
 *		"NAME=value", malloc'd.
 */
static char *
env_var(const char *name, const char *value)
{
	char	   *s = malloc(strlen(name) + strlen(value) + 2);

	sprintf(s, "%s=%s", name, value);
	return s;
}

/*
 * start_task
 *		Starts COMMAND for a claimed task in a free slot; a command that
 *		cannot be started is reported as a failure right away.
 */
static void
start_task(Slot *s, PGresult *res, int row)
{
	char	   *envp[4];

	s->state = SLOT_RUNNING;
	snprintf(s->id, sizeof(s->id), "%s", PQgetvalue(res, row, 0));
	snprintf(s->token, sizeof(s->token), "%s", PQgetvalue(res, row, 1));
	s->payload = strdup(PQgetvalue(res, row, 2));
	s->env[0] = env_var("HX_TASK_ID", s->id);
	s->env[1] = env_var("HX_TASK_TYPE", PQgetvalue(res, row, 3));
	s->env[2] = env_var("HX_ATTEMPT", PQgetvalue(res, row, 4));
	memcpy(envp, s->env, sizeof(s->env));
	envp[3] = NULL;
	s->next_heartbeat = hxw_now() + hxw_opts.lease / 3;
	hxw_debug("task %s (%s, attempt %s): starting", s->id, PQgetvalue(res, row, 3),
			  PQgetvalue(res, row, 4));
	if (!hxw_child_start(&s->child, hxw_opts.command, envp, s->payload,
						 strlen(s->payload), hxw_opts.timeout))
	{
		/* report it as a command killed at once */
		s->child.exited = true;
		s->child.status = 127 << 8;
		s->child.in_fd = s->child.out_fd = s->child.err_fd = -1;
		s->state = SLOT_REPORT;
	}
}

/*
 * report
 *		Sends a finished slot's outcome.  Returns false when the connection
 *		is gone (the slot keeps its outcome for later).
 */
static bool
report(Slot *s)
{
	char	   *failure = hxw_child_failure(&s->child);
	PGresult   *res;
	const char *params[5];
	char	   *bad_json = NULL;

	params[0] = s->id;
	params[1] = s->token;
	if (failure == NULL)
	{
		params[2] = s->child.out.data ? s->child.out.data : "";
		params[3] = hxw_opts.cost_field;
		params[4] = hxw_opts.unit_price;
		if (hxw_opts.unit_price == NULL)
			res = hxw_query("SELECT hx_complete($1::bigint, $2::uuid, r, hx_result_cost(r, $4)) "
							"FROM (SELECT $3::jsonb AS r) s", 4, params);
		else
		{
			/* units times the unit price, in numeric: exact */
			res = hxw_query("SELECT hx_complete($1::bigint, $2::uuid, r, "
							"hx_result_cost(r, $4) * $5::numeric) "
							"FROM (SELECT $3::jsonb AS r) s", 5, params);
		}
		if (!hxw_result_ok(res) && hxw_connected()
			&& strncmp(hxw_sqlstate(res), "22", 2) == 0)
		{
			/* a data exception: stdout is not JSON, a failure of this task */
			const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

			bad_json = malloc(strlen(m) + 80);
			sprintf(bad_json, "command printed no valid JSON on stdout (%s)", m);
			PQclear(res);
			failure = bad_json;
			bad_json = NULL;
		}
		else
			hxw_debug("task %s: done", s->id);
	}
	if (failure != NULL)
	{
		params[2] = failure;
		res = hxw_query("SELECT hx_fail($1::bigint, $2::uuid, $3)", 3, params);
		hxw_log("task %s failed: %s", s->id, failure);
		free(failure);
	}
	if (!hxw_result_ok(res))
	{
		if (!hxw_connected())
		{
			PQclear(res);
			return false;
		}
		hxw_log("task %s: outcome dropped: %s", s->id,
				PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
	}
	PQclear(res);
	slot_free(s);
	return true;
}

/*
 * heartbeat
 *		Renews a running slot's lease; a lease that is gone (expired and
 *		taken by another executor) kills the command and drops the slot.
 */
static void
heartbeat(Slot *s)
{
	const char *params[3] = {s->id, s->token, lease_text};
	PGresult   *res;

	res = hxw_query("SELECT hx_heartbeat(ARRAY[$1::bigint], ARRAY[$2::uuid], $3::interval)",
					3, params);
	if (hxw_result_ok(res))
		s->next_heartbeat = hxw_now() + hxw_opts.lease / 3;
	else if (hxw_connected())
	{
		hxw_log("task %s: lease lost (%s); command killed",
				s->id, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		hxw_child_kill(&s->child);
		s->state = SLOT_DROP;
	}
	PQclear(res);
}

/*
 * claim
 *		Claims up to n stream tasks; starts a command for each (or, with
 *		--noop, completes them all at once).  Returns how many were claimed.
 */
static int
claim(int n)
{
	char		max[16];
	const char *params[4] = {hxw_opts.name, hxw_types_array(), max, lease_text};
	PGresult   *res;
	int			got,
				i,
				j = 0;

	snprintf(max, sizeof(max), "%d", n);
	res = hxw_query("SELECT id, lease_token, payload::text, task_type, attempt "
					"FROM hx_claim($1, $2::text[], 'stream', $3::integer, $4::interval)",
					4, params);
	if (!hxw_result_ok(res))
	{
		if (hxw_connected())
			hxw_log("could not claim: %s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		PQclear(res);
		return 0;
	}
	got = PQntuples(res);
	if (hxw_opts.noop && got > 0)
	{
		HxwBuf		ids = {0},
					tokens = {0};
		const char *done[2];
		PGresult   *r;

		for (i = 0; i < got; i++)
		{
			hxw_buf_append(&ids, i ? "," : "{", 1, 0);
			hxw_buf_append(&ids, PQgetvalue(res, i, 0), strlen(PQgetvalue(res, i, 0)), 0);
			hxw_buf_append(&tokens, i ? "," : "{", 1, 0);
			hxw_buf_append(&tokens, PQgetvalue(res, i, 1), strlen(PQgetvalue(res, i, 1)), 0);
		}
		hxw_buf_append(&ids, "}", 1, 0);
		hxw_buf_append(&tokens, "}", 1, 0);
		done[0] = ids.data;
		done[1] = tokens.data;
		r = hxw_query("SELECT count(*) FROM hx_complete_many($1::bigint[], $2::uuid[])", 2, done);
		if (!hxw_result_ok(r) && hxw_connected())
			hxw_log("could not complete: %s", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
		PQclear(r);
		hxw_buf_free(&ids);
		hxw_buf_free(&tokens);
	}
	else
	{
		for (i = 0; i < got; i++)
		{
			while (slots[j].state != SLOT_FREE)
				j++;
			start_task(&slots[j], res, i);
		}
	}
	PQclear(res);
	return got;
}

/*
 * hxw_stream_main
 *		The stream mode's loop; returns the exit status.
 */
int
hxw_stream_main(void)
{
	int			nslots = hxw_opts.concurrency;
	struct pollfd *fds = calloc(2 + 3 * nslots, sizeof(struct pollfd));
	double		next_claim = 0;
	bool		more = true;
	int			i;

	snprintf(lease_text, sizeof(lease_text), "%.3f seconds", hxw_opts.lease);
	slots = calloc(nslots, sizeof(Slot));
	for (i = 0; i < nslots; i++)
		slots[i].child.in_fd = slots[i].child.out_fd = slots[i].child.err_fd = -1;

	for (;;)
	{
		bool		conn = hxw_ensure_connected();
		int			busy = 0;
		int			nfds = 0;
		double		now,
					wake;
		int			timeout_ms;

		for (i = 0; i < nslots; i++)
		{
			Slot	   *s = &slots[i];

			if (s->state == SLOT_RUNNING || s->state == SLOT_DROP)
			{
				hxw_child_io(&s->child);
				if (hxw_child_done(&s->child))
				{
					if (s->state == SLOT_DROP)
						slot_free(s);
					else
						s->state = SLOT_REPORT;
				}
			}
			if (s->state == SLOT_REPORT && conn)
				conn = report(s);
			if (s->state == SLOT_RUNNING && conn && hxw_now() >= s->next_heartbeat)
			{
				heartbeat(s);
				conn = hxw_connected();
			}
			if (s->state != SLOT_FREE)
				busy++;
		}

		if (hxw_stopping && busy == 0)
		{
			hxw_log("stopped");
			return 0;
		}
		if (hxw_stopping && !conn)
		{
			/* asked to stop while the server is away: outcomes cannot wait forever */
			bool		running = false;

			for (i = 0; i < nslots; i++)
				running |= slots[i].state == SLOT_RUNNING || slots[i].state == SLOT_DROP;
			if (!running)
			{
				hxw_log("stopped without reaching the server: %d outcomes dropped (their leases will expire and the tasks be retried)",
						busy);
				return 1;
			}
		}

		now = hxw_now();
		if (conn && !hxw_stopping && busy < nslots && (more || now >= next_claim))
		{
			int			asked = nslots - busy;
			int			got = claim(asked);

			more = got == asked;
			next_claim = hxw_now() + hxw_opts.poll;
			if (got > 0)
				continue;		/* feed the new commands their input at once */
		}

		/* sleep until a pipe, the server or a signal has something, or a timer */
		fds[nfds].fd = hxw_signal_fd;
		fds[nfds++].events = POLLIN;
		if (conn)
		{
			fds[nfds].fd = PQsocket(hxw_conn);
			fds[nfds++].events = POLLIN;
		}
		wake = conn ? next_claim : now + 0.1;
		for (i = 0; i < nslots; i++)
		{
			Slot	   *s = &slots[i];

			if (s->state == SLOT_RUNNING || s->state == SLOT_DROP)
			{
				nfds += hxw_child_pollfds(&s->child, fds + nfds, 3);
				if (s->child.deadline < wake)
					wake = s->child.deadline;
				if (s->state == SLOT_RUNNING && s->next_heartbeat < wake)
					wake = s->next_heartbeat;
				if (s->child.exited)
					wake = now + 0.01;
			}
			else if (s->state == SLOT_REPORT)
				wake = now + 0.1;	/* waiting for the connection */
		}
		if (hxw_stopping || (more && busy < nslots && conn))
			wake = now;
		timeout_ms = wake <= now ? 0 : (int) ((wake - now) * 1000) + 1;
		if (poll(fds, nfds, timeout_ms) < 0 && errno != EINTR)
		{
			hxw_log("poll failed: %s", strerror(errno));
			return 1;
		}
		if (fds[0].revents)
			hxw_drain_signals();
		if (conn && fds[1].revents)
		{
			PGnotify   *note;

			if (!PQconsumeInput(hxw_conn))
				continue;		/* lost: reconnect at the top */
			while ((note = PQnotifies(hxw_conn)) != NULL)
			{
				more = true;
				PQfreemem(note);
			}
		}
	}
}
