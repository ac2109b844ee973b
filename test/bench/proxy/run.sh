#!/usr/bin/env bash
#
# test/bench/proxy/run.sh - BENCH=proxy make bench: submit throughput
# through a hybridexec_proxy front (PL/Proxy) against submits straight to
# one hybridexec server, all servers on this machine:
#
#   direct      pgbench clients call hx_submit() on shard 0 itself
#   front, 1    the same calls to hx_proxy.hx_submit() on a front whose
#               cluster is shard 0 alone: what the proxy hop costs
#   front, 3    the same on a front spreading departments over three
#               shards (three servers on the same cores as the front)
#
# Each call is its own transaction; the tasks are batch-routed (no SLA),
# so that workers running them take no CPU from the submits.  CLIENTS
# pgbench clients for PROXY_SECONDS seconds per run, each figure the median
# of ROUNDS rounds; the queue is emptied and the servers settled between
# runs.  Prints the machine's load before and after.  Figures only:
# nothing here passes or fails on a timing.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/../../.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${PROXY_SECONDS:-5}
CLIENTS=${CLIENTS:-4}

hx_install_deps
hx_build_install "$here"

# three servers; pgtmp.sh keeps one server's settings in globals: remember each
dirs=() ports=()
stop_all() {
	local i
	for i in "${!dirs[@]}"; do
		HX_TMP_DIR=${dirs[$i]} hx_tmp_stop
	done
}
trap stop_all EXIT
for i in 0 1 2; do
	hx_tmp_start "$(mktemp -d /tmp/hybridexec-bench-proxy.XXXXXX)" "max_connections = 200"
	dirs+=("$HX_TMP_DIR")
	ports+=("$HX_TMP_PORT")
done
on() {
	local i=$1
	shift
	hx_as_user env PGHOST="${dirs[$i]}" PGPORT="${ports[$i]}" PGUSER=postgres \
		psql -X -q -At -v ON_ERROR_STOP=1 "$@"
}
conninfo() { echo "host=${dirs[$1]} port=${ports[$1]} dbname=postgres"; }

for i in 0 1 2; do
	on "$i" -c "CREATE EXTENSION hybridexec" \
		-c "CREATE FUNCTION bench_nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'" >/dev/null
done
# the front is server 2's database "front": a front need not be a server of
# its own, and here it shares the cores with the shards anyway
on 2 -c "CREATE DATABASE front1" -c "CREATE DATABASE front3" >/dev/null
for db in front1 front3; do
	on 2 -d "$db" -c "CREATE EXTENSION hybridexec" -c "CREATE EXTENSION plproxy" \
		-c "CREATE EXTENSION hybridexec_proxy" \
		-c "CREATE FUNCTION bench_nop(p jsonb) RETURNS jsonb LANGUAGE sql AS 'SELECT p'" \
		-c "SELECT hx_register('bench_nop', 'bench_nop(jsonb)')" >/dev/null
done
# (client_min_messages: the shards' one-time pg_cron notices, relayed by PL/Proxy)
on 2 -d front1 -c "SET client_min_messages = warning" -c "SELECT count(*) FROM hx_proxy.hx_add_shards(ARRAY['$(conninfo 0)'])" \
	-c "SELECT count(*) FROM hx_proxy.hx_push_policy()" >/dev/null
on 2 -d front3 -c "SET client_min_messages = warning" -c "SELECT count(*) FROM hx_proxy.hx_add_shards(ARRAY['$(conninfo 0)', '$(conninfo 1)', '$(conninfo 2)'])" \
	-c "SELECT count(*) FROM hx_proxy.hx_push_policy()" >/dev/null

script=$(mktemp /tmp/hybridexec-bench-proxy-script.XXXXXX)
chmod 644 "$script"
cat >"$script" <<'SQL'
\set dept random(1, 64)
SELECT hx_submit('bench_nop', '{"i": 1}', department => 'd' || :dept);
SQL

# one pgbench run against server $1, database $2 (search_path $3); prints tps
run() {
	local i=$1 db=$2 path=$3 n
	for n in 0 1 2; do on "$n" -c "DELETE FROM hx_task" -c "CHECKPOINT" >/dev/null; done
	hx_as_user env PGHOST="${dirs[$i]}" PGPORT="${ports[$i]}" PGUSER=postgres PGOPTIONS="-c search_path=$path" \
		pgbench -n -c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" -f "$script" "$db" 2>/dev/null |
		sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p'
}

echo "machine: $(nproc) cores; PostgreSQL $(hx_as_user postgres --version | awk '{print $3}'); PL/Proxy $(on 2 -d front3 -c "SELECT extversion FROM pg_extension WHERE extname = 'plproxy'")"
echo "settings: $CLIENTS pgbench clients, $SECONDS_PER_RUN s per run, $ROUNDS rounds, one hx_submit per transaction"
echo "load before: $(cat /proc/loadavg)"
direct=() front1=() front3=()
for r in $(seq 1 "$ROUNDS"); do
	echo "round $r/$ROUNDS" >&2
	direct+=("$(run 0 postgres 'public')")
	front1+=("$(run 2 front1 'hx_proxy,public')")
	front3+=("$(run 2 front3 'hx_proxy,public')")
done
echo "load after:  $(cat /proc/loadavg)"
# every submit through front3 landed on a shard: none on the front itself
[ "$(on 2 -d front3 -c "SET client_min_messages = warning" -c "SELECT count(*) FROM hx_task")" = 0 ] || { echo "bench: tasks on the front" >&2; exit 1; }

python3 - "${direct[*]}" "${front1[*]}" "${front3[*]}" <<'PY'
import statistics, sys
direct, front1, front3 = ([float(x) for x in a.split()] for a in sys.argv[1:4])
d = statistics.median(direct)
print()
print(f"{'hx_submit, one per transaction':40s}{'submits/s':>12s}{'vs direct':>12s}")
print("-" * 64)
for label, v in (("direct to one server", direct),
                 ("through the front, 1 shard", front1),
                 ("through the front, 3 shards", front3)):
    m = statistics.median(v)
    print(f"{label:40s}{m:>12,.0f}{m / d:>11.2f}x")
print()
print("medians of rounds; all servers (front and shards) share this machine's cores")
PY
