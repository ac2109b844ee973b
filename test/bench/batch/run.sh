#!/usr/bin/env bash
#
# test/bench/batch/run.sh - batch throughput, side by side in one run on
# one throwaway server:
#
#   hybridexec batch   BATCH_N no-op tasks queued for a window, run by
#                      hx_run_window() through a batch handler in chunks
#                      of BATCH_CHUNK (one batch worker, and PARALLEL
#                      workers sharing the run): tasks/s over the run
#   hybridexec stream  the same N no-op tasks through the stream path (a
#                      per-task handler, hybridexec.stream_workers
#                      workers): tasks/s from the start of the submit to
#                      the last task done
#   PgQ                the same N events inserted into a PgQ queue in one
#                      transaction, one tick, then consumed batch by batch
#                      (pgq.next_batch / get_batch_events / finish_batch)
#                      by a SQL consumer: events/s of the consumption
#
# A third batch run per round, one worker with the ledger off (its
# trigger on hx_task disabled), prices the chunks' bookings per task.
# Submitting (hx_submit_batch) and PgQ's inserts are timed too.  Each
# figure is the median of ROUNDS rounds.  Figures only: nothing here
# passes or fails on a timing.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/../../.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

N=${BATCH_N:-200000}
CHUNK=${BATCH_CHUNK:-5000}
PARALLEL=${PARALLEL:-2}
ROUNDS=${ROUNDS:-3}

hx_install_deps
hx_build_install "$here"
pgq_pkg="postgresql-${HX_PG_MAJOR}-pgq3"
if ! dpkg -s "$pgq_pkg" >/dev/null 2>&1; then
	hx_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pgq_pkg" >/dev/null
fi

dir=$(mktemp -d /tmp/hybridexec-bench-batch.XXXXXX)
trap 'hx_tmp_stop' EXIT
# shared_buffers 1GB (wal_buffers follows: 16MB), as a server for this much
# work would have: 200,000 tasks with their history and indexes take about
# 150 MB, more than the default 128 MB.  PgQ runs on the same server.
# SHARED_BUFFERS=128MB gives the default's figures.
# huge pages for shared memory unless HUGE_PAGES=off (scripts/pgtmp.sh)
export HX_TMP_HUGE_PAGES=${HUGE_PAGES:-on}
hx_tmp_start "$dir" "hybridexec.batch_workers = 4" "hybridexec.batch_nice = 0" \
	"shared_buffers = '${SHARED_BUFFERS:-1GB}'"
psqlq() { hx_tmp_psql -At "$@"; }
. "$here/test/bench/rounds.sh"

psqlq <<SQL >/dev/null
CREATE EXTENSION hybridexec;
CREATE EXTENSION pgq;
CREATE FUNCTION bench_nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p';
CREATE FUNCTION bench_nop_batch(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS 'SELECT ps';
SELECT hx_register('bench_batch', batch_handler => 'bench_nop_batch(jsonb[])');
SELECT hx_register('bench_stream', handler => 'bench_nop(jsonb)');
INSERT INTO hx_window (name, schedule, chunk_size, parallel) VALUES
	('bench1', '0 0 1 1 *', $CHUNK, 1), ('bench$PARALLEL', '0 0 1 1 *', $CHUNK, $PARALLEL);
SELECT pgq.create_queue('bench');
SELECT pgq.register_consumer('bench', 'bench_consumer');
CREATE FUNCTION bench_pgq_consume() RETURNS bigint LANGUAGE plpgsql AS \$\$
DECLARE
	b bigint;
	n bigint := 0;
	k bigint;
BEGIN
	LOOP
		b := pgq.next_batch('bench', 'bench_consumer');
		EXIT WHEN b IS NULL;
		SELECT count(*) INTO k FROM pgq.get_batch_events(b);
		n := n + k;
		PERFORM pgq.finish_batch(b);
	END LOOP;
	RETURN n;
END \$\$;
SQL

# seconds between two clock_timestamp() reads around a statement
timed() {
	psqlq -c "SELECT clock_timestamp()" -c "$1" -c "SELECT clock_timestamp()" |
		python3 -c 'import sys, datetime
ts = [l.strip() for l in sys.stdin if l.strip()]
f = lambda s: datetime.datetime.fromisoformat(s.replace(" ", "T").split("+")[0])
print((f(ts[-1]) - f(ts[0])).total_seconds())'
}

# one window run over N fresh tasks; prints submit seconds, run seconds
# (books=off: with the ledger off, its trigger on hx_task disabled, to
# price the chunks' bookings)
batch_round() {
	local window=$1 books=${2:-on} submit run secs
	psqlq -c "DELETE FROM hx_task; DELETE FROM hx_rule WHERE name = 'bench'" >/dev/null
	psqlq -c "INSERT INTO hx_rule (name, position, task_type, route, window_name) VALUES ('bench', 1, 'bench_batch', 'batch', '$window')" >/dev/null
	psqlq -c "VACUUM ANALYZE hx_task, hx_task_history" >/dev/null
	submit=$(timed "SELECT count(*) FROM hx_submit_batch('bench_batch', ARRAY(SELECT jsonb_build_object('i', g) FROM generate_series(1, $N) g))")
	hx_tmp_settle
	[ "$books" = on ] || psqlq -c "ALTER TABLE hx_task DISABLE TRIGGER hx_cost_book" >/dev/null
	run=$(psqlq -c "SELECT hx_run_window('$window')")
	secs=$(hx_bench_run_seconds "$run" "$N")
	psqlq -c "ALTER TABLE hx_task ENABLE TRIGGER hx_cost_book" >/dev/null
	echo "$submit $secs"
}

# N tasks through the stream path; prints seconds from commit to all done
stream_round() {
	local t0 t1
	psqlq -c "DELETE FROM hx_task" -c "VACUUM ANALYZE hx_task, hx_task_history" >/dev/null
	hx_tmp_settle
	t0=$(date +%s.%N)
	psqlq -c "SELECT count(hx_submit('bench_stream', jsonb_build_object('i', g), origin => 'user')) FROM generate_series(1, $N) g" >/dev/null
	t1=$(hx_bench_stream_done bench_stream)
	python3 -c "print($t1 - $t0)"
}

# N events into PgQ, one tick, consumed; prints insert seconds, consume seconds
pgq_round() {
	local ins con
	hx_tmp_settle
	ins=$(timed "SELECT count(pgq.insert_event('bench', 'nop', g::text)) FROM generate_series(1, $N) g")
	psqlq -c "SELECT pgq.ticker('bench')" >/dev/null
	# a second tick after the events: the batch between the two holds them
	psqlq -c "SELECT pg_sleep(0.01); SELECT pgq.force_tick('bench'); SELECT pgq.ticker('bench')" >/dev/null
	con=$(timed "SELECT bench_pgq_consume()")
	echo "$ins $con"
}

echo "machine: $(nproc) cores; PostgreSQL $(hx_as_user postgres --version | awk '{print $3}'); N=$N, chunk $CHUNK, rounds $ROUNDS, shared_buffers $(psqlq -c 'SHOW shared_buffers'), wal_buffers $(psqlq -c 'SHOW wal_buffers'), huge pages $HX_TMP_HUGE"
b1=() b0=() bp=() st=() pq=()
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS" >&2
	b1+=("$(batch_round bench1)")
	b0+=("$(batch_round bench1 off)")
	bp+=("$(batch_round "bench$PARALLEL")")
	st+=("$(stream_round)")
	pq+=("$(pgq_round)")
done
psqlq -c "DELETE FROM hx_task" >/dev/null

python3 - "$N" "$PARALLEL" "${b1[*]}" "${bp[*]}" "${st[*]}" "${pq[*]}" "${b0[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); par = sys.argv[2]
def pairs(s):
    v = [float(x) for x in s.split()]
    return v[0::2], v[1::2]
b1_sub, b1_run = pairs(sys.argv[3])
bp_sub, bp_run = pairs(sys.argv[4])
st = [float(x) for x in sys.argv[5].split()]
pq_ins, pq_con = pairs(sys.argv[6])
b0_sub, b0_run = pairs(sys.argv[7])
rate = lambda secs: n / statistics.median(secs)
rows = [
    ("hybridexec batch, 1 worker", rate(b1_run)),
    (f"hybridexec batch, {par} workers", rate(bp_run)),
    ("hybridexec stream path", rate(st)),
    ("PgQ consume (SQL consumer)", rate(pq_con)),
]
print()
print(f"{'processing ' + format(n, ',') + ' no-op tasks':36s}{'tasks/s':>12s}{'vs stream':>12s}{'vs PgQ':>10s}")
print("-" * 70)
for label, r in rows:
    print(f"{label:36s}{r:>12,.0f}{r / rate(st):>11.2f}x{r / rate(pq_con):>9.2f}x")
per_round = lambda secs: ", ".join(f"{n / x:,.0f}" for x in secs)
print(f"per round (tasks/s): 1 worker {per_round(b1_run)}; {par} workers {per_round(bp_run)}; stream {per_round(st)}")
print()
print(f"{'enqueueing':36s}{'tasks/s':>12s}")
print("-" * 48)
print(f"{'hx_submit_batch (classified)':36s}{rate(b1_sub + bp_sub):>12,.0f}")
print(f"{'pgq.insert_event':36s}{rate(pq_ins):>12,.0f}")
print()
book_us = (statistics.median(b1_run) - statistics.median(b0_run)) / n * 1e6
print(f"booking a chunk's tasks (ledger): {book_us:.2f} us per task "
      f"(1 worker: {rate(b1_run):,.0f} tasks/s with the ledger, {rate(b0_run):,.0f} without)")
print()
print("batch: tasks/s over the run (hx_window_run started_at..finished_at); stream: submit to last finished_at;")
print("PgQ: next_batch/get_batch_events/finish_batch over one batch of all events; medians of rounds.")
PY
