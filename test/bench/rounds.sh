#!/usr/bin/env bash
#
# test/bench/rounds.sh - waits that the batch and flat benchmarks share.
# Sourced after the caller has defined psqlq (psql -At on its server).
#

# hx_bench_run_seconds run n: waits (a poll with a deadline of 50 minutes)
# until window run "run" has ended, and prints how long it ran; fails
# unless it ended done with n tasks processed.
#
# Both waits poll from one session (hx_wait_run, or a DO loop): a new psql
# and backend every 50 ms took a tenth of this 2-core machine away from the
# workers being measured.
hx_bench_run_seconds() {
	local run=$1 n=$2 secs
	psqlq -c "SELECT hx_wait_run($run, '50 minutes')" >/dev/null
	secs=$(psqlq -c "SELECT extract(epoch FROM finished_at - started_at) FROM hx_window_run WHERE id = $run AND status = 'done' AND processed = $n")
	[ -n "$secs" ] || { echo "bench: run $run did not end done with $n tasks processed" >&2; return 1; }
	echo "$secs"
}

# hx_bench_stream_done task_type: waits (deadline: 50 minutes) until no task
# of the type is unfinished, and prints the epoch of the last one's
# finished_at; fails if some are still unfinished or did not end done.
# The poll names the unfinished statuses, so that it does not read
# hx_task_history (its CHECK constraint excludes it).
hx_bench_stream_done() {
	local type=$1
	psqlq -c "DO \$\$ BEGIN FOR i IN 1..60000 LOOP EXIT WHEN NOT EXISTS (SELECT 1 FROM hx_task WHERE task_type = '$type' AND status IN ('queued', 'running', 'failed')); PERFORM pg_sleep(0.05); END LOOP; END \$\$"
	[ "$(psqlq -c "SELECT NOT EXISTS (SELECT 1 FROM hx_task WHERE task_type = '$type' AND status IN ('queued', 'running', 'failed'))")" = t ] ||
		{ echo "bench: $type tasks did not finish" >&2; return 1; }
	[ "$(psqlq -c "SELECT NOT EXISTS (SELECT 1 FROM hx_task WHERE task_type = '$type' AND status <> 'done')")" = t ] ||
		{ echo "bench: some $type tasks did not end done" >&2; return 1; }
	psqlq -c "SELECT extract(epoch FROM max(finished_at)) FROM hx_task WHERE task_type = '$type'"
}
