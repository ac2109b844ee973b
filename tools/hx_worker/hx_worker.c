/*-------------------------------------------------------------------------
 *
 * hx_worker.c
 *	  hx_worker's entry point: signals (a self-pipe the loops poll), the
 *	  connection to the server (first connection must work, later losses
 *	  are retried with a doubling backoff), queries and logging.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hx_worker.h"

HxwOptions	hxw_opts;
PGconn	   *hxw_conn = NULL;
volatile int hxw_stopping = 0;
int			hxw_signal_fd = -1;

static int	signal_write_fd = -1;
static double reconnect_at = 0;
static double reconnect_wait = 0.1;
static char *types_array = NULL;

/*
 * hxw_now
 *		Seconds on the monotonic clock.
 */
double
hxw_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * hxw_log
 *		One line on stderr, prefixed with the program name.
 */
void
hxw_log(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "hx_worker: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * hxw_debug
 *		Like hxw_log, only with --verbose.
 */
void
hxw_debug(const char *fmt,...)
{
	va_list		ap;

	if (!hxw_opts.verbose)
		return;
	fprintf(stderr, "hx_worker: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * on_signal
 *		SIGTERM/SIGINT ask for a clean stop; every handled signal (SIGCHLD
 *		too) writes a byte to the self-pipe so that poll() returns.
 */
static void
on_signal(int signo)
{
	int			save_errno = errno;
	char		c = (char) signo;

	if (signo == SIGTERM || signo == SIGINT)
		hxw_stopping = 1;
	if (write(signal_write_fd, &c, 1) < 0)
	{
		/* the pipe is full: poll() will return anyway */
	}
	errno = save_errno;
}

/*
 * setup_signals
 *		The self-pipe (both ends non-blocking, close-on-exec) and handlers.
 */
static void
setup_signals(void)
{
	int			fds[2];
	struct sigaction sa;

	if (pipe(fds) != 0)
	{
		hxw_log("could not create a pipe: %s", strerror(errno));
		exit(1);
	}
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	fcntl(fds[1], F_SETFL, O_NONBLOCK);
	fcntl(fds[0], F_SETFD, FD_CLOEXEC);
	fcntl(fds[1], F_SETFD, FD_CLOEXEC);
	hxw_signal_fd = fds[0];
	signal_write_fd = fds[1];

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/*
 * hxw_drain_signals
 *		Empties the self-pipe after poll() said it is readable.
 */
void
hxw_drain_signals(void)
{
	char		buf[64];

	while (read(hxw_signal_fd, buf, sizeof(buf)) > 0)
		;
}

/*
 * connect_once
 *		One connection attempt.  On success the search_path points at the
 *		schema of the extension and (stream mode) the session LISTENs on
 *		hx_stream.  On failure *why says why; returns NULL.
 */
static PGconn *
connect_once(char **why)
{
	const char *keys[] = {"dbname", "application_name", "connect_timeout", NULL};
	const char *vals[] = {hxw_opts.dsn, "hx_worker", "10", NULL};
	PGconn	   *conn;
	PGresult   *res;
	const char *sql;

	*why = NULL;
	conn = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(conn) != CONNECTION_OK)
	{
		*why = strdup(PQerrorMessage(conn));
		PQfinish(conn);
		return NULL;
	}
	sql = hxw_opts.batch
		? "SELECT set_config('search_path', quote_ident(n.nspname), false) "
		"FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
		"WHERE e.extname = 'hybridexec'"
		: "SELECT set_config('search_path', quote_ident(n.nspname), false) "
		"FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
		"WHERE e.extname = 'hybridexec'; LISTEN hx_stream";
	res = PQexec(conn, sql);
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
	{
		*why = strdup(PQerrorMessage(conn));
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	res = PQexec(conn, "SELECT 1 FROM pg_extension WHERE extname = 'hybridexec'");
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
	{
		*why = strdup("extension \"hybridexec\" is not installed in this database\n"
					  "HINT: CREATE EXTENSION hybridexec, or point --dsn at the database that has it.");
		PQclear(res);
		PQfinish(conn);
		return NULL;
	}
	PQclear(res);
	return conn;
}

/*
 * hxw_connected
 *		Whether the connection is usable right now.
 */
bool
hxw_connected(void)
{
	return hxw_conn != NULL && PQstatus(hxw_conn) == CONNECTION_OK;
}

/*
 * hxw_ensure_connected
 *		Reconnects after a loss, at most once per backoff period (0.1 s
 *		doubling to 5 s); returns whether the connection is usable.
 */
bool
hxw_ensure_connected(void)
{
	char	   *why;

	if (hxw_connected())
		return true;
	if (hxw_conn != NULL)
	{
		hxw_log("connection lost; reconnecting");
		PQfinish(hxw_conn);
		hxw_conn = NULL;
		reconnect_at = 0;
	}
	if (hxw_now() < reconnect_at)
		return false;
	hxw_conn = connect_once(&why);
	if (hxw_conn == NULL)
	{
		hxw_debug("reconnect failed: %s", why);
		free(why);
		reconnect_at = hxw_now() + reconnect_wait;
		reconnect_wait = reconnect_wait * 2 > 5.0 ? 5.0 : reconnect_wait * 2;
		return false;
	}
	hxw_log("connected again");
	reconnect_wait = 0.1;
	return true;
}

/*
 * hxw_query
 *		Runs one statement with text parameters; never NULL.  A lost
 *		connection shows as a failed result and !hxw_connected().
 */
PGresult *
hxw_query(const char *sql, int nparams, const char *const *values)
{
	return PQexecParams(hxw_conn, sql, nparams, NULL, values, NULL, NULL, 0);
}

/*
 * hxw_result_ok
 *		Whether a result is a success.
 */
bool
hxw_result_ok(PGresult *res)
{
	ExecStatusType st = PQresultStatus(res);

	return st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK;
}

/*
 * hxw_sqlstate
 *		The SQLSTATE of a failed result ("" when there is none, as for a
 *		lost connection).
 */
const char *
hxw_sqlstate(PGresult *res)
{
	const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);

	return s ? s : "";
}

/*
 * hxw_types_array
 *		--type values as a text[] literal, or NULL for every type.
 */
const char *
hxw_types_array(void)
{
	return types_array;
}

/*
 * build_types_array
 *		Quotes the --type values into an array literal once.
 */
static void
build_types_array(void)
{
	size_t		len = 3;
	int			i;
	char	   *p;

	if (hxw_opts.ntypes == 0)
		return;
	for (i = 0; i < hxw_opts.ntypes; i++)
		len += 2 * strlen(hxw_opts.types[i]) + 3;
	types_array = p = malloc(len);
	*p++ = '{';
	for (i = 0; i < hxw_opts.ntypes; i++)
	{
		const char *s;

		if (i > 0)
			*p++ = ',';
		*p++ = '"';
		for (s = hxw_opts.types[i]; *s; s++)
		{
			if (*s == '"' || *s == '\\')
				*p++ = '\\';
			*p++ = *s;
		}
		*p++ = '"';
	}
	*p++ = '}';
	*p = '\0';
}

int
main(int argc, char **argv)
{
	char	   *why;
	PGresult   *res;
	const char *params[1];
	int			fd;

	/*
	 * Descriptors 0-2 must be taken, or a pipe created for a command could
	 * land there and be closed by the command's own dup2 dance.
	 */
	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2)
		;
	if (fd > 2)
		close(fd);

	hxw_parse_options(argc, argv);
	build_types_array();
	setup_signals();

	/* the first connection must work: a wrong --dsn is an error, not a wait */
	hxw_conn = connect_once(&why);
	if (hxw_conn == NULL)
	{
		hxw_log("could not connect: %s", why);
		return 1;
	}

	/* unknown types and types with an in-database handler: hx_claim says why */
	params[0] = types_array;
	res = hxw_query("SELECT hx_claim_check($1::text[])", 1, params);
	if (!hxw_result_ok(res))
	{
		const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);

		hxw_log("%s%s%s", PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
				hint ? "\nHINT: " : "", hint ? hint : "");
		return 1;
	}
	PQclear(res);
	hxw_log("connected; executor \"%s\", %s mode", hxw_opts.name,
			hxw_opts.batch ? "batch" : hxw_opts.noop ? "stream (noop)" : "stream");

	return hxw_opts.batch ? hxw_batch_main() : hxw_stream_main();
}
