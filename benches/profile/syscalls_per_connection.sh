#!/bin/bash
# Syscalls per proxied TCP connection: vipd vs HAProxy, counted with `strace -c -f` while
# `vipd-bench tcp-connect` makes N connections (64-byte request, 64-byte echo) through each.
#
# Usage: benches/profile/syscalls_per_connection.sh [N] [extra vipd args...]
#   e.g. benches/profile/syscalls_per_connection.sh 3000 --tcp-relay copy
# Needs: target/release/{vipd,vipd-bench} (cargo build --release --bins at the workspace root
# builds both), haproxy, strace.
# Loopback only; free ports chosen at start; every process started here is stopped by its PID.
set -eu
N=${1:-3000}
shift || true
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=$ROOT/target/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$BIN/vipd-bench" serve --tcp-ports 1 --mode echo --duration 600 > "$WORK/serve.json" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/serve.json" ] && break; sleep 0.05; done
BPORT=$(python3 -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['tcp_ports'][0])" "$WORK/serve.json")
VPORT=$(free_port); HPORT=$(free_port)
cat > "$WORK/apps.json" <<J
{"apps":[{"id":"/bench","portDefinitions":[{"port":$VPORT}],"tasks":[{"id":"bench.1","host":"127.0.0.1","ports":[$BPORT],"state":"TASK_RUNNING"}]}]}
J
cat > "$WORK/haproxy.cfg" <<H
global
  nbthread 1
defaults
  mode tcp
  timeout connect 2s
  timeout client 30s
  timeout server 30s
listen l
  bind 127.0.0.1:$HPORT
  balance roundrobin
  server b1 127.0.0.1:$BPORT
H
"$BIN/vipd" run --apps "$WORK/apps.json" --bind-address 127.0.0.1 --worker-threads 1 --no-admin --log-level warn "$@" 2> "$WORK/vipd.log" &
PIDS+=($!); VIPD=$!
haproxy -f "$WORK/haproxy.cfg" -db &
PIDS+=($!); HAP=$!
for port in $VPORT $HPORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done
for t in "vipd $VIPD $VPORT" "haproxy $HAP $HPORT"; do
  set -- $t
  strace -c -f -p "$2" -o "$WORK/strace.$1" &
  ST=$!
  sleep 0.5   # strace attaches asynchronously; the count starts once it has
  "$BIN/vipd-bench" tcp-connect --target "127.0.0.1:$3" --requests "$N" --concurrency 8 --no-progress >/dev/null
  kill -INT $ST; wait $ST || true
  echo "== $1: syscalls per connection over $N connections (strace -c; errors in parentheses)"
  awk -v n="$N" '$NF ~ /^[a-z_0-9]+$/ && $1 ~ /^[0-9.]+$/ && $NF != "total" {
      calls=$4; errs=($5 ~ /^[0-9]+$/ && NF==6) ? $5 : 0;
      if (calls/n >= 0.05) printf "  %-12s %5.2f (%4.2f)\n", $NF, calls/n, errs/n; total+=calls }
      END { printf "  %-12s %5.2f\n", "total", total/n }' "$WORK/strace.$1"
done
