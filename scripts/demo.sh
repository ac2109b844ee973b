#!/usr/bin/env bash
#
# scripts/demo.sh - the main job: on a fresh Debian machine, install what is
# missing, build and install hybridexec, start a private throwaway
# PostgreSQL instance with hybridexec and pg_cron preloaded, and walk
# through demo/demo.sql, then demo/cost.sql (the books of a mixed workload),
# and write the chart demo/cost-chart.svg (HX_DEMO_CHART names another
# file).  The instance is deleted at the end; pass --keep to leave it
# running and get the command to connect to it.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

keep=0
[ "${1:-}" = "--keep" ] && keep=1

hx_install_deps
hx_build_install "$here"

dir=$(mktemp -d /tmp/hybridexec-demo.XXXXXX)
if [ $keep = 0 ]; then
	trap 'hx_tmp_stop' EXIT
fi
hx_tmp_start "$dir"
echo "hybridexec demo: private PostgreSQL $(hx_as_user postgres --version | awk '{print $3}') on socket $dir, port $PGPORT"
echo

hx_tmp_psql -e -f - < "$here/demo/demo.sql"

# External executors: hx_worker (installed with the extension) claims the
# tasks of a type without in-database handler and runs a command per task:
# payload on stdin, JSON result on stdout.  Here a one-line Python script.
echo
echo "-- 10. An external executor: hx_worker runs a Python one-liner per task"
hx_tmp_psql -e <<'SQL'
SELECT hx_register('shout', description => 'run by hx_worker, outside the database');
SQL
"$(dirname "$PG_CONFIG")/hx_worker" --dsn "host=$PGHOST port=$PGPORT user=postgres dbname=postgres" \
	--type shout --name demo-executor -- \
	python3 -c 'import json, sys; p = json.load(sys.stdin); print(json.dumps({"shout": p["text"].upper() + "!"}))' &
worker=$!
hx_tmp_psql -e <<'SQL'
SELECT hx_submit('shout', '{"text": "the model answered"}', origin => 'user') AS shout \gset
SELECT hx_wait(:shout) AS shout_status;
SELECT id, status, executor, attempts, result FROM hx_task WHERE id = :shout;
SQL
kill -TERM "$worker"
wait "$worker" || true

# the books: a mixed workload, its costs, savings and latency; then a chart
echo
hx_tmp_psql -e -f - < "$here/demo/cost.sql"
chart=${HX_DEMO_CHART:-$here/demo/cost-chart.svg}
hx_tmp_psql -At -f - <<'SQL' | python3 "$here/demo/chart.py" > "$chart"
WITH s AS (SELECT * FROM hx_savings(now() - interval '1 hour', now() + interval '1 minute')),
     r AS (SELECT coalesce(sum(cost) FILTER (WHERE route = 'stream'), 0) AS stream_cost,
                  coalesce(sum(cost) FILTER (WHERE route = 'batch'), 0) AS batch_cost
             FROM hx_cost WHERE at >= now() - interval '1 hour')
SELECT x.k || '|' || x.v
  FROM s, r, LATERAL (VALUES ('all_stream', s.all_stream_cost::text), ('all_batch', s.all_batch_cost::text),
                             ('stream_cost', r.stream_cost::text), ('batch_cost', r.batch_cost::text),
                             ('currency', s.currency), ('p50_s', s.interactive_p50_s::text),
                             ('p95_s', s.interactive_p95_s::text), ('batch_p50_s', s.all_batch_p50_s::text),
                             ('batch_p95_s', s.all_batch_p95_s::text)) x (k, v);
SQL
echo
echo "hybridexec demo: chart of cost and latency per path written to $chart"
echo "  open it in a web browser, e.g. xdg-open $chart (or copy it to your machine first)"

echo
if [ $keep = 1 ]; then
	echo "The instance is still running. Connect with:"
	echo "  runuser -u $(hx_run_user) -- psql -h $dir -p $PGPORT -U postgres postgres"
	echo "Stop it with:"
	echo "  runuser -u $(hx_run_user) -- pg_ctl -D $dir/data stop && rm -rf $dir"
else
	echo "hybridexec demo: done; the throwaway instance is being removed."
fi
