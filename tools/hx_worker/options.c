/*-------------------------------------------------------------------------
 *
 * options.c
 *	  hx_worker's command line: flags, their checks and --help; and the
 *	  check that COMMAND can be run at all (found, an executable file),
 *	  made before connecting.
 *
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hx_worker.h"

static const char *usage_text =
"hx_worker runs the tasks of hybridexec task types that have no in-database\n"
"handler: it claims them from PostgreSQL (hx_claim), runs COMMAND for each and\n"
"reports the outcome (hx_complete / hx_fail).\n"
"\n"
"Usage:\n"
"  hx_worker [OPTION]... --type TYPE... -- COMMAND [ARG]...\n"
"  hx_worker [OPTION]... --noop\n"
"\n"
"Stream mode (default): claims stream tasks as soon as they are submitted\n"
"(LISTEN hx_stream, with --poll as a safety net) and runs COMMAND once per\n"
"task: the task's payload (JSON) on its stdin; what it prints on stdout is\n"
"the result and must be JSON; a non-zero exit is a failure, with the tail of\n"
"its stderr as the error.  The environment has HX_TASK_ID, HX_TASK_TYPE and\n"
"HX_ATTEMPT.\n"
"\n"
"Batch mode (--batch): while a batch window holding tasks of TYPE is open,\n"
"claims up to --batch-size of them and runs COMMAND once for all, with\n"
"  HX_BATCH_INPUT   a JSONL file, one {\"custom_id\": \"<id>\", \"payload\": ...}\n"
"                   line per task\n"
"  HX_BATCH_OUTPUT  where COMMAND writes one {\"custom_id\": \"<id>\", \"result\": ...}\n"
"                   or {\"custom_id\": \"<id>\", \"error\": \"...\"} line per task\n"
"  HX_BATCH_SIZE    how many tasks the input has\n"
"A task without a line in the output fails; unknown ids are ignored with a\n"
"warning.  A non-zero exit fails every task of the batch.\n"
"\n"
"Options:\n"
"  -d, --dsn=DSN           libpq connection string or URI (default: PG* variables)\n"
"  -t, --type=TYPE         task type to run; repeat for several (default: all\n"
"                          types without an in-database handler)\n"
"  -c, --concurrency=N     commands running at once in stream mode (default 1)\n"
"  -T, --timeout=SECONDS   a command running longer is killed and the attempt\n"
"                          fails (default 300)\n"
"  -l, --lease=SECONDS     lease of each claim, renewed every third of it while\n"
"                          the command runs (default 60)\n"
"  -p, --poll=SECONDS      claim at least this often even without a NOTIFY\n"
"                          (default 5)\n"
"  -b, --batch             batch mode (see above)\n"
"  -B, --batch-size=N      tasks per batch file, 1 to 10000 (default 1000)\n"
"      --noop              built-in executor: every task is done with {} at\n"
"                          once (for benchmarks); takes no COMMAND\n"
"      --cost-field=NAME   the number in field NAME of a result (or of a batch\n"
"                          output line) is the attempt's cost, booked in the\n"
"                          ledger instead of the catalog price; without\n"
"                          --unit-price it is taken as money, in the currency\n"
"                          of the type's hx_price row (hybridexec.currency,\n"
"                          USD by default, when it has none)\n"
"      --unit-price=PRICE  with --cost-field: the field counts units (tokens,\n"
"                          say) and the cost booked is the number times PRICE,\n"
"                          the price of one unit in that currency: a\n"
"                          non-negative decimal such as 0.000002 or 2e-6,\n"
"                          multiplied exactly (numeric, no rounding)\n"
"  -n, --name=NAME         executor name stored in hx_task.executor\n"
"                          (default hx_worker@HOST:PID)\n"
"  -v, --verbose           log every task\n"
"  -h, --help              show this help and exit\n"
"\n"
"Failed attempts are retried by hybridexec's usual rules (hx_type.max_attempts;\n"
"stream tasks after a backoff, batch tasks in the next window run).  An\n"
"attempt whose lease expires (hx_worker killed, connection lost for longer\n"
"than the lease) counts as failed.  On SIGTERM or SIGINT hx_worker stops\n"
"claiming, finishes and reports what it holds, and exits 0.  When the server\n"
"goes away it reconnects with a backoff.  Exit status: 0 after a clean stop,\n"
"1 when the server cannot be reached at start or refuses the flags, 2 for\n"
"wrong flags or a COMMAND that cannot be run (not found, or not an\n"
"executable file; checked before connecting).\n";

/*
 * usage_error
 *		A wrong flag: say what, point at --help, exit 2.
 */
static void
usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "hx_worker: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry \"hx_worker --help\" for more information.\n");
	exit(2);
}

/*
 * parse_number
 *		A positive number of seconds (or a count when integer) in [min, max].
 */
static double
parse_number(const char *flag, const char *arg, double min, double max, bool integer)
{
	char	   *end;
	double		v = strtod(arg, &end);

	if (*arg == '\0' || *end != '\0' || v < min || v > max
		|| (integer && v != (double) (long) v))
	{
		char		msg[200];

		snprintf(msg, sizeof(msg), "invalid value \"%%s\" for %s (%s %g to %g)",
				 flag, integer ? "an integer from" : "seconds from", min, max);
		usage_error(msg, arg);
	}
	return v;
}

/*
 * valid_unit_price
 *		Whether s is a non-negative decimal that PostgreSQL's numeric takes
 *		and multiplies exactly: digits with at most one point (at least one
 *		digit), then an optional exponent e[+-]N with |N| <= 100; no sign,
 *		no spaces, no NaN or Infinity, at most 100 characters.  The text is
 *		passed to the server as it is, so nothing is rounded on this side.
 */
static bool
valid_unit_price(const char *s)
{
	const char *p = s;
	int			digits = 0;

	if (strlen(s) > 100)
		return false;
	for (; isdigit((unsigned char) *p); p++)
		digits++;
	if (*p == '.')
	{
		for (p++; isdigit((unsigned char) *p); p++)
			digits++;
	}
	if (digits == 0)
		return false;
	if (*p == 'e' || *p == 'E')
	{
		long		exponent;
		char	   *end;

		p++;
		if (!isdigit((unsigned char) *p)
			&& !((*p == '+' || *p == '-') && isdigit((unsigned char) p[1])))
			return false;
		errno = 0;
		exponent = strtol(p, &end, 10);
		if (errno != 0 || exponent < -100 || exponent > 100)
			return false;
		p = end;
	}
	return *p == '\0';
}

/*
 * executable_file
 *		0 when path is an executable regular file (what execve can start),
 *		else the errno that says why not: the one from stat() (ENOENT...),
 *		but EPERM when stat() is refused (a directory on the way cannot be
 *		searched by us: nothing is known of the file), EISDIR for a
 *		directory, EINVAL for another kind of file, EACCES when it has no
 *		execute permission for us.
 */
static int
executable_file(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return errno == EACCES ? EPERM : errno;
	if (S_ISDIR(st.st_mode))
		return EISDIR;
	if (!S_ISREG(st.st_mode))
		return EINVAL;
	if (access(path, X_OK) != 0)
		return EACCES;
	return 0;
}

/*
 * command_error
 *		COMMAND cannot be run: say what and what to do, exit 2 (a usage
 *		error: nothing was claimed, no task changed).
 */
static void
command_error(const char *command, const char *what, const char *hint)
{
	fprintf(stderr, "hx_worker: cannot run command \"%s\": %s\n", command, what);
	fprintf(stderr, "HINT: %s\n", hint);
	exit(2);
}

/*
 * check_command
 *		Resolves COMMAND's first word as execvp() will when each task's
 *		command starts - as a path when it has a slash, else searched in
 *		PATH (the C library's default path when PATH is unset; an empty
 *		entry is the current directory) - and exits 2 with a message
 *		unless that finds an executable regular file.  Without this check a
 *		missing command would only show as every attempt of every claimed
 *		task failing.
 */
static void
check_command(const char *command)
{
	char		what[1200];
	char		hint[1200];
	int			err;

	if (*command == '\0')
		command_error(command, "the command name is empty",
					  "Put the command after --, as in: hx_worker --type summarize -- ./summarize.py");

	if (strchr(command, '/') != NULL)
	{
		err = executable_file(command);
		if (err == 0)
			return;
		if (err == EACCES)
		{
			snprintf(what, sizeof(what), "it is not executable");
			snprintf(hint, sizeof(hint),
					 "Make it executable (chmod +x %s; a script needs a #! line), or run it "
					 "through its interpreter, as in: hx_worker ... -- python3 %s", command, command);
		}
		else if (err == EPERM)
		{
			snprintf(what, sizeof(what), "a directory on its path cannot be searched by this user");
			snprintf(hint, sizeof(hint),
					 "Put the command where the user hx_worker runs as can reach it, or run hx_worker as its owner.");
		}
		else if (err == EISDIR || err == EINVAL)
		{
			snprintf(what, sizeof(what), "it is %s",
					 err == EISDIR ? "a directory" : "not a regular file");
			snprintf(hint, sizeof(hint), "COMMAND, the first word after --, must be an executable file.");
		}
		else
		{
			char		cwd[1024];

			snprintf(what, sizeof(what), "%s", strerror(err));
			if (command[0] != '/' && getcwd(cwd, sizeof(cwd)) != NULL)
				snprintf(hint, sizeof(hint),
						 "COMMAND, the first word after --, must be an executable file; "
						 "a relative path is taken from the current directory, %s.", cwd);
			else
				snprintf(hint, sizeof(hint),
						 "COMMAND, the first word after --, must be an executable file; check the path.");
		}
		command_error(command, what, hint);
	}
	else
	{
		const char *path = getenv("PATH");
		char		default_path[256];
		const char *dir;
		char	   *not_executable = NULL;	/* the first one found that is not */

		if (path == NULL)
		{
			if (confstr(_CS_PATH, default_path, sizeof(default_path)) == 0)
				strcpy(default_path, "/bin:/usr/bin");
			path = default_path;
		}
		for (dir = path;; dir++)
		{
			const char *end = strchr(dir, ':');
			size_t		len = end ? (size_t) (end - dir) : strlen(dir);
			char	   *candidate = malloc(len + strlen(command) + 3);

			if (len == 0)
				sprintf(candidate, "./%s", command);
			else
				sprintf(candidate, "%.*s/%s", (int) len, dir, command);
			err = executable_file(candidate);
			if (err == 0)
			{
				free(candidate);
				free(not_executable);
				return;
			}
			if (err == EACCES && not_executable == NULL)
				not_executable = candidate;
			else
				free(candidate);
			if (end == NULL)
				break;
			dir = end;
		}
		if (not_executable)
		{
			snprintf(what, sizeof(what), "%.1000s, found in PATH, is not executable", not_executable);
			snprintf(hint, sizeof(hint),
					 "Make it executable (chmod +x %.1000s; a script needs a #! line), "
					 "or give the path of another one.", not_executable);
		}
		else
		{
			snprintf(what, sizeof(what), "not found in PATH (%.1000s)", path);
			snprintf(hint, sizeof(hint),
					 "Install it, give its path (./%s for one in the current directory), "
					 "or add its directory to PATH.", command);
		}
		command_error(command, what, hint);
	}
}

/*
 * hxw_parse_options
 *		Fills hxw_opts from argv, or exits with a message.
 */
void
hxw_parse_options(int argc, char **argv)
{
	enum
	{
		OPT_NOOP = 1000, OPT_COST_FIELD, OPT_UNIT_PRICE
	};
	static const struct option longopts[] = {
		{"dsn", required_argument, NULL, 'd'},
		{"type", required_argument, NULL, 't'},
		{"concurrency", required_argument, NULL, 'c'},
		{"timeout", required_argument, NULL, 'T'},
		{"lease", required_argument, NULL, 'l'},
		{"poll", required_argument, NULL, 'p'},
		{"batch", no_argument, NULL, 'b'},
		{"batch-size", required_argument, NULL, 'B'},
		{"noop", no_argument, NULL, OPT_NOOP},
		{"cost-field", required_argument, NULL, OPT_COST_FIELD},
		{"unit-price", required_argument, NULL, OPT_UNIT_PRICE},
		{"name", required_argument, NULL, 'n'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}
	};
	int			c;
	char		host[256];
	char	   *name;

	memset(&hxw_opts, 0, sizeof(hxw_opts));
	hxw_opts.dsn = "";
	hxw_opts.concurrency = 1;
	hxw_opts.timeout = 300;
	hxw_opts.lease = 60;
	hxw_opts.poll = 5;
	hxw_opts.batch_size = 1000;
	hxw_opts.types = calloc(argc + 1, sizeof(char *));

	/* "+": stop at the first non-option, so COMMAND's own flags are left alone */
	while ((c = getopt_long(argc, argv, "+d:t:c:T:l:p:bB:n:vh", longopts, NULL)) != -1)
	{
		switch (c)
		{
			case 'd':
				hxw_opts.dsn = optarg;
				break;
			case 't':
				if (*optarg == '\0')
					usage_error("--type must not be empty%s", "");
				hxw_opts.types[hxw_opts.ntypes++] = optarg;
				break;
			case 'c':
				hxw_opts.concurrency = (int) parse_number("--concurrency", optarg, 1, 1000, true);
				break;
			case 'T':
				hxw_opts.timeout = parse_number("--timeout", optarg, 0.001, 86400 * 7, false);
				break;
			case 'l':
				hxw_opts.lease = parse_number("--lease", optarg, 0.5, 86400, false);
				break;
			case 'p':
				hxw_opts.poll = parse_number("--poll", optarg, 0.001, 3600, false);
				break;
			case 'b':
				hxw_opts.batch = true;
				break;
			case 'B':
				hxw_opts.batch_size = (int) parse_number("--batch-size", optarg, 1, 10000, true);
				break;
			case OPT_NOOP:
				hxw_opts.noop = true;
				break;
			case OPT_COST_FIELD:
				if (*optarg == '\0')
					usage_error("--cost-field must not be empty%s", "");
				hxw_opts.cost_field = optarg;
				break;
			case OPT_UNIT_PRICE:
				if (!valid_unit_price(optarg))
					usage_error("invalid value \"%s\" for --unit-price (a non-negative decimal "
								"number, such as 0.000002 or 2e-6, exponent at most 100)", optarg);
				hxw_opts.unit_price = optarg;
				break;
			case 'n':
				if (*optarg == '\0')
					usage_error("--name must not be empty%s", "");
				hxw_opts.name = optarg;
				break;
			case 'v':
				hxw_opts.verbose++;
				break;
			case 'h':
				fputs(usage_text, stdout);
				exit(0);
			default:
				fprintf(stderr, "Try \"hx_worker --help\" for more information.\n");
				exit(2);
		}
	}
	if (optind < argc)
		hxw_opts.command = &argv[optind];

	if (hxw_opts.noop && hxw_opts.command != NULL)
		usage_error("--noop takes no COMMAND (got \"%s\")", hxw_opts.command[0]);
	if (hxw_opts.noop && hxw_opts.batch)
		usage_error("--noop and --batch do not go together%s", "");
	if (!hxw_opts.noop && hxw_opts.command == NULL)
		usage_error("no COMMAND given%s: put it after --, as in: hx_worker --type summarize -- ./summarize.py",
					"");
	if (hxw_opts.unit_price != NULL && hxw_opts.cost_field == NULL)
		usage_error("--unit-price %s needs --cost-field (the result field that counts the units)",
					hxw_opts.unit_price);
	if (hxw_opts.command != NULL)
		check_command(hxw_opts.command[0]);

	if (hxw_opts.name == NULL)
	{
		if (gethostname(host, sizeof(host)) != 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		name = malloc(strlen(host) + 40);
		sprintf(name, "hx_worker@%s:%d", host, (int) getpid());
		hxw_opts.name = name;
	}
}
