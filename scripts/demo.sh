#!/usr/bin/env bash
#
# scripts/demo.sh - the main job: on a fresh Debian machine, install what is
# missing, build and install hybridexec, start a private throwaway
# PostgreSQL instance with hybridexec and pg_cron preloaded, and walk
# through demo/demo.sql, then demo/cost.sql (the books of a mixed workload),
# and write the chart demo/cost-chart.svg (HX_DEMO_CHART names another
# file); last, a window that pg_cron opens every minute, waited for (at most
# 75 seconds).  The instance is deleted at the end; pass --keep to leave it
# running and get the commands to connect to it and to stop it.  Exit
# status 1 when pg_cron did not open the window in time.
#
# pg_cron runs its jobs in background workers (cron.use_background_workers)
# since the instance listens on no TCP address: by default pg_cron connects
# to localhost over TCP, and every job would fail with "connection failed".
#
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/deps.sh"
. "$here/scripts/pgtmp.sh"

keep=0
case "${1:-}" in
	"") ;;
	--keep) keep=1 ;;
	*)
		echo "usage: $0 [--keep]" >&2
		exit 2
		;;
esac

hx_install_deps
hx_build_install "$here"

dir=$(mktemp -d /tmp/hybridexec-demo.XXXXXX)
if [ $keep = 0 ]; then
	trap 'hx_tmp_stop' EXIT
fi
# pg_cron's jobs run in background workers, as a DBA would set it up on a
# server without TCP; each takes a slot of max_worker_processes: hybridexec
# 5 (2 stream workers, the scheduler, 2 batch workers), pg_cron 1 + at most
# 4 jobs at once, the logical replication launcher 1, parallel query 8
hx_tmp_start "$dir" \
	"cron.use_background_workers = on" \
	"cron.max_running_jobs = 4" \
	"max_worker_processes = 20"
bindir=$("$PG_CONFIG" --bindir)
echo "hybridexec demo: private PostgreSQL $(hx_as_user postgres --version | awk '{print $3}') on socket $dir, port $PGPORT"
echo

# as_server_user CMD: a command line that runs CMD as the account the
# server runs as, pasted into a root shell (or the invoking user's own);
# from / in a subshell, since that account may not enter root's working
# directory (PostgreSQL's programs then complain)
as_server_user() {
	if [ "$(id -u)" -eq 0 ]; then
		echo "(cd / && runuser -u $(hx_run_user) -- $*)"
	else
		echo "$*"
	fi
}

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
-- the rollout of section 7 of the books: cost per task and median latency of both arms
SELECT x.k || '|' || x.v
  FROM (SELECT rule_name, sample,
               max(cost_per_done) FILTER (WHERE arm = 'sampled') AS sc,
               max(cost_per_done) FILTER (WHERE arm = 'fell through') AS fc,
               max(extract(epoch FROM latency_p50)) FILTER (WHERE arm = 'sampled') AS sp,
               max(extract(epoch FROM latency_p50)) FILTER (WHERE arm = 'fell through') AS fp
          FROM hx_rollout_report(now() - interval '1 hour', now() + interval '1 minute')
         GROUP BY rule_name, sample LIMIT 1) o,
       LATERAL (VALUES ('rollout_rule', o.rule_name), ('rollout_sample', o.sample::text),
                       ('rollout_sampled_cost', o.sc::text), ('rollout_fell_cost', o.fc::text),
                       ('rollout_sampled_p50_s', o.sp::text), ('rollout_fell_p50_s', o.fp::text)) x (k, v)
 WHERE x.v IS NOT NULL;
SQL
echo
echo "hybridexec demo: chart of cost and latency per path, and of the rollout, written to $chart"
echo "  open it in a web browser (copy it to a machine with a desktop first if this one has none)"

# pg_cron opens windows on their schedules: a window that opens every
# minute, and a few batch tasks that a rule routes to it, all committed
# together so that the window's first run finds them
echo
echo "-- 11. pg_cron opens a window on its schedule: 'demo-minute', every minute"
hx_tmp_psql -e <<'SQL'
SHOW cron.use_background_workers;
CREATE FUNCTION tag_ticket(ps jsonb[]) RETURNS jsonb[] LANGUAGE sql AS $$
	SELECT array_agg(jsonb_build_object('tag', CASE WHEN p->>'text' ILIKE '%refund%' THEN 'billing'
													ELSE 'general' END) ORDER BY o)
	  FROM unnest(ps) WITH ORDINALITY AS u (p, o)
$$;
BEGIN;
SELECT hx_register('tag', batch_handler => 'tag_ticket(jsonb[])');
INSERT INTO hx_window (name, schedule, max_duration, description)
VALUES ('demo-minute', '* * * * *', '1 minute', 'demo: opened by pg_cron every minute');
INSERT INTO hx_rule (name, position, task_type, route, window_name)
VALUES ('tag-every-minute', 3, 'tag', 'batch', 'demo-minute');
SELECT count(*) AS queued
  FROM hx_submit_batch('tag', ARRAY['{"text": "Refund for order 17"}', '{"text": "Password reset"}',
                                    '{"text": "Refund twice?"}', '{"text": "New address"}']::jsonb[]);
COMMIT;
SELECT jobname, schedule, command FROM cron.job WHERE jobname = 'hybridexec window demo-minute';
SELECT id, status, route, window_name, rule_name FROM hx_task WHERE task_type = 'tag' ORDER BY id;
SQL
echo "waiting for pg_cron to open window 'demo-minute' (at most a minute)..."
cron_ok=0
deadline=$((SECONDS + 75))
while [ $SECONDS -lt $deadline ]; do
	if [ "$(hx_tmp_psql -At -c "
		SELECT NOT EXISTS (SELECT 1 FROM hx_task WHERE task_type = 'tag' AND status <> 'done')
		   AND EXISTS (SELECT 1 FROM hx_window_run r
		                WHERE r.window_name = 'demo-minute' AND r.started_by = 'cron'
		                  AND r.id IN (SELECT run_id FROM hx_task WHERE task_type = 'tag'))")" = t ]; then
		cron_ok=1
		break
	fi
	sleep 1
done
if [ $cron_ok = 1 ]; then
	echo "pg_cron opened it; the job's run and the window run it started:"
	hx_tmp_psql -e <<'SQL'
SELECT d.runid, j.jobname, d.command, d.status, d.return_message, d.start_time, d.end_time
  FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
 WHERE j.jobname = 'hybridexec window demo-minute'
 ORDER BY d.runid LIMIT 1;
SELECT id, window_name, status, started_by, requested_at, finished_at, processed, failed, chunks
  FROM hx_window_run
 WHERE id = (SELECT min(run_id) FROM hx_task WHERE task_type = 'tag');
SELECT id, status, run_id, result FROM hx_task WHERE task_type = 'tag' ORDER BY id;
-- every pg_cron job run so far, by job and outcome (a failed run would show here)
SELECT j.jobname, d.status, count(*) AS runs
  FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
 GROUP BY 1, 2 ORDER BY 1, 2;
SQL
else
	echo
	echo "hybridexec demo: pg_cron did NOT open window 'demo-minute' within 75 seconds."
	echo "What pg_cron recorded (cron.job_run_details, newest first; a 'failed' row says why):"
	hx_tmp_psql -c "
		SELECT d.runid, j.jobname, d.status, d.return_message, d.start_time
		  FROM cron.job_run_details d JOIN cron.job j ON j.jobid = d.jobid
		 ORDER BY d.runid DESC LIMIT 10" || true
	echo "The window's runs and tasks:"
	hx_tmp_psql -c "SELECT id, status, started_by, requested_at, processed, last_error
		  FROM hx_window_run WHERE window_name = 'demo-minute' ORDER BY id" || true
	hx_tmp_psql -c "SELECT status, count(*) FROM hx_task WHERE task_type = 'tag' GROUP BY 1" || true
	echo "Settings (cron.use_background_workers must be on, max_worker_processes must leave slots free):"
	hx_tmp_psql -At -c "SELECT name || ' = ' || setting FROM pg_settings
		WHERE name IN ('cron.use_background_workers', 'cron.max_running_jobs', 'max_worker_processes',
		               'cron.database_name', 'shared_preload_libraries') ORDER BY name" || true
	echo "The server log's last lines about cron or workers ($dir/server.log):"
	grep -i -E 'cron|worker' "$dir/server.log" | tail -n 15 || true
fi

echo
if [ $keep = 1 ]; then
	echo "The instance is still running. Connect with:"
	echo "  $(as_server_user "$bindir/psql -h $dir -p $PGPORT -U postgres postgres")"
	echo "Stop it with:"
	echo "  $(as_server_user "$bindir/pg_ctl -D $dir/data stop") && rm -rf $dir"
else
	echo "hybridexec demo: done; the throwaway instance is being removed."
fi
if [ $cron_ok = 0 ]; then
	exit 1
fi
