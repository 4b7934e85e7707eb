#!/usr/bin/env bash
# Runs every integration test binary once as uid/gid 65534 holding only CAP_NET_BIND_SERVICE and
# CAP_NET_ADMIN (ambient, via setpriv), and prints one line per binary: passed, or the failed
# tests with their first panic line. For docs/security.md ("the whole suite's daemon tests as a
# non-root user"). Needs root to start (setpriv) and a built suite; builds it first.
# Usage: scripts/nonroot-suite.sh [TEST_NAME_FILTER...]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: setpriv drops to uid 65534" >&2; exit 2; }
bins=$(cargo test --all-targets --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["test"]:
        print(m["target"]["name"], m["executable"])')
# target/tmp must be writable for tests that write there (CARGO_TARGET_TMPDIR).
mkdir -p target/tmp && chmod 1777 target/tmp
out=$(mktemp -d)
chmod 755 "$out"
pass=0; fail=0
while read -r name exe; do
  if [ "$#" -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$name"; then continue; fi
  log="$out/$name.log"
  if (cd /tmp && env -u CI setpriv --reuid=65534 --regid=65534 --clear-groups \
        --inh-caps=-all,+net_bind_service,+net_admin \
        --ambient-caps=-all,+net_bind_service,+net_admin \
        "$exe" --test-threads=2 >"$log" 2>&1); then
    pass=$((pass + 1))
    echo "ok      $name: $(grep -E '^test result' "$log" | tail -1)"
  else
    fail=$((fail + 1))
    echo "FAILED  $name: $(grep -E '^test result' "$log" | tail -1)"
    grep -E '^    [a-z_0-9:]+$' "$log" | sed 's/^/          /' | head -20
    grep -m3 -E "panicked at|Error:" "$log" | sed 's/^/          /' || true
  fi
done <<<"$bins"
echo "binaries passed: $pass, failed: $fail (logs in $out)"
