#!/usr/bin/env bash
#
# test/bench/flat/run.sh - `BENCH=flat make bench`: does the work cost the
# same per task however much of it there is?  On one throwaway server:
#
#   stream throughput   FLAT_SMALL (20,000) and then FLAT_N (1,000,000)
#                       no-op tasks submitted in one transaction, from the
#                       submit's commit until all are done (two stream
#                       workers)
#   batch throughput    the same numbers of tasks through a batch window
#                       (chunks of 5,000, one worker), over the run
#   stream latency      300 sequential submits on an idle server, submit to
#                       handler (test/bench/hx_bench.mjs, as in the stream
#                       benchmark), on an empty queue and then with
#                       FLAT_RETAINED (5,000,000) finished tasks kept in
#                       hx_task (inserted as done rows, as retention would
#                       keep a week of work)
#
# Before each measurement the queue is emptied, vacuumed and the server
# settled; the figures are medians of ROUNDS rounds (default 1: the large
# rounds take minutes).  The goals of issue 11: throughput on the large
# backlog within 15% of the small one, latency with the retained tasks
# within 10% of the empty queue's.  Figures only: nothing here passes or
# fails on a timing.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/../../.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

SMALL=${FLAT_SMALL:-20000}
BIG=${FLAT_N:-1000000}
RETAINED=${FLAT_RETAINED:-5000000}
ROUNDS=${ROUNDS:-1}
export GRAPHILE_DIR=${GRAPHILE_DIR:-/tmp/hx-bench-graphile}

hx_install_deps
hx_build_install "$here"
if ! command -v node >/dev/null 2>&1; then
	hx_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# the node-postgres client the latency measurement uses comes with it
bash "$here/test/bench/graphile/install.sh" "$GRAPHILE_DIR" >&2

dir=$(mktemp -d /tmp/hybridexec-bench-flat.XXXXXX)
trap 'hx_tmp_stop' EXIT
export HX_TMP_TCP=1
# huge pages for shared memory unless HUGE_PAGES=off (scripts/pgtmp.sh)
export HX_TMP_HUGE_PAGES=${HUGE_PAGES:-on}
hx_tmp_start "$dir" "hybridexec.batch_nice = 0" "max_wal_size = '4GB'"
psqlq() { hx_tmp_psql -At "$@"; }
. "$here/test/bench/rounds.sh"

psqlq <<SQL >/dev/null
SET client_min_messages = warning;
CREATE EXTENSION hybridexec;
CREATE FUNCTION bench_nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
CREATE FUNCTION bench_nop_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS 'SELECT ps';
SELECT hx_register('bench_stream', handler => 'bench_nop(jsonb)');
SELECT hx_register('bench_batch', batch_handler => 'bench_nop_batch(jsonb[])');
SELECT hx_register('bench_history');
INSERT INTO hx_window (name, schedule, chunk_size) VALUES ('flat', '0 0 1 1 *', 5000);
INSERT INTO hx_rule (name, position, task_type, route, window_name) VALUES ('flat', 1, 'bench_batch', 'batch', 'flat');
SQL

empty_queue() {
	psqlq -c "DELETE FROM hx_task WHERE task_type <> 'bench_history'" -c "VACUUM ANALYZE hx_task, hx_task_history" >/dev/null
	hx_tmp_settle
}

# n stream tasks; prints tasks/s from the submit's commit to the last one done
stream_round() {
	local n=$1 t0 t1
	empty_queue
	psqlq -c "SELECT count(*) FROM hx_submit_batch('bench_stream', (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, $n) g), origin => 'user')" >/dev/null
	t0=$(psqlq -c "SELECT extract(epoch FROM min(submitted_at)) FROM hx_task WHERE task_type = 'bench_stream'")
	t1=$(hx_bench_stream_done bench_stream)
	python3 -c "print(round($n / ($t1 - $t0)))"
}

# n batch tasks through the window; prints tasks/s over the run
batch_round() {
	local n=$1 run secs
	empty_queue
	psqlq -c "SELECT count(*) FROM hx_submit_batch('bench_batch', (SELECT array_agg(jsonb_build_object('i', g)) FROM generate_series(1, $n) g))" >/dev/null
	psqlq -c "VACUUM ANALYZE hx_task, hx_task_history" >/dev/null
	hx_tmp_settle
	run=$(psqlq -c "SELECT hx_run_window('flat')")
	secs=$(hx_bench_run_seconds "$run" "$n")
	python3 -c "print(round($n / $secs))"
}

# stream latency p50 (ms) by hx_bench.mjs (its throughput part kept small)
latency_round() {
	empty_queue
	DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres" THRU_N=1000 CLS_N=1000 \
		node "$here/test/bench/hx_bench.mjs" | python3 -c "import json, sys; print(json.load(sys.stdin)['lat_p50_ms'])"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "machine: $(nproc) cores; PostgreSQL $(hx_as_user postgres --version | awk '{print $3}'); load average at start: $(cut -d' ' -f1-3 /proc/loadavg); huge pages $HX_TMP_HUGE"
echo "flat: $SMALL vs $BIG tasks, $RETAINED finished tasks retained; rounds $ROUNDS (medians)"
ss=() sb=() bs=() bb=() le=() lr=()
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS: stream" >&2
	ss+=("$(stream_round "$SMALL")")
	sb+=("$(stream_round "$BIG")")
	echo "round $r/$ROUNDS: batch" >&2
	bs+=("$(batch_round "$SMALL")")
	bb+=("$(batch_round "$BIG")")
done
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS: latency, empty queue" >&2
	le+=("$(latency_round)")
done
echo "filling hx_task with $RETAINED finished tasks" >&2
psqlq -c "INSERT INTO hx_task (task_type, route, status, attempts, result, submitted_at, started_at, finished_at)
	SELECT 'bench_history', 'stream', 'done', 1, '{}', now(), now(), now() FROM generate_series(1, $RETAINED)" >/dev/null
psqlq -c "VACUUM ANALYZE hx_task, hx_task_history" >/dev/null
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS: latency, $RETAINED retained" >&2
	lr+=("$(latency_round)")
done

python3 - "$SMALL" "$BIG" "$RETAINED" "$(median "${ss[@]}")" "$(median "${sb[@]}")" \
	"$(median "${bs[@]}")" "$(median "${bb[@]}")" "$(median "${le[@]}")" "$(median "${lr[@]}")" <<'PY'
import sys
small, big, kept = (int(x) for x in sys.argv[1:4])
ss, sb, bs, bb, le, lr = (float(x) for x in sys.argv[4:10])
print(f"{'':34s}{small:>16,}{big:>16,}   change")
print(f"{'stream throughput (tasks/s)':34s}{ss:>16,.0f}{sb:>16,.0f}{100 * (sb - ss) / ss:>+8.0f}%")
print(f"{'batch throughput (tasks/s)':34s}{bs:>16,.0f}{bb:>16,.0f}{100 * (bb - bs) / bs:>+8.0f}%")
print(f"{'':34s}{'empty queue':>16s}{f'{kept:,} kept':>16s}")
print(f"{'stream latency p50 (ms)':34s}{le:>16.3f}{lr:>16.3f}{100 * (lr - le) / le:>+8.0f}%")
print("goals (issue 11): throughput within 15% of the small backlog's; latency within 10% of the empty queue's")
PY
