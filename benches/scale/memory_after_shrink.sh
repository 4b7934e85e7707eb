#!/usr/bin/env bash
# RSS of `vipd run` serving Marathon's ceiling (2,000 apps / 50,000 tasks), then after the apps
# file is replaced by a one-app document: does a replaced large table give its memory back?
# Usage: benches/scale/memory_after_shrink.sh path/to/vipd   (WAIT_BIG, WAIT_SMALL: seconds)
# Binds loopback only (service ports on 127.0.0.1, named VIPs in 127.64.0.0/16); no admin server.
set -euo pipefail
bin=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
python3 "$here/gen_ceiling_apps.py" big.json >/dev/null
echo '{"apps":[{"id":"/one","portDefinitions":[{"port":30000,"protocol":"tcp"}],"tasks":[{"id":"one.1","appId":"/one","host":"127.0.0.1","ports":[31000],"state":"TASK_RUNNING"}]}]}' > small.json
cp big.json cur.json
"$bin" run --apps cur.json --bind-address 127.0.0.1 --vip-cidr 127.64.0.0/16 --no-admin --log-level error 2>/dev/null &
pid=$!
rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
sleep "${WAIT_BIG:-8}"; big=$(rss)
cp small.json cur.json.tmp && mv cur.json.tmp cur.json
sleep "${WAIT_SMALL:-6}"; after=$(rss)
kill -TERM "$pid"; wait "$pid" || true
echo "rss_big_kib=$big rss_after_small_kib=$after"
