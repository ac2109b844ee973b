/*-------------------------------------------------------------------------
 *
 * child.c
 *	  Running COMMAND: fork/exec with stdin, stdout and stderr on
 *	  non-blocking pipes that the caller's poll() loop serves; a timeout
 *	  kills the command's whole process group.
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hx_worker.h"

/* stdout larger than this is a failure (protects the worker's memory) */
#define HXW_MAX_STDOUT	(64 * 1024 * 1024)
/* how much of stderr is kept for the error message */
#define HXW_STDERR_TAIL	2000

/*
 * hxw_buf_append
 *		Appends data; with keep_tail > 0 only the last keep_tail bytes are
 *		kept.
 */
void
hxw_buf_append(HxwBuf *buf, const char *data, size_t len, size_t keep_tail)
{
	if (buf->len + len + 1 > buf->cap)
	{
		size_t		cap = buf->cap ? buf->cap : 4096;

		while (cap < buf->len + len + 1)
			cap *= 2;
		buf->data = realloc(buf->data, cap);
		if (buf->data == NULL)
		{
			hxw_log("out of memory");
			exit(1);
		}
		buf->cap = cap;
	}
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
	buf->data[buf->len] = '\0';
	if (keep_tail > 0 && buf->len > keep_tail)
	{
		memmove(buf->data, buf->data + buf->len - keep_tail, keep_tail);
		buf->len = keep_tail;
		buf->data[buf->len] = '\0';
	}
}

/*
 * hxw_buf_free
 *		Releases a buffer and leaves it empty.
 */
void
hxw_buf_free(HxwBuf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}

/*
 * hxw_close_pipes
 *		Closes both ends of the three pipes of a child (those opened).
 */
static void
hxw_close_pipes(int pipes[3][2])
{
	int			i;

	for (i = 0; i < 6; i++)
		if (pipes[i / 2][i % 2] >= 0)
			close(pipes[i / 2][i % 2]);
}

/*
 * hxw_child_start
 *		Starts argv (searched in PATH) with env added to the environment,
 *		input on its stdin; the command gets its own process group so a
 *		timeout kills everything it started.  Returns false (the reason
 *		logged) when it could not even fork.
 */
bool
hxw_child_start(HxwChild *child, char **argv, char **env,
				const char *input, size_t input_len, double timeout)
{
	int			pipes[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
	int		   *in = pipes[0],
			   *out = pipes[1],
			   *err = pipes[2];
	pid_t		pid;

	memset(child, 0, sizeof(*child));
	if (pipe(in) != 0 || pipe(out) != 0 || pipe(err) != 0)
	{
		hxw_log("could not create pipes: %s", strerror(errno));
		hxw_close_pipes(pipes);
		return false;
	}
	pid = fork();
	if (pid < 0)
	{
		hxw_log("could not fork: %s", strerror(errno));
		hxw_close_pipes(pipes);
		return false;
	}
	if (pid == 0)
	{
		char	  **e;
		sigset_t	none;

		setpgid(0, 0);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		hxw_close_pipes(pipes);
		for (e = env; e && *e; e++)
			putenv(*e);
		execvp(argv[0], argv);
		fprintf(stderr, "could not run \"%s\": %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	setpgid(pid, pid);
	close(in[0]);
	close(out[1]);
	close(err[1]);
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	fcntl(in[1], F_SETFD, FD_CLOEXEC);
	fcntl(out[0], F_SETFD, FD_CLOEXEC);
	fcntl(err[0], F_SETFD, FD_CLOEXEC);

	child->pid = pid;
	child->in_fd = in[1];
	child->out_fd = out[0];
	child->err_fd = err[0];
	child->input = input;
	child->input_len = input_len;
	child->deadline = hxw_now() + timeout;
	if (input_len == 0)
	{
		close(child->in_fd);
		child->in_fd = -1;
	}
	return true;
}

/*
 * hxw_child_pollfds
 *		The child's open pipes as pollfd entries (at most 3); returns how
 *		many were added.
 */
int
hxw_child_pollfds(HxwChild *child, struct pollfd *fds, int max)
{
	int			n = 0;

	if (child->in_fd >= 0 && n < max)
	{
		fds[n].fd = child->in_fd;
		fds[n].events = POLLOUT;
		n++;
	}
	if (child->out_fd >= 0 && n < max)
	{
		fds[n].fd = child->out_fd;
		fds[n].events = POLLIN;
		n++;
	}
	if (child->err_fd >= 0 && n < max)
	{
		fds[n].fd = child->err_fd;
		fds[n].events = POLLIN;
		n++;
	}
	return n;
}

/*
 * read_pipe
 *		Reads what a pipe has; closes it at EOF (or error).
 */
static void
read_pipe(int *fd, HxwBuf *buf, size_t keep_tail, bool discard)
{
	char		data[65536];

	for (;;)
	{
		ssize_t		n = read(*fd, data, sizeof(data));

		if (n > 0)
		{
			if (!discard)
				hxw_buf_append(buf, data, n, keep_tail);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(*fd);
		*fd = -1;
		return;
	}
}

/*
 * hxw_child_io
 *		Moves whatever can move without blocking: input to stdin, stdout
 *		and stderr into their buffers; reaps the child once it exited; kills
 *		it when past its deadline.
 */
void
hxw_child_io(HxwChild *child)
{
	if (child->pid == 0)
		return;
	while (child->in_fd >= 0)
	{
		ssize_t		n = write(child->in_fd, child->input + child->input_off,
							  child->input_len - child->input_off);

		if (n > 0)
		{
			child->input_off += n;
			if (child->input_off >= child->input_len)
			{
				close(child->in_fd);
				child->in_fd = -1;
			}
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		/* EPIPE: the command does not read its stdin; that is its business */
		close(child->in_fd);
		child->in_fd = -1;
	}
	if (child->out_fd >= 0)
		read_pipe(&child->out_fd, &child->out, 0, child->discard_out);
	if (child->err_fd >= 0)
		read_pipe(&child->err_fd, &child->err, HXW_STDERR_TAIL, false);
	if (child->out.len > HXW_MAX_STDOUT && !child->timed_out)
	{
		hxw_log("command printed more than %d bytes on stdout; killed", HXW_MAX_STDOUT);
		hxw_child_kill(child);
	}
	if (!child->exited)
	{
		int			status;
		pid_t		r = waitpid(child->pid, &status, WNOHANG);

		if (r == child->pid)
		{
			child->exited = true;
			child->status = status;
			/* a grandchild may hold the pipes open: do not wait for it */
			if (child->in_fd >= 0)
			{
				close(child->in_fd);
				child->in_fd = -1;
			}
		}
	}
	if (!child->exited && !child->timed_out && hxw_now() >= child->deadline)
	{
		child->timed_out = true;
		hxw_child_kill(child);
	}
}

/*
 * hxw_child_done
 *		True once the command exited and its output pipes are drained (or,
 *		when something it started keeps them open, once it exited and was
 *		killed).
 */
bool
hxw_child_done(HxwChild *child)
{
	if (!child->exited)
		return false;
	if (child->out_fd >= 0 || child->err_fd >= 0)
	{
		/* the command is gone; whatever it left running goes too */
		kill(-child->pid, SIGKILL);
		if (child->out_fd >= 0)
			read_pipe(&child->out_fd, &child->out, 0, child->discard_out);
		if (child->err_fd >= 0)
			read_pipe(&child->err_fd, &child->err, HXW_STDERR_TAIL, false);
		return child->out_fd < 0 && child->err_fd < 0;
	}
	return true;
}

/*
 * hxw_child_kill
 *		SIGKILL to the command's process group.
 */
void
hxw_child_kill(HxwChild *child)
{
	if (child->pid > 0)
		kill(-child->pid, SIGKILL);
}

/*
 * hxw_child_failure
 *		NULL when the command succeeded, else a malloc'd message: timeout,
 *		signal or exit status, with the tail of stderr.
 */
char *
hxw_child_failure(HxwChild *child)
{
	char		head[200];
	const char *tail = child->err.data ? child->err.data : "";
	char	   *msg;
	size_t		len;

	if (child->timed_out)
		snprintf(head, sizeof(head), "command timed out after %g seconds and was killed",
				 hxw_opts.timeout);
	else if (WIFSIGNALED(child->status))
		snprintf(head, sizeof(head), "command was killed by signal %d", WTERMSIG(child->status));
	else if (WIFEXITED(child->status) && WEXITSTATUS(child->status) != 0)
		snprintf(head, sizeof(head), "command exited with status %d", WEXITSTATUS(child->status));
	else
		return NULL;

	/* strip the trailing newline of stderr */
	len = strlen(tail);
	while (len > 0 && (tail[len - 1] == '\n' || tail[len - 1] == '\r'))
		len--;
	msg = malloc(strlen(head) + len + 4);
	if (len > 0)
		sprintf(msg, "%s: %.*s", head, (int) len, tail);
	else
		strcpy(msg, head);
	return msg;
}

/*
 * hxw_child_reset
 *		Frees what the child's slot holds and marks it free.
 */
void
hxw_child_reset(HxwChild *child)
{
	if (child->in_fd >= 0)
		close(child->in_fd);
	if (child->out_fd >= 0)
		close(child->out_fd);
	if (child->err_fd >= 0)
		close(child->err_fd);
	hxw_buf_free(&child->out);
	hxw_buf_free(&child->err);
	memset(child, 0, sizeof(*child));
	child->in_fd = child->out_fd = child->err_fd = -1;
}
