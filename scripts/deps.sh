#!/usr/bin/env bash
#
# scripts/deps.sh - install what hybridexec needs from Debian's packages,
# only when it is missing: PostgreSQL 15 server and headers, pg_cron, libpq,
# a compiler, and the Perl module the TAP tests use.  Sourced by demo.sh and
# test.sh; safe to run again.
#
set -euo pipefail

HX_PG_MAJOR=${HX_PG_MAJOR:-15}
HX_PACKAGES=(
	"postgresql-${HX_PG_MAJOR}"
	"postgresql-server-dev-${HX_PG_MAJOR}"
	"postgresql-${HX_PG_MAJOR}-cron"
	"postgresql-${HX_PG_MAJOR}-plproxy"
	"postgresql-client-${HX_PG_MAJOR}"
	libpq-dev
	libipc-run-perl
	make
	gcc
)

hx_as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		echo "hybridexec: '$*' needs root (no sudo here); run this script as root" >&2
		return 1
	fi
}

hx_install_deps() {
	local missing=()
	local p
	for p in "${HX_PACKAGES[@]}"; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
			missing+=("$p")
		fi
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "hybridexec: installing ${missing[*]}" >&2
		hx_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
		hx_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
	fi
	# HX_PG_CONFIG picks another (e.g. a relocated private) installation
	export PG_CONFIG="${HX_PG_CONFIG:-/usr/lib/postgresql/${HX_PG_MAJOR}/bin/pg_config}"
	export PATH="$(dirname "$PG_CONFIG"):$PATH"
}

# Build and install the extension into the server of $PG_CONFIG.
hx_build_install() {
	local src=$1
	make -s -C "$src" PG_CONFIG="$PG_CONFIG" >/dev/null
	hx_as_root make -s -C "$src" PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# The unprivileged account servers and tests run as (initdb refuses root).
hx_run_user() {
	if [ "$(id -u)" -eq 0 ]; then
		echo postgres
	else
		id -un
	fi
}

# Run a command as that account, with the given environment kept.
hx_as_user() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- env PATH="$PATH" PG_CONFIG="$PG_CONFIG" "$@"
	else
		"$@"
	fi
}
