#!/usr/bin/env python3
"""Scale check: N service-port listeners on one vipd (issue 8).

Writes a Marathon apps file with N host-mode apps (service ports BASE..BASE+N-1, one TCP port
each, one TASK_RUNNING task pointing at a closed loopback port), starts
`vipd run --apps FILE --bind-address 127.0.0.1 --admin-listen 127.0.0.1:0 --worker-threads 1`
pinned to CPU 1, reads the admin address from vipd's `admin server listening local=ADDR` log
line, and polls `/readyz` every 5 ms until it answers 200 (bounded by --timeout). Reports the
time from process start to ready, vipd's RSS (VmRSS) with all listeners open, and the number of
sockets vipd holds. Loopback only; vipd is stopped by its PID.

    python3 benches/scale/listeners.py --vipd-bin target/release/vipd [--count 10000] [--base-port 20000]
"""
import argparse, json, os, re, signal, subprocess, sys, tempfile, time, urllib.request, uuid


def rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vipd-bin", required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--base-port", type=int, default=20000)
    p.add_argument("--timeout", type=float, default=120.0)
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="vipd-scale-")
    apps = [{
        "id": f"/scale-{i}",
        "portDefinitions": [{"port": a.base_port + i, "protocol": "tcp"}],
        "tasks": [{"id": f"scale-{i}.instance-{uuid.uuid4()}._app.1", "host": "127.0.0.1",
                   "ports": [9], "state": "TASK_RUNNING"}],
    } for i in range(a.count)]
    path = os.path.join(tmp, "apps.json")
    json.dump({"apps": apps}, open(path, "w"))
    log = open(os.path.join(tmp, "vipd.log"), "w+")
    argv = ["taskset", "-c", "1", a.vipd_bin, "run", "--apps", path, "--bind-address", "127.0.0.1",
            "--admin-listen", "127.0.0.1:0", "--worker-threads", "1"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        admin = None
        ready_at = None
        deadline = t0 + a.timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if admin is None:
                log.seek(0)
                m = re.search(r"admin server listening local=(\S+)", log.read())
                if m:
                    admin = m.group(1)
            if admin is not None:
                try:
                    with urllib.request.urlopen(f"http://{admin}/readyz", timeout=2) as r:
                        if r.status == 200:
                            ready_at = time.monotonic()
                            break
                except Exception:
                    pass
            time.sleep(0.005)
        if ready_at is None:
            print(f"not ready within {a.timeout}s (exit={proc.poll()}); log: {log.name}", file=sys.stderr)
            return 1
        listening = 0
        for fd in os.listdir(f"/proc/{proc.pid}/fd"):
            try:
                if os.readlink(f"/proc/{proc.pid}/fd/{fd}").startswith("socket:"):
                    listening += 1
            except OSError:
                pass
        res = {"count": a.count, "ready_s": round(ready_at - t0, 3), "rss_kib": rss_kib(proc.pid),
               "sockets": listening, "log": log.name}
        print(json.dumps(res))
        return 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    sys.exit(main())
