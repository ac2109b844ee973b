#!/usr/bin/env bash
#
# test/bench/graphile/install.sh - installs the peer of the stream benchmark,
# graphile-worker, and node-postgres (pg, the client both sides use), from
# the npm registry into a scratch folder outside the repository.
# Idempotent: does nothing when both are already there at the pinned
# versions.  bench.mjs loads them from that folder (env GRAPHILE_DIR).
#
#   install.sh [DIR]    default /tmp/hx-bench-graphile
#
# GRAPHILE_WORKER_VERSION and PG_VERSION override the pinned versions.
#
set -euo pipefail

dir=${1:-/tmp/hx-bench-graphile}
gw_version=${GRAPHILE_WORKER_VERSION:-0.18.0}	# newest stable release
pg_version=${PG_VERSION:-8.23.1}

# installed version of package $1 in $dir, or nothing
installed() {
	node -e 'try { process.stdout.write(require(process.argv[1]).version) } catch (e) {}' \
		"$dir/node_modules/$1/package.json"
}

mkdir -p "$dir"
cd "$dir"
if [ "$(installed graphile-worker)" = "$gw_version" ] && [ "$(installed pg)" = "$pg_version" ]; then
	exit 0
fi
# a package.json of its own, so npm installs here and not in a parent folder
[ -f package.json ] || echo '{ "name": "hx-bench-graphile", "private": true }' >package.json
npm install --no-audit --no-fund --loglevel=error \
	"graphile-worker@$gw_version" "pg@$pg_version" >/dev/null
# graphile-worker 0.18 declares node >= 22.18 but runs this benchmark on 20
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 22 ]; then
	echo "note: graphile-worker $gw_version asks for node >= 22.18; this is node $(node --version)" >&2
fi
echo "graphile-worker $gw_version and pg $pg_version installed in $dir"
