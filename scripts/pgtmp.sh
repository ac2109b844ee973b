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
#
# HX_TMP_HUGE_PAGES=on (the benchmarks' default, HUGE_PAGES=off to leave
# it) puts the server's shared memory on 2 MB huge pages, as PostgreSQL's
# manual advises for a large shared_buffers: the kernel's huge page pool is
# raised by what the server needs (postgres -C
# shared_memory_size_in_huge_pages) and given back when it stops.  Without
# them every new process takes a page fault per 4 kB of shared buffers it
# touches: on this kind of virtual machine, where a page fault is dear, two
# batch workers ran 55% faster with them.  HX_TMP_HUGE says what the server
# got (on or off).

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
	hx_tmp_huge_pages
	hx_as_user pg_ctl -D "$HX_TMP_DIR/data" -l "$HX_TMP_DIR/server.log" -w start >/dev/null
	export PGHOST=$HX_TMP_DIR PGPORT=$HX_TMP_PORT PGUSER=postgres PGDATABASE=postgres
}

# Reserves the huge pages the configured server needs, if asked to and the
# kernel has them to give, and writes huge_pages = on or off into its
# configuration (nothing when not asked: PostgreSQL's default, try).  Sets
# HX_TMP_HUGE to what the server gets.
hx_tmp_huge_pages() {
	local need avail total
	HX_TMP_HUGE=off
	[ "${HX_TMP_HUGE_PAGES:-off}" = on ] || return 0
	if [ -r /proc/sys/vm/nr_hugepages ]; then
		need=$(hx_as_user postgres -D "$HX_TMP_DIR/data" -C shared_memory_size_in_huge_pages 2>/dev/null || echo -1)
		total=$(cat /proc/sys/vm/nr_hugepages)
		avail=$(hx_tmp_huge_available)
		if [ "$need" -gt 0 ] && [ "$avail" -lt "$need" ] &&
			hx_as_root sh -c "echo $((total + need - avail)) > /proc/sys/vm/nr_hugepages" 2>/dev/null; then
			HX_TMP_HUGE_GIVE_BACK=$total
		fi
		avail=$(hx_tmp_huge_available)
		if [ "$need" -gt 0 ] && [ "$avail" -ge "$need" ]; then
			HX_TMP_HUGE=on
		else
			echo "hybridexec: $need huge pages wanted, $avail to be had: the server runs without them" >&2
		fi
	fi
	echo "huge_pages = $HX_TMP_HUGE" | hx_as_user tee -a "$HX_TMP_DIR/data/postgresql.conf" >/dev/null
}

# huge pages neither in use nor promised to a running server
hx_tmp_huge_available() {
	awk '/^HugePages_Free:/ {f = $2} /^HugePages_Rsvd:/ {r = $2} END {print f - r}' /proc/meminfo
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
	if [ -n "${HX_TMP_HUGE_GIVE_BACK:-}" ]; then
		hx_as_root sh -c "echo $HX_TMP_HUGE_GIVE_BACK > /proc/sys/vm/nr_hugepages" 2>/dev/null || true
		HX_TMP_HUGE_GIVE_BACK=
	fi
}
