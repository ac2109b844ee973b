/*-------------------------------------------------------------------------
 *
 * hx_worker.h
 *	  Shared declarations of hx_worker, the external executor of hybridexec:
 *	  a libpq client that claims tasks (hx_claim), runs a command for each
 *	  (or one command per JSONL batch) and reports the outcome
 *	  (hx_complete / hx_fail), with leases kept alive by heartbeats.
 *
 *	  hx_worker.c	connection, signals, logging, main()
 *	  options.c		command-line flags and --help; COMMAND must be runnable
 *	  child.c		running COMMAND: fork/exec, pipes, timeouts
 *	  stream.c		stream mode: LISTEN hx_stream, one command per task
 *	  batch.c		batch mode: one JSONL file per claimed batch
 *
 *-------------------------------------------------------------------------
 */
#ifndef HX_WORKER_H
#define HX_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <poll.h>
#include <sys/types.h>

#include "libpq-fe.h"

/* what the command line says */
typedef struct HxwOptions
{
	const char *dsn;			/* libpq connection string ("" = environment) */
	char	  **types;			/* --type, repeatable; NULL = every external type */
	int			ntypes;
	int			concurrency;	/* commands running at once (stream mode) */
	double		timeout;		/* seconds a command may run */
	double		lease;			/* seconds of each lease */
	double		poll;			/* seconds between claims without a NOTIFY */
	bool		batch;			/* --batch: JSONL files */
	int			batch_size;		/* tasks per JSONL file */
	bool		noop;			/* built-in executor that returns {} */
	const char *cost_field;		/* result field holding the attempt's cost */
	const char *unit_price;		/* --unit-price: cost = field * this (numeric
								 * text, checked), or NULL: the field is money */
	const char *name;			/* executor name recorded in hx_task.executor */
	int			verbose;
	char	  **command;		/* COMMAND ARGS..., NULL-terminated */
} HxwOptions;

/* a growing byte buffer */
typedef struct HxwBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
} HxwBuf;

/* one running command */
typedef struct HxwChild
{
	pid_t		pid;			/* 0 = slot free */
	int			in_fd;			/* its stdin, -1 once all was written */
	int			out_fd;			/* its stdout, -1 at EOF */
	int			err_fd;			/* its stderr, -1 at EOF */
	const char *input;			/* what to write to stdin */
	size_t		input_len;
	size_t		input_off;
	HxwBuf		out;			/* all of stdout (unless discard_out) */
	HxwBuf		err;			/* the tail of stderr */
	bool		discard_out;
	double		deadline;		/* killed at this time */
	bool		timed_out;
	bool		exited;
	int			status;			/* from waitpid, once exited */
} HxwChild;

/* global state (hx_worker.c) */
extern HxwOptions hxw_opts;
extern PGconn *hxw_conn;
extern volatile int hxw_stopping;
extern int	hxw_signal_fd;		/* read end of the self-pipe */

/* hx_worker.c */
extern double hxw_now(void);
extern void hxw_log(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern void hxw_debug(const char *fmt,...) __attribute__((format(printf, 1, 2)));
extern bool hxw_connected(void);
extern bool hxw_ensure_connected(void);
extern PGresult *hxw_query(const char *sql, int nparams, const char *const *values);
extern bool hxw_result_ok(PGresult *res);
extern const char *hxw_sqlstate(PGresult *res);
extern void hxw_drain_signals(void);
extern const char *hxw_types_array(void);

/* options.c */
extern void hxw_parse_options(int argc, char **argv);

/* child.c */
extern void hxw_buf_append(HxwBuf *buf, const char *data, size_t len, size_t keep_tail);
extern void hxw_buf_free(HxwBuf *buf);
extern bool hxw_child_start(HxwChild *child, char **argv, char **env,
							const char *input, size_t input_len, double timeout);
extern int	hxw_child_pollfds(HxwChild *child, struct pollfd *fds, int max);
extern void hxw_child_io(HxwChild *child);
extern bool hxw_child_done(HxwChild *child);
extern void hxw_child_kill(HxwChild *child);
extern char *hxw_child_failure(HxwChild *child);
extern void hxw_child_reset(HxwChild *child);

/* stream.c, batch.c */
extern int	hxw_stream_main(void);
extern int	hxw_batch_main(void);

#endif							/* HX_WORKER_H */
