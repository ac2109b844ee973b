#!/usr/bin/env bash
#
# scripts/test.sh - the whole hybridexec test suite on a fresh machine:
# installs what is missing, builds and installs the extension, then runs
# pg_regress, the isolation specs and the TAP tests (each on a temporary
# PostgreSQL instance with the library preloaded) as an ordinary user.
# .ci/run calls this and nothing else.  Exit status: 0 only if all passed.
#
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/scripts/deps.sh"

hx_install_deps
hx_build_install "$here"

# The tests write into their tree (results, temporary instances), so they
# run in a scratch copy owned by the unprivileged user.
work=$(mktemp -d /tmp/hybridexec-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -C "$here" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	--exclude=tmp_check --exclude=tmp_check_iso --exclude=results -cf - . | tar -C "$work" -xf -
chown -R "$(hx_run_user)" "$work" 2>/dev/null || true
chmod 755 "$work"

log="$work/installcheck.log"
set +e
hx_as_user make -s -C "$work" PG_CONFIG="$PG_CONFIG" installcheck ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} 2>&1 |
	tee "$log"
status=${PIPESTATUS[0]}
set -e

if [ $status -ne 0 ]; then
	for f in "$work/regression.diffs" "$work/test/regression.diffs"; do
		[ -s "$f" ] && { echo "==== $f"; cat "$f"; }
	done
	for f in "$work"/tmp_check/log/regress_log_*; do
		[ -s "$f" ] && { echo "==== $f (last 40 lines)"; tail -n 40 "$f"; }
	done
	echo "hybridexec: test suite FAILED (status $status)" >&2
	exit $status
fi
# one closing line for the whole run: pg_regress and isolation test files
# plus TAP assertions
total=0
for n in $(sed -n -e 's/^ *All \([0-9]*\) tests passed\. *$/\1/p' \
	-e 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log"); do
	total=$((total + n))
done
echo "hybridexec: all test suites passed"
echo "$total passed, 0 failed"
