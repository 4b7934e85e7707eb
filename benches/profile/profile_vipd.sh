#!/usr/bin/env bash
# Profiles one vipd workload with `perf record -g` (cpu-clock; this VM has no hardware counters).
#
#   benches/profile/profile_vipd.sh VIPD_BIN BENCH_BIN WORKLOAD [SECONDS] [OUTDIR]
#   WORKLOAD: connect | rr | stream | udp
#
# Backends (vipd-bench serve, echo + sink) and the load run on CPU 0, vipd on CPU 1 with one
# worker thread, as in benches/compare/compare.py. Loopback only; the load is bounded in time
# and count; every process started here is stopped by its PID.
set -euo pipefail
VIPD=$1; BENCH=$2; WL=$3; SECS=${4:-5}; OUT=${5:-$(mktemp -d /tmp/vipd-profile-XXXX)}
mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
port_of() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
taskset -c 0 "$BENCH" serve --tcp-ports 2 --udp-ports 2 --mode echo --duration 600s >"$OUT/echo.json" 2>/dev/null & pids+=($!)
taskset -c 0 "$BENCH" serve --tcp-ports 2 --mode sink --duration 600s >"$OUT/sink.json" 2>/dev/null & pids+=($!)
for _ in $(seq 500); do [ -s "$OUT/echo.json" ] && [ -s "$OUT/sink.json" ] && break; sleep 0.01; done
FE_ECHO=$(port_of); FE_SINK=$(port_of); FE_UDP=$(port_of)
python3 - "$OUT" "$FE_ECHO" "$FE_SINK" "$FE_UDP" <<'PY'
import json, sys, uuid
out, fe_echo, fe_sink, fe_udp = sys.argv[1], *map(int, sys.argv[2:])
echo = json.loads(open(f"{out}/echo.json").readline())
sink = json.loads(open(f"{out}/sink.json").readline())
def app(name, port, proto, ports):
    return {"id": f"/p-{name}", "portDefinitions": [{"port": port, "protocol": proto}],
            "tasks": [{"id": f"p-{name}.instance-{uuid.uuid4()}._app.1", "host": "127.0.0.1",
                       "ports": [p], "state": "TASK_RUNNING"} for p in ports]}
json.dump({"apps": [app("echo", fe_echo, "tcp", echo["tcp_ports"]),
                    app("sink", fe_sink, "tcp", sink["tcp_ports"]),
                    app("udp", fe_udp, "udp", echo["udp_ports"])]}, open(f"{out}/apps.json", "w"))
PY
taskset -c 1 perf record -F 2000 -e cpu-clock -g -o "$OUT/perf.data" -- \
  "$VIPD" run --apps "$OUT/apps.json" --bind-address 127.0.0.1 --worker-threads 1 --no-admin \
  >"$OUT/vipd.log" 2>&1 & pids+=($!)
case $WL in
  connect) T=$FE_ECHO; ARGS=(tcp-connect --concurrency 16) ;;
  rr) T=$FE_ECHO; ARGS=(tcp-rr --connections 32) ;;
  stream) T=$FE_SINK; ARGS=(tcp-stream --streams 1) ;;
  udp) T=$FE_UDP; ARGS=(udp-rr --flows 8 --window 16 --timeout 1s) ;;
esac
# Wait (bounded) until vipd accepts on the TCP frontend.
for _ in $(seq 1000); do (exec 3<>/dev/tcp/127.0.0.1/$FE_ECHO) 2>/dev/null && break; sleep 0.01; done
taskset -c 0 "$BENCH" "${ARGS[@]}" --target 127.0.0.1:$T --duration ${SECS}s --requests 5000000 >"$OUT/load.json" 2>/dev/null
cat "$OUT/load.json"
kill -INT "${pids[2]}"; wait "${pids[2]}" || true
perf report -i "$OUT/perf.data" --no-children --percent-limit 1.5 --stdio 2>/dev/null | grep -v '^$' | head -${TOP:-60} > "$OUT/top.txt"
perf report -i "$OUT/perf.data" --no-children --sort dso,sym -g none --percent-limit 0.8 --stdio 2>/dev/null | grep '%' | head -40 > "$OUT/flat.txt"
echo "profile: $OUT/perf.data; flat: $OUT/flat.txt"
