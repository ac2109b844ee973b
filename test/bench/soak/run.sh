#!/usr/bin/env bash
#
# test/bench/soak/run.sh - `BENCH=soak make bench`: does the queue stay
# bounded under a steady load with retention on, without a manual VACUUM?
#
# On one throwaway server, for SOAK_MINUTES (default 30): every second,
# SOAK_RATE tasks (default 2000) are submitted in one transaction, a fifth
# of them batch tasks for a window that the script opens every minute, the
# rest stream tasks with a no-op handler.  hybridexec.retention is
# SOAK_RETENTION (default 2min), so the first retention cycle is over after
# a few minutes.  Every SOAK_EVERY seconds (default 30) one line: tasks
# submitted and done, live rows in hx_task (moved tasks included), dead
# tuples, the total size of the queue's tables and indexes (hx_task,
# hx_task_history, hx_error, hx_task_source and their indexes and TOAST),
# the ledger's size (it keeps a row per attempt by design), and autovacuum
# runs on hx_task and hx_task_history so far.  The last
# lines compare the size after the first retention cycle with the largest
# size seen after it.  Figures only: nothing passes or fails on them.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/../../.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

MINUTES=${SOAK_MINUTES:-30}
RATE=${SOAK_RATE:-2000}
RETENTION=${SOAK_RETENTION:-2min}
EVERY=${SOAK_EVERY:-30}

hx_install_deps
hx_build_install "$here"

dir=$(mktemp -d /tmp/hybridexec-bench-soak.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; hx_tmp_stop' EXIT
# huge pages for shared memory unless HUGE_PAGES=off (scripts/pgtmp.sh)
export HX_TMP_HUGE_PAGES=${HUGE_PAGES:-on}
hx_tmp_start "$dir" "hybridexec.retention = '$RETENTION'"
psqlq() { hx_tmp_psql -At "$@"; }

psqlq <<SQL >/dev/null 2>&1
CREATE EXTENSION hybridexec;
CREATE FUNCTION soak_nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
CREATE FUNCTION soak_nop_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS 'SELECT ps';
SELECT hx_register('soak_stream', 'soak_nop(jsonb)');
SELECT hx_register('soak_batch', batch_handler => 'soak_nop_batch(jsonb[])');
INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('soak', '0 0 1 1 *', 5000);
INSERT INTO hx_rule (name, position, task_type, route, window_name)
VALUES ('soak-batch', 1, 'soak_batch', 'batch', 'soak');
SQL

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
echo "machine: $(nproc) cores, ${cpu:-unknown cpu}; load average at start: $(cut -d' ' -f1-3 /proc/loadavg); huge pages $HX_TMP_HUGE"
echo "soak: $RATE tasks/s (a fifth batch, a window opened every minute) for $MINUTES min, hybridexec.retention = $RETENTION, autovacuum as configured on the tables (no manual VACUUM)"

batch=$((RATE / 5))
stream=$((RATE - batch))
# the load: one transaction a second; a window run every minute
(
	end=$((SECONDS + MINUTES * 60))
	next=$SECONDS
	while [ $SECONDS -lt $end ]; do
		psqlq -c "SELECT count(*) FROM hx_submit_batch('soak_stream', (SELECT array_agg('{}'::jsonb) FROM generate_series(1, $stream)), origin => 'user')" \
			-c "SELECT count(*) FROM hx_submit_batch('soak_batch', (SELECT array_agg('{}'::jsonb) FROM generate_series(1, $batch)))" >/dev/null
		next=$((next + 1))
		while [ $SECONDS -lt $next ]; do sleep 0.05; done
	done
) &
load=$!
(
	while sleep 60; do psqlq -c "SELECT hx_run_window('soak')" >/dev/null 2>&1 || true; done
) &

sizes="SELECT (SELECT count(*) FROM hx_cost WHERE outcome = 'done'),
			  (SELECT count(*) FROM hx_task),
			  (SELECT sum(n_dead_tup) FROM pg_stat_user_tables WHERE relname IN ('hx_task', 'hx_task_history')),
			  (SELECT sum(pg_total_relation_size(c)) FROM unnest(ARRAY['hx_task', 'hx_task_history', 'hx_error', 'hx_task_source']::regclass[]) c),
			  pg_total_relation_size('hx_cost_attempt') + pg_total_relation_size('hx_cost_chunk'),
			  (SELECT sum(autovacuum_count) FROM pg_stat_user_tables WHERE relname IN ('hx_task', 'hx_task_history'))"
printf '%8s %10s %10s %10s %12s %12s %12s\n' elapsed_s done hx_task_rows dead_tup queue_bytes ledger_bytes autovacuums
retention_s=$(psqlq -c "SELECT extract(epoch FROM '$RETENTION'::interval)::int")
first_cycle=$((retention_s + 120))
after_first=""
max_after=0
start=$SECONDS
while kill -0 $load 2>/dev/null; do
	sleep "$EVERY"
	IFS='|' read -r done rows dead queue ledger avac < <(psqlq -c "$sizes")
	el=$((SECONDS - start))
	printf '%8d %10d %10d %10d %12d %12d %12d\n' "$el" "$done" "$rows" "$dead" "$queue" "$ledger" "$avac"
	if [ $el -ge $first_cycle ]; then
		[ -z "$after_first" ] && after_first=$queue
		[ "$queue" -gt "$max_after" ] && max_after=$queue
	fi
done
echo "queue tables and indexes: $((after_first / 1048576)) MB after the first retention cycle, at most $((max_after / 1048576)) MB after it"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
