#!/usr/bin/env bash
#
# test/bench/run.sh - `make bench`: hybridexec's stream path, and its
# external executor (hx_worker --noop, see hx_worker_bench.mjs), side by
# side with graphile-worker, on one throwaway server, in one run; then the
# batch benchmark (test/bench/batch/run.sh: batch windows vs the stream
# path vs PgQ).  BENCH=stream or BENCH=batch runs one of them only;
# BENCH=soak runs the long steady-load test of the queue's size
# (test/bench/soak/run.sh, 30 minutes by default), which "all" leaves out,
# and BENCH=flat the same work on a small and a large backlog, and latency
# with millions of finished tasks kept (test/bench/flat/run.sh, minutes).
# After the stream figures: the ledger's booking cost per attempt
# (ledger.sql) and its roll-up cost per booking (rollup.sql).
#
#   latency:    LAT_N sequential submits on an idle server, each its own
#               transaction: time from just before the client sends the
#               submit to the handler's first statement (p50/p95/p99)
#   throughput: THRU_N no-op tasks submitted in one transaction: time from
#               the submit until all are done
#   hx_await:   AWAIT_N tasks, each awaited by a second session: time from
#               the task's finished_at to hx_await returning (p50/p99)
#
# graphile-worker (npm) is installed into a scratch folder; both sides use
# the same Node.js client library, so the figures compare like with like.
# Figures only: nothing here passes or fails on a timing.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
BENCH=${BENCH:-all}
if [ "$BENCH" = batch ]; then
	exec bash "$here/test/bench/batch/run.sh"
fi
if [ "$BENCH" = soak ]; then
	exec bash "$here/test/bench/soak/run.sh"
fi
if [ "$BENCH" = flat ]; then
	exec bash "$here/test/bench/flat/run.sh"
fi
if [ "$BENCH" = proxy ]; then
	exec bash "$here/test/bench/proxy/run.sh"
fi
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

export LAT_N=${LAT_N:-300}
export THRU_N=${THRU_N:-20000}
export GRAPHILE_DIR=${GRAPHILE_DIR:-/tmp/hx-bench-graphile}
ROUNDS=${ROUNDS:-3}

hx_install_deps
hx_build_install "$here"
if ! command -v node >/dev/null 2>&1; then
	hx_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
bash "$here/test/bench/graphile/install.sh" "$GRAPHILE_DIR" >&2

dir=$(mktemp -d /tmp/hybridexec-bench.XXXXXX)
trap 'hx_tmp_stop' EXIT
export HX_TMP_TCP=1
# huge pages for shared memory unless HUGE_PAGES=off (scripts/pgtmp.sh)
export HX_TMP_HUGE_PAGES=${HUGE_PAGES:-on}
hx_tmp_start "$dir" "hybridexec.database_name = 'bench_hx'" "max_connections = 100"
hx_tmp_psql -c "CREATE DATABASE bench_hx" -c "CREATE DATABASE bench_graphile"

# the stream workers retry connecting to bench_hx every 5 s until it exists
for _ in $(seq 1 100); do
	n=$(hx_tmp_psql -At -d bench_hx -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hybridexec stream worker' AND datname = 'bench_hx'")
	[ "$n" -ge 1 ] && break
	sleep 0.2
done

cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
echo "machine: $(nproc) cores, ${cpu:-unknown cpu}; PostgreSQL $(hx_as_user postgres --version | awk '{print $3}'); node $(node --version)"
echo "settings: LAT_N=$LAT_N THRU_N=$THRU_N, synchronous_commit=on, fsync=on (defaults), huge pages $HX_TMP_HUGE"

# Before each peer's turn the server settles (hx_tmp_settle), so neither
# peer measures the other's aftermath.
results=()
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS: hybridexec" >&2
	hx_tmp_settle
	results+=("$(DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/bench_hx" node "$here/test/bench/hx_bench.mjs")")
	echo "round $r/$ROUNDS: graphile-worker" >&2
	hx_tmp_settle
	results+=("$(DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/bench_graphile" node "$here/test/bench/graphile/bench.mjs")")
	echo "round $r/$ROUNDS: hx_worker (external executor)" >&2
	hx_tmp_settle
	results+=("$(DATABASE_URL="postgres://postgres@127.0.0.1:$PGPORT/bench_hx" \
		HX_WORKER="$("$PG_CONFIG" --bindir)/hx_worker" node "$here/test/bench/hx_worker_bench.mjs")")
done

printf '%s\n' "${results[@]}" | python3 "$here/test/bench/report.py"

# the books: what the ledger trigger costs per booked attempt, finished by
# UPDATE (as external executors' outcomes are) 64 and 5,000 per statement,
# and what rolling old bookings up costs
# (hybridexec.ledger_retention), in a scratch database without workers
echo
echo "ledger: booking cost per attempt (best of 3 rounds of 20,000; with the trigger minus without)"
hx_tmp_psql -c "CREATE DATABASE bench_ledger" >/dev/null
hx_tmp_psql -d bench_ledger -c "CREATE EXTENSION hybridexec" >/dev/null
for chunk in 64 5000; do
	hx_tmp_psql -d bench_ledger -q -v chunk=$chunk -f "$here/test/bench/ledger.sql"
done
echo "ledger roll-up after hybridexec.ledger_retention (best of 3 rounds):"
hx_tmp_psql -c "ALTER SYSTEM SET hybridexec.ledger_retention = '1d'" -c "SELECT pg_reload_conf()" >/dev/null
hx_tmp_psql -d bench_ledger -q -f "$here/test/bench/rollup.sql"
hx_tmp_psql -c "ALTER SYSTEM RESET hybridexec.ledger_retention" -c "SELECT pg_reload_conf()" >/dev/null

if [ "$BENCH" = all ]; then
	hx_tmp_stop
	echo
	bash "$here/test/bench/batch/run.sh"
fi
