#!/usr/bin/env python3
"""Scale check: table swaps with N frontends under load (issue 8).

Starts `vipd-bench serve` (2 TCP echo ports, CPU 0) and vipd (CPU 1, one worker thread) with an
apps file of N host-mode apps on service ports BASE..BASE+N-1, every app's one task on echo
port 0. While `vipd-bench tcp-connect` (new connection per request, CPU 0, bounded by
--load-seconds and a request count) runs against the first service port, the apps file is
replaced (atomic rename) twice: every app gets a second task on echo port 1 (N frontends
changed, +N backends), then back to one task (N frontends changed, -N backends). Reports each
publish's `latency_ms` / `build_ms` from vipd's `published table` log line and the load's
result (it must have 0 errors). Loopback only; processes are stopped by their PIDs.

    python3 benches/scale/swap.py --vipd-bin target/release/vipd --bench-bin target/release/vipd-bench [--count 10000]
"""
import argparse, json, os, re, signal, subprocess, sys, tempfile, time, urllib.request, uuid


def apps_doc(count, base, ports, ids):
    return {"apps": [{
        "id": f"/swap-{i}",
        "portDefinitions": [{"port": base + i, "protocol": "tcp"}],
        "tasks": [{"id": ids[(i, p)], "host": "127.0.0.1", "ports": [p], "state": "TASK_RUNNING"}
                  for p in ports],
    } for i in range(count)]}


def write_atomic(path, doc):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.005)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vipd-bin", required=True)
    p.add_argument("--bench-bin", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--base-port", type=int, default=20000)
    p.add_argument("--load-seconds", type=float, default=8.0)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="vipd-swap-")
    procs = []
    try:
        serve_out = open(os.path.join(tmp, "serve.json"), "w+")
        procs.append(subprocess.Popen(["taskset", "-c", "0", a.bench_bin, "serve", "--tcp-ports", "2",
                                       "--mode", "echo", "--duration", "600s"],
                                      stdout=serve_out, stderr=subprocess.DEVNULL))
        def ports():
            serve_out.seek(0)
            line = serve_out.readline()
            return json.loads(line)["tcp_ports"] if line.endswith("\n") else None
        echo = wait_for(ports, 10, "backends")
        ids = {(i, pt): f"swap-{i}.instance-{uuid.uuid4()}._app.1" for i in range(a.count) for pt in echo}
        path = os.path.join(tmp, "apps.json")
        write_atomic(path, apps_doc(a.count, a.base_port, echo[:1], ids))
        log = open(os.path.join(tmp, "vipd.log"), "w+")
        vipd = subprocess.Popen(["taskset", "-c", "1", a.vipd_bin, "run", "--apps", path,
                                 "--bind-address", "127.0.0.1", "--admin-listen", "127.0.0.1:0",
                                 "--worker-threads", "1"], stdout=log, stderr=subprocess.STDOUT)
        procs.append(vipd)
        def logtext():
            log.seek(0)
            return log.read()
        admin = wait_for(lambda: (re.search(r"admin server listening local=(\S+)", logtext()) or [None, None])[1],
                         30, "admin address")
        def ready():
            try:
                with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                    return r.status == 200
            except Exception:
                return False
        wait_for(ready, 120, "/readyz 200")
        load = subprocess.Popen(["taskset", "-c", "0", a.bench_bin, "tcp-connect", "--target",
                                 f"127.0.0.1:{a.base_port}", "--concurrency", "16",
                                 "--duration", f"{a.load_seconds}s", "--requests", "2000000"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(load)
        time.sleep(a.load_seconds / 4)  # let the load reach steady state (not a wait for a condition)
        n0 = logtext().count("published table")
        write_atomic(path, apps_doc(a.count, a.base_port, echo, ids))
        wait_for(lambda: logtext().count("published table") > n0, 60, "publish 2")
        time.sleep(a.load_seconds / 4)
        write_atomic(path, apps_doc(a.count, a.base_port, echo[:1], ids))
        wait_for(lambda: logtext().count("published table") > n0 + 1, 60, "publish 3")
        out, _ = load.communicate(timeout=a.load_seconds + 60)
        res = json.loads(out.strip().splitlines()[-1])
        pubs = [dict(re.findall(r"(\w+)=(\S+)", l)) for l in logtext().splitlines() if "published table" in l]
        print(json.dumps({
            "count": a.count,
            "publishes": [{"generation": int(x["generation"]), "frontends": int(x["frontends"]),
                           "build_ms": round(float(x["build_ms"]), 1),
                           "latency_ms": round(float(x["latency_ms"]), 1)} for x in pubs],
            "load": {"ok": res["ok"], "rate_per_s": res["rate_per_s"], "errors": res["errors"],
                     "errors_total": res["errors_total"], "p99_us": res["latency_us"]["p99"],
                     "max_us": res["latency_us"]["max"]},
            "log": log.name}))
        return 0 if res["errors_total"] == 0 else 1
    finally:
        for pr in reversed(procs):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
                try:
                    pr.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    pr.kill()
                    pr.wait()


if __name__ == "__main__":
    sys.exit(main())
