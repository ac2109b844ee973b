#!/usr/bin/env bash
#
# test/bench/graphile/install.sh - installs the peer of the stream benchmark,
# graphile-worker (and node-postgres, which both sides use), from the npm
# registry into a scratch folder outside the repository.  Idempotent.
#
#   install.sh [DIR]    default /tmp/hx-bench-graphile
#
set -euo pipefail

dir=${1:-/tmp/hx-bench-graphile}
version=${GRAPHILE_WORKER_VERSION:-0.18.0}

mkdir -p "$dir"
cd "$dir"
if [ -f node_modules/graphile-worker/package.json ] &&
	grep -q "\"version\": \"$version\"" node_modules/graphile-worker/package.json &&
	[ -d node_modules/pg ]; then
	exit 0
fi
[ -f package.json ] || npm init -y >/dev/null 2>&1
npm install --no-audit --no-fund --loglevel=error "graphile-worker@$version" pg >/dev/null
echo "graphile-worker $version installed in $dir"
