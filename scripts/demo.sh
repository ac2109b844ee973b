#!/usr/bin/env bash
#
# scripts/demo.sh - the main job: on a fresh Debian machine, install what is
# missing, build and install hybridexec, start a private throwaway
# PostgreSQL instance with hybridexec and pg_cron preloaded, and walk
# through demo/demo.sql.  The instance is deleted at the end; pass --keep to
# leave it running and get the command to connect to it.
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

echo
if [ $keep = 1 ]; then
	echo "The instance is still running. Connect with:"
	echo "  runuser -u $(hx_run_user) -- psql -h $dir -p $PGPORT -U postgres postgres"
	echo "Stop it with:"
	echo "  runuser -u $(hx_run_user) -- pg_ctl -D $dir/data stop && rm -rf $dir"
else
	echo "hybridexec demo: done; the throwaway instance is being removed."
fi
