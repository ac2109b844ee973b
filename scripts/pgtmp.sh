#!/usr/bin/env bash
#
# scripts/pgtmp.sh - a private, throwaway PostgreSQL instance with hybridexec
# preloaded, for the demo and the benchmarks.  Sourced after deps.sh.
#
#   hx_tmp_start DIR [extra postgresql.conf lines...]   initdb + start
#   hx_tmp_psql ARGS...                                 psql to it
#   hx_tmp_settle                                       checkpoint, wait for autovacuum
#   hx_tmp_stop                                         stop and delete
#
# It listens only on a Unix socket inside DIR (and 127.0.0.1 on a free port
# when HX_TMP_TCP=1), so it never disturbs another server.

hx_tmp_free_port() {
	local p
	for p in $(seq 54330 54399); do
		if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	echo "hybridexec: no free port in 54330-54399" >&2
	return 1
}

hx_tmp_start() {
	HX_TMP_DIR=$1
	shift
	HX_TMP_PORT=$(hx_tmp_free_port)
	mkdir -p "$HX_TMP_DIR"
	chown "$(hx_run_user)" "$HX_TMP_DIR" 2>/dev/null || true
	hx_as_user initdb -D "$HX_TMP_DIR/data" -A trust -U postgres --no-sync >/dev/null
	{
		echo "port = $HX_TMP_PORT"
		if [ "${HX_TMP_TCP:-0}" = 1 ]; then
			echo "listen_addresses = '127.0.0.1'"
		else
			echo "listen_addresses = ''"
		fi
		echo "unix_socket_directories = '$HX_TMP_DIR'"
		echo "shared_preload_libraries = 'hybridexec,pg_cron'"
		echo "cron.database_name = 'postgres'"
		echo "max_worker_processes = 16"
		local line
		for line in "$@"; do echo "$line"; done
	} | hx_as_user tee -a "$HX_TMP_DIR/data/postgresql.conf" >/dev/null
	hx_as_user pg_ctl -D "$HX_TMP_DIR/data" -l "$HX_TMP_DIR/server.log" -w start >/dev/null
	export PGHOST=$HX_TMP_DIR PGPORT=$HX_TMP_PORT PGUSER=postgres PGDATABASE=postgres
}

hx_tmp_psql() {
	hx_as_user env PGHOST="$PGHOST" PGPORT="$PGPORT" PGUSER=postgres psql -X -q -v ON_ERROR_STOP=1 "$@"
}

# Before a benchmark's turn: checkpoint and wait (up to a minute) for
# autovacuum to finish, so that no turn measures the previous one's dead
# rows and dirty buffers.
hx_tmp_settle() {
	local n
	hx_tmp_psql -c "CHECKPOINT" >/dev/null
	for _ in $(seq 1 300); do
		n=$(hx_tmp_psql -At -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")
		[ "$n" -eq 0 ] && break
		sleep 0.2
	done
}

hx_tmp_stop() {
	if [ -n "${HX_TMP_DIR:-}" ] && [ -d "$HX_TMP_DIR/data" ]; then
		hx_as_user pg_ctl -D "$HX_TMP_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
		rm -rf "$HX_TMP_DIR"
	fi
}
