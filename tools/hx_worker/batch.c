/*-------------------------------------------------------------------------
 *
 * batch.c
 *	  hx_worker's batch mode: while a window is open, claims up to
 *	  --batch-size batch tasks, writes them to one JSONL file (the server
 *	  builds the lines), runs COMMAND once with HX_BATCH_INPUT and
 *	  HX_BATCH_OUTPUT, renews the leases while it runs, and hands the
 *	  output file to hx_batch_report(), which parses it and completes or
 *	  fails every task (a task without a line fails, alone).  With
 *	  --unit-price the output is first rewritten by the server so that each
 *	  line carries its cost (units times the price) under a key of its own.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hx_worker.h"

/*
 * write_file
 *		Writes the claimed tasks' JSONL lines (column 2 of res) to path.
 */
static bool
write_file(const char *path, PGresult *res)
{
	FILE	   *f = fopen(path, "w");
	int			i;

	if (f == NULL)
	{
		hxw_log("could not write \"%s\": %s", path, strerror(errno));
		return false;
	}
	for (i = 0; i < PQntuples(res); i++)
	{
		fputs(PQgetvalue(res, i, 2), f);
		fputc('\n', f);
	}
	if (fclose(f) != 0)
	{
		hxw_log("could not write \"%s\": %s", path, strerror(errno));
		return false;
	}
	return true;
}

/*
 * read_file
 *		The whole output file, malloc'd ("" when it is missing).
 */
static char *
read_file(const char *path)
{
	FILE	   *f = fopen(path, "r");
	HxwBuf		buf = {0};
	char		data[65536];
	size_t		n;

	hxw_buf_append(&buf, "", 0, 0);
	if (f == NULL)
		return buf.data;
	while ((n = fread(data, 1, sizeof(data), f)) > 0)
		hxw_buf_append(&buf, data, n, 0);
	fclose(f);
	return buf.data;
}

/*
 * join_column
 *		Column col of every row as an array literal {a,b,...}, malloc'd.
 */
static char *
join_column(PGresult *res, int col)
{
	HxwBuf		buf = {0};
	int			i;

	hxw_buf_append(&buf, "{", 1, 0);
	for (i = 0; i < PQntuples(res); i++)
	{
		if (i > 0)
			hxw_buf_append(&buf, ",", 1, 0);
		hxw_buf_append(&buf, PQgetvalue(res, i, col), strlen(PQgetvalue(res, i, col)), 0);
	}
	hxw_buf_append(&buf, "}", 1, 0);
	return buf.data;
}

/*
 * wait_connected
 *		Reconnects (with its backoff) until connected; false when asked to
 *		stop while the server stays away for more than a lease (the results
 *		could no longer be reported anyway).
 */
static bool
wait_connected(void)
{
	double		give_up = 0;

	while (!hxw_ensure_connected())
	{
		struct pollfd fd = {hxw_signal_fd, POLLIN, 0};

		if (hxw_stopping && give_up == 0)
			give_up = hxw_now() + hxw_opts.lease;
		if (give_up > 0 && hxw_now() > give_up)
			return false;
		if (poll(&fd, 1, 100) > 0)
			hxw_drain_signals();
	}
	return true;
}

/*
 * With --unit-price, hx_batch_report() is asked for the cost in this
 * top-level key of each output line, which scale_sql adds: the units found
 * where hx_batch_report would read the cost (the --cost-field field of the
 * line's "result", else of the line itself) times the unit price.  A
 * result object that had a field of this very name would have that read
 * as its cost instead: a name that no result is expected to use.
 */
#define SCALED_COST_KEY "hx_worker.scaled_cost"

/*
 * Rewrites the lines of $1, keeping their number and order (so the line
 * numbers in hx_batch_report's warnings stay right): a line that is a JSON
 * object with a cost ($2 is the cost field) gets SCALED_COST_KEY = cost
 * times $3, the unit price, as numeric (exact); other lines are kept as
 * they are.  hx_result_cost() warns about a field that is not a number,
 * as hx_batch_report would.  Fails (SQLSTATE 22P02 or 22P05) when a line
 * is not JSON that jsonb takes; every line is parsed (the CASE's first
 * subquery) before any cost is read, so a statement that fails has given
 * no warning, and each warning is given once, by the statement that
 * succeeds for its line (OFFSET 0 keeps y a subquery of its own, so that
 * c is computed once per line, not once per use).
 */
static const char *scale_sql =
"WITH x AS MATERIALIZED ("
"  SELECT l, n, CASE WHEN btrim(l, E' \\t\\r') <> '' THEN l::jsonb END AS j"
"    FROM regexp_split_to_table($1, E'\\n') WITH ORDINALITY AS x (l, n)) "
"SELECT CASE WHEN (SELECT count(j) FROM x) >= 0 THEN"
"  (SELECT string_agg(CASE WHEN c IS NULL THEN l"
"                          ELSE (j || jsonb_build_object($4::text, c * $3::numeric))::text END,"
"                     E'\\n' ORDER BY n)"
"     FROM (SELECT l, n, j, coalesce(hx_result_cost(j->'result', $2), hx_result_cost(j, $2)) AS c"
"             FROM x OFFSET 0) y) END";

/*
 * scale_lines
 *		Appends lines [lo, hi) of output (line i runs from starts[i] to just
 *		before starts[i + 1] - 1, its newline), as scale_sql rewrites them,
 *		to buf, newline-separated.  When a line is not JSON the statement
 *		fails: the range is then halved until the bad line stands alone,
 *		and that line is kept as it is (hx_batch_report cannot read it
 *		either, and warns about it).  So a clean output costs one statement,
 *		and each bad line about two per halving.  Returns false, with *error
 *		set when connected (malloc'd), on any other failure.
 */
static bool
scale_lines(HxwBuf *buf, const char *output, const size_t *starts, int lo, int hi,
			char **error)
{
	size_t		len = starts[hi] - 1 - starts[lo];
	char	   *text = malloc(len + 1);
	const char *params[4];
	PGresult   *res;
	bool		ok;

	memcpy(text, output + starts[lo], len);
	text[len] = '\0';
	params[0] = text;
	params[1] = hxw_opts.cost_field;
	params[2] = hxw_opts.unit_price;
	params[3] = SCALED_COST_KEY;
	res = hxw_query(scale_sql, 4, params);
	if (hxw_result_ok(res))
	{
		hxw_buf_append(buf, PQgetvalue(res, 0, 0), PQgetlength(res, 0, 0), 0);
		ok = true;
	}
	else if (hxw_connected()
			 && (strcmp(hxw_sqlstate(res), "22P02") == 0
				 || strcmp(hxw_sqlstate(res), "22P05") == 0))
	{
		if (hi - lo == 1)
		{
			hxw_buf_append(buf, text, len, 0);
			ok = true;
		}
		else
		{
			int			mid = lo + (hi - lo) / 2;

			ok = scale_lines(buf, output, starts, lo, mid, error);
			if (ok)
			{
				hxw_buf_append(buf, "\n", 1, 0);
				ok = scale_lines(buf, output, starts, mid, hi, error);
			}
		}
	}
	else
	{
		if (hxw_connected())
			*error = strdup(PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		ok = false;
	}
	PQclear(res);
	free(text);
	return ok;
}

/*
 * scale_output
 *		The batch output with every line's cost multiplied by --unit-price
 *		(see scale_sql), malloc'd; NULL when that failed: *error then says
 *		why (malloc'd), or is NULL when the connection was lost.
 */
static char *
scale_output(const char *output, char **error)
{
	size_t		total = strlen(output);
	size_t	   *starts;
	int			nlines = 1;
	int			i = 0;
	size_t		pos;
	HxwBuf		buf = {0};

	*error = NULL;
	for (pos = 0; pos < total; pos++)
		if (output[pos] == '\n')
			nlines++;
	/* where each line starts, and where one past the last would */
	starts = malloc((nlines + 1) * sizeof(size_t));
	starts[i++] = 0;
	for (pos = 0; pos < total; pos++)
		if (output[pos] == '\n')
			starts[i++] = pos + 1;
	starts[nlines] = total + 1;

	hxw_buf_append(&buf, "", 0, 0);
	if (!scale_lines(&buf, output, starts, 0, nlines, error))
	{
		hxw_buf_free(&buf);
		free(starts);
		return NULL;
	}
	free(starts);
	return buf.data;
}

/*
 * run_batch
 *		Runs COMMAND on one claimed batch and reports every task.
 */
static void
run_batch(PGresult *claimed, const char *dir, const char *lease_text)
{
	char		in_path[1100],
				out_path[1100],
				size[32];
	char	   *ids = join_column(claimed, 0);
	char	   *tokens = join_column(claimed, 1);
	char	   *env[4];
	HxwChild	child;
	char	   *failure = NULL;
	char	   *output = NULL;
	double		next_heartbeat = hxw_now() + hxw_opts.lease / 3;
	int			n = PQntuples(claimed);
	const char *params[4];
	PGresult   *res;

	snprintf(in_path, sizeof(in_path), "%s/input.jsonl", dir);
	snprintf(out_path, sizeof(out_path), "%s/output.jsonl", dir);
	snprintf(size, sizeof(size), "%d", n);
	unlink(out_path);
	env[0] = malloc(sizeof(in_path) + 20);
	sprintf(env[0], "HX_BATCH_INPUT=%s", in_path);
	env[1] = malloc(sizeof(out_path) + 20);
	sprintf(env[1], "HX_BATCH_OUTPUT=%s", out_path);
	env[2] = malloc(64);
	sprintf(env[2], "HX_BATCH_SIZE=%s", size);
	env[3] = NULL;
	hxw_log("batch of %d tasks: running the command", n);

	if (!write_file(in_path, claimed))
		failure = strdup("hx_worker could not write the batch input file");
	else if (!hxw_child_start(&child, hxw_opts.command, env, NULL, 0, hxw_opts.timeout))
		failure = strdup("hx_worker could not start the command");
	else
	{
		child.discard_out = true;
		while (!hxw_child_done(&child))
		{
			struct pollfd fds[4];
			int			nfds = 1;

			fds[0].fd = hxw_signal_fd;
			fds[0].events = POLLIN;
			nfds += hxw_child_pollfds(&child, fds + 1, 3);
			poll(fds, nfds, child.exited ? 10 : 200);
			if (fds[0].revents)
				hxw_drain_signals();
			hxw_child_io(&child);
			if (hxw_now() >= next_heartbeat && hxw_ensure_connected())
			{
				params[0] = ids;
				params[1] = tokens;
				params[2] = lease_text;
				res = hxw_query("SELECT count(*) FROM hx_heartbeat($1::bigint[], $2::uuid[], $3::interval)",
								3, params);
				if (!hxw_result_ok(res) && hxw_connected())
					hxw_log("batch heartbeat refused: %s",
							PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
				PQclear(res);
				next_heartbeat = hxw_now() + hxw_opts.lease / 3;
			}
		}
		failure = hxw_child_failure(&child);
		if (failure == NULL)
			output = read_file(out_path);
		hxw_child_reset(&child);
	}

	/* report: the output file, or the command's failure for every task */
	if (!wait_connected())
	{
		hxw_log("batch of %d tasks dropped: the server is unreachable (their leases will expire)", n);
		goto done;
	}
	params[3] = hxw_opts.cost_field;
	if (failure == NULL && hxw_opts.unit_price != NULL)
	{
		/* the costs in units become money: a rewritten output, another key */
		char	   *scaled;
		char	   *error;

		while ((scaled = scale_output(output, &error)) == NULL && error == NULL)
		{
			if (!wait_connected())
			{
				hxw_log("batch of %d tasks dropped: the server is unreachable (their leases will expire)", n);
				goto done;
			}
		}
		if (scaled == NULL)
		{
			failure = malloc(strlen(error) + 100);
			sprintf(failure, "hx_worker could not apply --unit-price to the output: %s", error);
			free(error);
		}
		else
		{
			free(output);
			output = scaled;
			params[3] = SCALED_COST_KEY;
		}
	}
	params[0] = ids;
	params[1] = tokens;
	params[2] = output;
	if (failure != NULL)
	{
		hxw_log("batch failed: %s", failure);
		params[2] = failure;
		res = hxw_query("SELECT r.status, count(*) FROM hx_batch_report($1::bigint[], $2::uuid[], "
						"(SELECT string_agg(json_build_object('custom_id', i::text, 'error', $3::text)::text, E'\\n') "
						"FROM unnest($1::bigint[]) i)) r GROUP BY r.status ORDER BY r.status",
						3, params);
	}
	else
		res = hxw_query("SELECT r.status, count(*) FROM hx_batch_report($1::bigint[], $2::uuid[], $3, $4) r "
						"GROUP BY r.status ORDER BY r.status", 4, params);
	if (hxw_result_ok(res))
	{
		HxwBuf		msg = {0};
		int			i;

		for (i = 0; i < PQntuples(res); i++)
		{
			char		part[100];

			snprintf(part, sizeof(part), "%s%s %s", i ? ", " : "",
					 PQgetvalue(res, i, 1), PQgetvalue(res, i, 0));
			hxw_buf_append(&msg, part, strlen(part), 0);
		}
		hxw_log("batch of %d tasks reported: %s", n, msg.data ? msg.data : "nothing");
		hxw_buf_free(&msg);
	}
	else
		hxw_log("could not report the batch: %s", PQerrorMessage(hxw_conn));
	PQclear(res);
done:
	unlink(in_path);
	unlink(out_path);
	free(failure);
	free(output);
	free(ids);
	free(tokens);
	free(env[0]);
	free(env[1]);
	free(env[2]);
}

/*
 * hxw_batch_main
 *		The batch mode's loop; returns the exit status.
 */
int
hxw_batch_main(void)
{
	char		lease_text[64];
	char		max[16];
	char		dir[1024];
	const char *tmp = getenv("TMPDIR");

	snprintf(lease_text, sizeof(lease_text), "%.3f seconds", hxw_opts.lease);
	snprintf(max, sizeof(max), "%d", hxw_opts.batch_size);
	snprintf(dir, sizeof(dir), "%s/hx_worker.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL)
	{
		hxw_log("could not create a directory for the batch files: %s", strerror(errno));
		return 1;
	}

	while (!hxw_stopping)
	{
		const char *params[4] = {hxw_opts.name, hxw_types_array(), max, lease_text};
		PGresult   *res;

		if (!hxw_ensure_connected())
		{
			struct pollfd fd = {hxw_signal_fd, POLLIN, 0};

			if (poll(&fd, 1, 100) > 0)
				hxw_drain_signals();
			continue;
		}
		res = hxw_query("SELECT id, lease_token, json_build_object('custom_id', id::text, "
						"'payload', payload)::text "
						"FROM hx_claim($1, $2::text[], 'batch', $3::integer, $4::interval) "
						"ORDER BY id", 4, params);
		if (hxw_result_ok(res) && PQntuples(res) > 0)
		{
			run_batch(res, dir, lease_text);
			PQclear(res);
			continue;
		}
		if (!hxw_result_ok(res) && hxw_connected())
			hxw_log("could not claim: %s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		PQclear(res);

		/* nothing (no window open): wait --poll seconds or for a signal */
		{
			struct pollfd fd = {hxw_signal_fd, POLLIN, 0};

			if (poll(&fd, 1, (int) (hxw_opts.poll * 1000)) > 0)
				hxw_drain_signals();
		}
	}
	rmdir(dir);
	hxw_log("stopped");
	return 0;
}
