#!/usr/bin/env python3
"""Side-by-side comparison of vipd with HAProxy, nginx `stream` and a direct connection.

What it does (one command; `--quick` is a few-second smoke run that asserts correctness only):
  * starts the backends with `vipd-bench serve` (echo + sink), `iperf3 -s` and a small nginx HTTP
    server (for wrk), all on 127.0.0.1 with free ports chosen at start;
  * starts the proxies over the same backends, each from its own temp dir, in the foreground, and
    stops each by the PID it started (never by name): HAProxy (`mode tcp`, roundrobin,
    `nbthread 1`) in its default config and with `option splice-auto`, nginx `stream`
    (`worker_processes 1`, round-robin, TCP and UDP), and vipd when a binary exists
    (`--vipd-bin` or target/release/vipd; skipped with a message otherwise);
  * pins every proxy to one CPU (`taskset -c 1`) and clients + backends to another
    (`taskset -c 0`); `--unpinned` adds a second, unpinned pass;
  * runs each workload `--runs` times (>= 3 in a full run) over all targets, alternating the
    order A B C / C B A so drift cancels, and reports min/median/max, the proxy's CPU time per run
    (utime+stime from /proc/<pid>/stat over its process tree) and work per CPU-second, RSS with
    many idle connections open through each proxy, and ratios of vipd to the others;
  * measures whole-machine busy CPU (all cores, /proc/stat) over every run, divides it by the work
    done, and reports the overhead above the direct path per connection / request / Gbit /
    datagram: the headline table, since a proxy's own process time hides the kernel work it
    causes elsewhere (softirq, kworkers, the client's extra ACKs);
  * `--vipd-bin NAME=PATH` (repeatable) runs several vipd builds side by side as vipd-NAME;
  * writes a markdown table (stdout, and `--markdown-out`) and every run as a JSON line
    (`--json-out`), with the exact command line first.

Workloads: new TCP connections/s (vipd-bench tcp-connect), keep-alive request/response
(vipd-bench tcp-rr, and wrk against the nginx HTTP backend), bulk single-stream throughput
(vipd-bench tcp-stream and iperf3), UDP request/response (vipd-bench udp-rr; HAProxy has no UDP),
and memory with idle connections. All traffic is on loopback; every load is bounded in time and
count; every process this script starts is stopped by PID when it ends (also on errors and ^C).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LOOPBACK = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
HTTP_BODY = "vipd-bench-http-backend-0123456789abcdef0123456789abcdef0123456\n"  # 64 bytes

TCP_TARGETS = ["direct", "haproxy", "haproxy-splice", "nginx"]
UDP_TARGETS = ["direct", "nginx"]


def machine_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far, summed over all cores (/proc/stat "cpu"
    line: everything but idle and iowait). The difference over a run includes the kernel work a
    proxy causes outside its own process: softirq, kworkers, the clients' extra ACK processing."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    assert fields[0] == "cpu"
    v = [int(x) for x in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / CLK_TCK


def log(msg: str) -> None:
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# processes


class Proc:
    """A process this harness started; stopped by its own PID only."""

    def __init__(self, name: str, argv: list[str], cwd: Path, pin: str | None,
                 stdout=None) -> None:
        self.name = name
        full = (["taskset", "-c", pin] if pin is not None else []) + argv
        self.argv = full
        self.log_path = cwd / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(
            full, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log, stderr=self._log,
            start_new_session=True)
        # taskset execs the program, so the PID is the proxy's own.
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        if self.popen.poll() is None:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout)
        self._log.close()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx master + worker, for example)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        parent[int(d)] = int(rest[1])
    out, frontier = [pid], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, in seconds (threads included)."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        total += int(rest[11]) + int(rest[12])  # fields 14 and 15 of stat
    return total / CLK_TCK


def rss_kib(pid: int) -> int:
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


# --------------------------------------------------------------------------------------------
# ports and readiness


class Ports:
    """Free loopback ports, chosen once at start (bind :0, remember, close)."""

    def __init__(self) -> None:
        self.taken: set[int] = set()

    def get(self, udp: bool = False) -> int:
        for _ in range(100):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            p = s.getsockname()[1]
            s.close()
            if p not in self.taken:
                self.taken.add(p)
                return p
        raise RuntimeError("no free port")


def wait_tcp(port: int, proc: Proc | None, bound: float = 10.0) -> None:
    deadline = time.monotonic() + bound
    while True:
        try:
            socket.create_connection((LOOPBACK, port), timeout=1).close()
            return
        except OSError:
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {port} not accepting after {bound}s")
            time.sleep(0.01)


def read_json_line(proc: Proc, bound: float = 10.0) -> dict:
    """First stdout line of a `vipd-bench serve` (its ports)."""
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.popen.stdout, selectors.EVENT_READ)
    if not sel.select(bound):
        raise RuntimeError(f"{proc.name} printed nothing within {bound}s:\n{proc.log_tail()}")
    line = proc.popen.stdout.readline()
    if not line:
        raise RuntimeError(f"{proc.name} exited:\n{proc.log_tail()}")
    return json.loads(line)


# --------------------------------------------------------------------------------------------
# configurations


def haproxy_cfg(fe: dict, be: dict, maxconn: int, splice: bool) -> str:
    lines = [
        "global",
        "    nbthread 1",
        f"    maxconn {maxconn}",
        # Splicing takes 2 fds per pipe; keep the total under RLIMIT_NOFILE.
        "    maxpipes 400",
        "",
        "defaults",
        "    mode tcp",
        "    balance roundrobin",
        f"    maxconn {maxconn}",
        "    timeout connect 5s",
        "    timeout client 300s",
        "    timeout server 300s",
    ]
    if splice:
        lines.append("    option splice-auto")
    for name in ("echo", "sink", "iperf", "http"):
        lines += [
            "",
            f"frontend fe_{name}",
            f"    bind {LOOPBACK}:{fe[name]}",
            f"    default_backend be_{name}",
            f"backend be_{name}",
        ]
        for i, p in enumerate(be[name]):
            lines.append(f"    server s{i} {LOOPBACK}:{p}")
    return "\n".join(lines) + "\n"


def nginx_stream_cfg(fe: dict, be: dict, worker_connections: int, nofile: int) -> str:
    ups = []
    srv = []
    for name in ("echo", "sink", "iperf", "http"):
        ups.append(f"    upstream {name} {{\n" + "".join(
            f"        server {LOOPBACK}:{p};\n" for p in be[name]) + "    }")
        srv.append(f"    server {{\n        listen {LOOPBACK}:{fe[name]} backlog=4096;\n"
                   f"        proxy_pass {name};\n        proxy_timeout 300s;\n    }}")
    ups.append("    upstream udp_echo {\n" + "".join(
        f"        server {LOOPBACK}:{p};\n" for p in be["udp"]) + "    }")
    # One UDP session per client address (flow) for its lifetime, like vipd's flow table; no
    # proxy_responses limit, since a flow carries many request/response pairs.
    srv.append(f"    server {{\n        listen {LOOPBACK}:{fe['udp']} udp;\n"
               f"        proxy_pass udp_echo;\n        proxy_timeout 30s;\n    }}")
    return (
        f"load_module {NGINX_STREAM_MODULE};\n"
        "worker_processes 1;\n"
        f"worker_rlimit_nofile {nofile};\n"
        "events {\n"
        f"    worker_connections {worker_connections};\n"
        "}\n"
        "stream {\n" + "\n".join(ups) + "\n" + "\n".join(srv) + "\n}\n"
    )


def nginx_http_cfg(ports: list[int]) -> str:
    listens = "".join(f"        listen {LOOPBACK}:{p} backlog=4096;\n" for p in ports)
    return (
        "worker_processes 1;\n"
        "events {\n    worker_connections 4096;\n}\n"
        "http {\n"
        "    access_log off;\n"
        "    keepalive_requests 100000000;\n"
        "    keepalive_timeout 300s;\n"
        "    client_body_temp_path tmp;\n"
        "    proxy_temp_path tmp;\n"
        "    server {\n" + listens +
        "        default_type text/plain;\n"
        f"        location / {{ return 200 \"{HTTP_BODY.strip()}\\n\"; }}\n"
        "    }\n"
        "}\n"
    )


def vipd_apps(fe: dict, be: dict) -> dict:
    apps = []
    for name, proto in (("echo", "tcp"), ("sink", "tcp"), ("iperf", "tcp"), ("http", "tcp"),
                        ("udp", "udp")):
        app_id = f"bench-{name}"
        apps.append({
            "id": f"/{app_id}",
            "portDefinitions": [{"port": fe[name], "protocol": proto}],
            "tasks": [{
                "id": f"{app_id}.instance-{uuid.uuid4()}._app.1",
                "host": LOOPBACK,
                "ports": [p],
                "state": "TASK_RUNNING",
            } for p in be[name]],
        })
    return {"apps": apps}


# --------------------------------------------------------------------------------------------
# the run


class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.procs: list[Proc] = []
        self.records: list[dict] = []
        self.problems: list[str] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="vipd-compare-"))
        self.bench = ""
        # (target name, binary): "vipd" for one `--vipd-bin`, "vipd-NAME" for each NAME=PATH.
        self.vipd_bins: list[tuple[str, str]] = []
        self.vipd_skip_reason = ""
        self.nofile = 0
        self.client_cpu: str | None = None
        self.proxy_cpu: str | None = None
        self.json_file = None

    # ---- setup

    def start(self, name: str, argv: list[str], pin: str | None, cwd: Path | None = None,
              stdout=None) -> Proc:
        d = cwd or self.tmp
        d.mkdir(parents=True, exist_ok=True)
        p = Proc(name, argv, d, pin, stdout=stdout)
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def raise_nofile(self) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536
        for new_hard in (max(hard, want), hard):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, new_hard), new_hard))
                break
            except (ValueError, OSError):
                continue
        self.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        log(f"RLIMIT_NOFILE for the harness and everything it starts: {self.nofile}"
            f" (hard limit was {hard})")

    def build(self) -> None:
        a = self.a
        if a.bench_bin:
            self.bench = str(Path(a.bench_bin).resolve())
        else:
            profile = "debug" if a.quick else "release"
            if not a.no_build:
                cmd = ["cargo", "build", "-p", "vipd-bench"] + ([] if a.quick else ["--release"])
                log("building: " + " ".join(cmd))
                subprocess.run(cmd, cwd=REPO, check=True)
            self.bench = str(REPO / "target" / profile / "vipd-bench")
        if not os.access(self.bench, os.X_OK):
            raise SystemExit(f"vipd-bench binary not found at {self.bench}")
        specs = a.vipd_bin or [str(REPO / "target" / "release" / "vipd")]
        reasons = []
        for spec in specs:
            name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
            target = f"vipd-{name}" if name else "vipd"
            cand = str(Path(path).resolve())
            reason = self.check_vipd(cand)
            if reason:
                reasons.append(f"{target}: {reason}")
            else:
                self.vipd_bins.append((target, cand))
        self.vipd_skip_reason = "; ".join(reasons)
        if reasons:
            log(f"vipd: SKIPPED: {self.vipd_skip_reason}")

    @staticmethod
    def check_vipd(cand: str) -> str:
        """Why `cand` cannot be benchmarked, or "" when it can."""
        if not os.access(cand, os.X_OK):
            return f"no vipd binary at {cand} (build it or pass --vipd-bin)"
        try:
            h = subprocess.run([cand, "run", "--help"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{cand} run --help failed: {e}"
        if h.returncode != 0 or "--worker-threads" not in h.stdout:
            return f"{cand} has no `run --worker-threads` (the data plane is not built in this binary)"
        return ""

    @property
    def vipd_names(self) -> list[str]:
        return [n for n, _ in self.vipd_bins]

    def targets_for(self, wl: str) -> list[str]:
        return (UDP_TARGETS if wl == "udp" else TCP_TARGETS) + self.vipd_names

    def setup_pinning(self, pinned: bool) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        if pinned and len(cpus) >= 2:
            self.client_cpu, self.proxy_cpu = str(cpus[0]), str(cpus[1])
        else:
            if pinned:
                log("fewer than 2 CPUs available: running unpinned")
            self.client_cpu = self.proxy_cpu = None

    def start_everything(self) -> dict:
        a = self.a
        ports = Ports()
        nb = a.backends
        # Backends (clients' CPU).
        echo = self.start("backend-echo", [self.bench, "serve", "--tcp-ports", str(nb),
                                           "--udp-ports", str(nb), "--mode", "echo",
                                           "--duration", f"{a.serve_bound}s"],
                          self.client_cpu, stdout=subprocess.PIPE)
        ej = read_json_line(echo)
        sink = self.start("backend-sink", [self.bench, "serve", "--tcp-ports", str(nb),
                                           "--mode", "sink", "--duration", f"{a.serve_bound}s"],
                          self.client_cpu, stdout=subprocess.PIPE)
        sj = read_json_line(sink)
        iperf_port = ports.get()
        iperf = self.start("backend-iperf3", ["iperf3", "-s", "-p", str(iperf_port),
                                              "-B", LOOPBACK], self.client_cpu)
        http_ports = [ports.get() for _ in range(nb)]
        hdir = self.tmp / "backend-http"
        (hdir / "tmp").mkdir(parents=True, exist_ok=True)
        (hdir / "nginx.conf").write_text(nginx_http_cfg(http_ports))
        http = self.start("backend-http", ["nginx", "-p", str(hdir), "-c", str(hdir / "nginx.conf"),
                                           "-e", str(hdir / "error.log"),
                                           "-g", f"daemon off; pid {hdir / 'nginx.pid'};"],
                          self.client_cpu, cwd=hdir)
        be = {"echo": ej["tcp_ports"], "udp": ej["udp_ports"], "sink": sj["tcp_ports"],
              "iperf": [iperf_port], "http": http_ports}
        wait_tcp(iperf_port, iperf)
        for p in http_ports:
            wait_tcp(p, http)

        targets: dict[str, dict] = {
            "direct": {"proc": None, "fe": {k: v[0] for k, v in be.items()}},
        }
        maxconn = max(1000, (self.nofile - 1000) // 2)
        for name, splice in (("haproxy", False), ("haproxy-splice", True)):
            fe = {k: ports.get() for k in ("echo", "sink", "iperf", "http")}
            d = self.tmp / name
            d.mkdir(parents=True, exist_ok=True)
            cfg = d / "haproxy.cfg"
            cfg.write_text(haproxy_cfg(fe, be, maxconn, splice))
            chk = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
            if chk.returncode != 0:
                raise RuntimeError(f"haproxy config check failed:\n{chk.stdout}{chk.stderr}")
            p = self.start(name, ["haproxy", "-db", "-f", str(cfg)], self.proxy_cpu, cwd=d)
            targets[name] = {"proc": p, "fe": fe}
        fe = {k: ports.get() for k in ("echo", "sink", "iperf", "http")}
        fe["udp"] = ports.get(udp=True)
        d = self.tmp / "nginx"
        d.mkdir(parents=True, exist_ok=True)
        (d / "nginx.conf").write_text(
            nginx_stream_cfg(fe, be, worker_connections=self.nofile, nofile=self.nofile))
        p = self.start("nginx", ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"),
                                 "-e", str(d / "error.log"),
                                 "-g", f"daemon off; pid {d / 'nginx.pid'};"],
                       self.proxy_cpu, cwd=d)
        targets["nginx"] = {"proc": p, "fe": fe}
        for vname, vbin in self.vipd_bins:
            fe = {k: ports.get() for k in ("echo", "sink", "iperf", "http")}
            fe["udp"] = ports.get(udp=True)
            d = self.tmp / vname
            d.mkdir(parents=True, exist_ok=True)
            apps = d / "apps.json"
            apps.write_text(json.dumps(vipd_apps(fe, be), indent=1))
            extra = shlex.split(a.vipd_args)
            if "--no-admin" not in extra and not any(x.startswith("--admin-listen") for x in extra):
                # Each vipd gets its own admin port, so several builds can run side by side.
                extra += ["--admin-listen", f"{LOOPBACK}:{ports.get()}"]
            argv = [vbin, "run", "--apps", str(apps), "--bind-address", LOOPBACK,
                    "--worker-threads", "1"] + extra
            p = self.start(vname, argv, self.proxy_cpu, cwd=d)
            targets[vname] = {"proc": p, "fe": fe}
        for name, t in list(targets.items()):
            if t["proc"] is None:
                continue
            try:
                for k in ("echo", "sink", "iperf", "http"):
                    wait_tcp(t["fe"][k], t["proc"])
            except RuntimeError as e:
                if name in self.vipd_names:
                    reason = f"{name} did not come up: {e}"
                    self.vipd_skip_reason = "; ".join(filter(None, [self.vipd_skip_reason, reason]))
                    self.vipd_bins = [(n, b) for n, b in self.vipd_bins if n != name]
                    log(f"vipd: SKIPPED: {reason}")
                    t["proc"].stop()
                    del targets[name]
                    continue
                raise
        log("started: " + ", ".join(
            f"{n} (pid {t['proc'].pid})" if t["proc"] else n for n, t in targets.items()))
        return targets

    # ---- one measurement

    def bench_cmd(self, mode: str, target: str, port: int, extra: list[str]) -> list[str]:
        cmd = [self.bench, mode, "--target", f"{LOOPBACK}:{port}", "--label", target,
               "--duration", f"{self.a.duration}s", "--no-progress"] + extra
        if self.client_cpu is not None:
            cmd = ["taskset", "-c", self.client_cpu] + cmd
        return cmd

    def run_client(self, cmd: list[str], timeout: float) -> tuple[int, str, str]:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            return r.returncode, r.stdout, r.stderr
        except subprocess.TimeoutExpired as e:
            return -1, (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout"

    def measure(self, wl: str, target: str, t: dict, run: int, pos: int, pass_name: str) -> dict:
        a = self.a
        proc: Proc | None = t["proc"]
        fe = t["fe"]
        d = a.duration
        cpu0 = cpu_seconds(proc.pid) if proc else None
        busy0 = machine_busy_s()
        t0 = time.monotonic()
        rec: dict = {"pass": pass_name, "workload": wl, "target": target, "run": run,
                     "order_pos": pos}
        if wl in ("connect", "rr", "stream", "udp"):
            mode, port, extra = {
                "connect": ("tcp-connect", fe["echo"], ["--concurrency", str(a.connect_concurrency),
                                                      "--requests", str(a.max_requests)]),
                "rr": ("tcp-rr", fe["echo"], ["--connections", str(a.rr_connections),
                                             "--requests", str(a.max_requests)]),
                "stream": ("tcp-stream", fe["sink"], ["--streams", "1"]),
                "udp": ("udp-rr", fe.get("udp", 0), ["--flows", str(a.udp_flows), "--window",
                                                     str(a.udp_window), "--timeout", "1s",
                                                     "--requests", str(a.max_requests)]),
            }[wl]
            cmd = self.bench_cmd(mode, target, port, extra)
            rc, out, err = self.run_client(cmd, d + 30)
            rec["command"] = cmd
            res = None
            if rc == 0 and out.strip():
                res = json.loads(out.strip().splitlines()[-1])
            rec["raw"] = res
            if res is None:
                rec["error"] = f"exit {rc}: {err.strip()[-500:]}"
            else:
                if wl == "stream":
                    rec["value"] = res["gbit_per_s"]
                    rec["units"] = res["bytes_sent"] * 8 / 1e9  # Gbit moved
                else:
                    rec["value"] = res["rate_per_s"]
                    rec["units"] = res["ok"]
                lat = res.get("latency_us") or {}
                rec["p50_us"] = lat.get("p50")
                rec["p99_us"] = lat.get("p99")
                rec["p999_us"] = lat.get("p999")
                rec["errors"] = res["errors_total"]
                if wl == "udp":
                    rec["loss_pct"] = res["loss_pct"]
                    rec["late"] = res["late"]
        elif wl == "wrk":
            cmd = ["wrk", "-t1", f"-c{a.rr_connections}", f"-d{max(1, round(d))}s", "--latency",
                   "--timeout", "2s", f"http://{LOOPBACK}:{fe['http']}/"]
            if self.client_cpu is not None:
                cmd = ["taskset", "-c", self.client_cpu] + cmd
            rc, out, err = self.run_client(cmd, d + 30)
            rec["command"] = cmd
            rec["raw"] = out
            parsed = parse_wrk(out) if rc == 0 else None
            if parsed is None:
                rec["error"] = f"exit {rc}: {(err or out).strip()[-500:]}"
            else:
                rec.update(parsed)
        elif wl == "iperf3":
            cmd = ["iperf3", "-c", LOOPBACK, "-p", str(fe["iperf"]), "-t", str(max(1, round(d))),
                   "-J", "--connect-timeout", "3000"]
            if self.client_cpu is not None:
                cmd = ["taskset", "-c", self.client_cpu] + cmd
            rc, out, err = self.run_client(cmd, d + 30)
            rec["command"] = cmd
            try:
                j = json.loads(out)
            except json.JSONDecodeError:
                j = None
            if j is None or "error" in j or rc != 0:
                rec["error"] = f"exit {rc}: {(j or {}).get('error', err.strip()[-300:])}"
                rec["raw"] = None
            else:
                bps = j["end"]["sum_received"]["bits_per_second"]
                rec["value"] = bps / 1e9
                rec["units"] = j["end"]["sum_received"]["bytes"] * 8 / 1e9
                rec["errors"] = 0
                rec["retransmits"] = j["end"].get("sum_sent", {}).get("retransmits")
                rec["raw"] = {"end": {"sum_sent": j["end"].get("sum_sent"),
                                      "sum_received": j["end"]["sum_received"]}}
        rec["wall_s"] = round(time.monotonic() - t0, 3)
        busy = machine_busy_s() - busy0
        rec["machine_cpu_s"] = round(busy, 3)
        if rec.get("units"):
            # Whole-machine CPU-µs per unit of work (connection, request, Gbit, datagram).
            rec["machine_us_per_unit"] = busy * 1e6 / rec["units"]
        if proc:
            cpu = cpu_seconds(proc.pid) - cpu0
            rec["proxy_cpu_s"] = round(cpu, 3)
            if rec.get("units") is not None and cpu > 0:
                rec["per_cpu_s"] = rec["units"] / cpu
            if not proc.alive():
                rec["error"] = (rec.get("error", "") + f" {proc.name} exited: {proc.log_tail(5)}")
        return rec

    def check(self, rec: dict) -> None:
        """Correctness: every target answered, no errors, no UDP loss."""
        what = f"{rec['pass']}/{rec['workload']}/{rec['target']}/run{rec['run']}"
        if rec.get("error"):
            self.problems.append(f"{what}: {rec['error']}")
            return
        if not rec.get("value"):
            self.problems.append(f"{what}: no answers")
        if rec.get("errors"):
            self.problems.append(f"{what}: {rec['errors']} errors")
        if rec["workload"] == "udp" and rec.get("loss_pct"):
            self.problems.append(f"{what}: UDP loss {rec['loss_pct']}%")

    # ---- memory with idle connections

    def memory(self, target: str, t: dict, pass_name: str) -> dict:
        proc: Proc = t["proc"]
        n = self.a.idle_conns
        limit = max(100, (self.nofile - 2000) // 2)
        note = ""
        if n > limit:
            note = (f"{n} requested, but RLIMIT_NOFILE {self.nofile} allows ~{limit} proxied "
                    "connections (2 fds each)")
            n = limit
        time.sleep(0.2)
        base = rss_kib(proc.pid)
        socks: list[socket.socket] = []
        err = None
        t0 = time.monotonic()
        try:
            for _ in range(n):
                s = socket.create_connection((LOOPBACK, t["fe"]["echo"]), timeout=5)
                socks.append(s)
            # One byte each way proves every connection reached a backend.
            for s in socks:
                s.sendall(b"x")
            for s in socks:
                if s.recv(1) != b"x":
                    raise RuntimeError("bad echo")
        except (OSError, RuntimeError) as e:
            err = f"{type(e).__name__}: {e} after {len(socks)} connections"
        time.sleep(0.5)
        held = rss_kib(proc.pid)
        for s in socks:
            s.close()
        rec = {"pass": pass_name, "workload": "memory", "target": target, "idle_conns": len(socks),
               "requested": self.a.idle_conns, "rss_idle_kib": base, "rss_conns_kib": held,
               "per_conn_bytes": round((held - base) * 1024 / max(1, len(socks))),
               "wall_s": round(time.monotonic() - t0, 3), "note": note}
        if err:
            rec["error"] = err
        return rec

    # ---- passes

    def run_pass(self, pass_name: str, pinned: bool) -> None:
        a = self.a
        self.setup_pinning(pinned)
        log(f"pass {pass_name}: proxies on CPU {self.proxy_cpu}, clients+backends on CPU "
            f"{self.client_cpu}" if pinned else f"pass {pass_name}: unpinned")
        targets = self.start_everything()
        try:
            if not a.skip_memory:
                for name in [n for n in self.targets_for("connect") if n in targets and n != "direct"]:
                    rec = self.memory(name, targets[name], pass_name)
                    self.emit(rec)
                    log(f"memory {name}: {rec['rss_idle_kib']} KiB idle -> {rec['rss_conns_kib']}"
                        f" KiB with {rec['idle_conns']} connections")
                    if rec.get("error"):
                        self.problems.append(f"{pass_name}/memory/{name}: {rec['error']}")
            for wl in a.workloads:
                names = [n for n in self.targets_for(wl) if n in targets]
                for run in range(a.runs):
                    order = names if run % 2 == 0 else list(reversed(names))
                    for pos, name in enumerate(order):
                        rec = self.measure(wl, name, targets[name], run, pos, pass_name)
                        self.emit(rec)
                        self.check(rec)
                        v = rec.get("value")
                        log(f"{pass_name} {wl:8} run {run} {name:15} "
                            + (f"{v:12.3f}" if v is not None else f"ERROR {rec.get('error')}")
                            + (f"  p99 {rec['p99_us']} us" if rec.get("p99_us") else "")
                            + (f"  cpu {rec['proxy_cpu_s']} s" if "proxy_cpu_s" in rec else ""))
        finally:
            self.stop_all()

    def emit(self, rec: dict) -> None:
        self.records.append(rec)
        if self.json_file:
            self.json_file.write(json.dumps(rec) + "\n")
            self.json_file.flush()


def parse_wrk(out: str) -> dict | None:
    def us(v: str) -> float:
        for suf, m in (("us", 1.0), ("ms", 1000.0), ("s", 1e6)):
            if v.endswith(suf):
                return float(v[: -len(suf)]) * m
        return float(v)

    rec: dict = {"errors": 0}
    total = None
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Requests/sec:"):
            rec["value"] = float(s.split()[1])
        elif s.startswith("50%"):
            rec["p50_us"] = us(s.split()[1])
        elif s.startswith("99%"):
            rec["p99_us"] = us(s.split()[1])
        elif " requests in " in s:
            total = int(s.split()[0])
        elif s.startswith("Socket errors:"):
            rec["errors"] += sum(int(x.strip().split()[-1]) for x in s.split(":", 1)[1].split(","))
        elif s.startswith("Non-2xx or 3xx responses:"):
            rec["errors"] += int(s.split(":")[1])
    if "value" not in rec or total is None:
        return None
    rec["units"] = total
    return rec


# --------------------------------------------------------------------------------------------
# reporting

WL_TITLES = {
    "connect": ("New TCP connections/s", "conn/s", "vipd-bench tcp-connect"),
    "rr": ("Keep-alive TCP request/response", "req/s", "vipd-bench tcp-rr"),
    "wrk": ("Keep-alive HTTP through the L4 proxy", "req/s", "wrk"),
    "stream": ("Bulk TCP, 1 stream", "Gbit/s", "vipd-bench tcp-stream"),
    "iperf3": ("Bulk TCP, 1 stream", "Gbit/s", "iperf3"),
    "udp": ("UDP request/response", "resp/s", "vipd-bench udp-rr"),
}


def fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "–"
    if unit == "Gbit/s" or abs(v) < 100:
        return f"{v:.2f}"
    return f"{v:,.0f}"


UNIT_OF = {"connect": "connection", "rr": "request", "wrk": "request", "stream": "Gbit",
           "iperf3": "Gbit", "udp": "datagram"}


def med_of(rs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rs if r.get(key) is not None and not r.get("error")]
    return statistics.median(vals) if vals else None


def headline(h: Harness, recs: list[dict]) -> list[str]:
    """The headline table: throughput, p99 and whole-machine CPU per unit of work above the direct
    path (the overhead), each as a ratio to HAProxy (nginx for UDP) and to direct."""
    out = ["### Headline: whole-machine CPU per unit of work above direct", "",
           "overhead = median whole-machine busy CPU-µs per unit (all cores, /proc/stat) minus the"
           " direct path's; ratios are of medians from this run.", "",
           "| workload | target | throughput | × ref | × direct | p99 µs | × ref p99 |"
           " machine CPU-µs/unit | overhead µs/unit | overhead × ref |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for wl in h.a.workloads:
        wrecs = [r for r in recs if r["workload"] == wl]
        if not wrecs:
            continue
        ref = "nginx" if wl == "udp" else "haproxy"
        by = {n: [r for r in wrecs if r["target"] == n] for n in h.targets_for(wl)}
        thr = {n: med_of(rs, "value") for n, rs in by.items()}
        p99 = {n: med_of(rs, "p99_us") for n, rs in by.items()}
        cpu = {n: med_of(rs, "machine_us_per_unit") for n, rs in by.items()}
        base = cpu.get("direct")
        over = {n: (c - base if c is not None and base is not None else None) for n, c in cpu.items()}

        def ratio(d: dict, n: str, m: str) -> str:
            a, b = d.get(n), d.get(m)
            return f"{a / b:.2f}×" if a is not None and b not in (None, 0) and n != m else "–"

        _, unit, _ = WL_TITLES[wl]
        for n in by:
            if thr.get(n) is None:
                continue
            out.append(f"| {wl} ({UNIT_OF[wl]}) | {n} | {fmt(thr[n], unit)} {unit} | {ratio(thr, n, ref)} |"
                       f" {ratio(thr, n, 'direct')} | {fmt(p99[n])} | {ratio(p99, n, ref)} |"
                       f" {fmt(cpu[n])} | {fmt(over[n]) if n != 'direct' else '0'} |"
                       f" {ratio(over, n, ref) if n != 'direct' else '–'} |")
    out.append("")
    return out


def summarize(h: Harness, command: str, machine: dict) -> str:
    a = h.a
    out = ["# vipd comparison", "", f"Command: `{command}`", "",
           f"Machine: {machine['cpus']} CPUs ({machine['cpu_model']}), Linux {machine['kernel']};"
           f" {machine['haproxy']}; {machine['nginx']}; {machine['iperf3']}; {machine['wrk']}.",
           f"Load average (1/5/15 min) at start: {machine['loadavg_start']}, at end: {loadavg()}"
           " — the machine is shared, so other work adds noise.",
           f"Runs per target: {a.runs} (order alternates A B C / C B A); {a.duration} s each;"
           f" {a.backends} backends per service, round-robin.",
           ]
    if h.vipd_skip_reason:
        out.append(f"vipd: **skipped** — {h.vipd_skip_reason}.")
    out.append("")
    passes = list(dict.fromkeys(r["pass"] for r in h.records))
    for pass_name in passes:
        recs = [r for r in h.records if r["pass"] == pass_name]
        out.append(f"## Pass: {pass_name}")
        out.append("")
        out.append("proxies pinned to one CPU (`taskset -c 1`), clients and backends to the other"
                   " (`taskset -c 0`); one worker thread/process per proxy." if pass_name == "pinned"
                   else "no CPU pinning.")
        out.append("")
        out += headline(h, recs)
        for wl in a.workloads:
            wrecs = [r for r in recs if r["workload"] == wl]
            if not wrecs:
                continue
            title, unit, tool = WL_TITLES[wl]
            out.append(f"### {title} ({tool})")
            out.append("")
            has_lat = any(r.get("p99_us") for r in wrecs)
            hdr = f"| target | median {unit} | min / median / max | "
            hdr += "p99 µs (median) | " if has_lat else ""
            hdr += "proxy CPU s per run | per proxy CPU-s | vs direct | notes |"
            out.append(hdr)
            out.append("|" + "|".join("---" for _ in range(hdr.count("|") - 1)) + "|")
            med: dict[str, float] = {}
            names = [n for n in h.targets_for(wl) if any(r["target"] == n for r in wrecs)]
            for n in names:
                vals = [r["value"] for r in wrecs if r["target"] == n and r.get("value") is not None]
                if vals:
                    med[n] = statistics.median(vals)
            for n in names:
                rs = [r for r in wrecs if r["target"] == n]
                vals = sorted(r["value"] for r in rs if r.get("value") is not None)
                errs = [r for r in rs if r.get("error")]
                if not vals:
                    out.append(f"| {n} | error | {errs[0]['error'][:80] if errs else ''} |")
                    continue
                row = f"| {n} | {fmt(med[n], unit)} | {fmt(vals[0], unit)} / {fmt(med[n], unit)} / {fmt(vals[-1], unit)} | "
                if has_lat:
                    p99 = [r["p99_us"] for r in rs if r.get("p99_us")]
                    row += f"{fmt(statistics.median(p99)) if p99 else '–'} | "
                cpu = [r["proxy_cpu_s"] for r in rs if "proxy_cpu_s" in r]
                eff = [r["per_cpu_s"] for r in rs if r.get("per_cpu_s")]
                row += f"{fmt(statistics.median(cpu)) if cpu else '–'} | "
                eff_unit = "Gbit" if unit == "Gbit/s" else ""
                row += (f"{fmt(statistics.median(eff))} {eff_unit}".strip() + " | ") if eff else "– | "
                row += (f"{med[n] / med['direct']:.2f}× | " if "direct" in med and n != "direct"
                        else "– | ")
                extra = []
                if wl == "udp":
                    loss = [r.get("loss_pct", 0) for r in rs]
                    late = sum(r.get("late", 0) or 0 for r in rs)
                    extra.append(f"max loss {max(loss)}%, late {late}")
                if errs:
                    extra.append(f"{len(errs)} failed runs")
                row += "; ".join(extra) + " |"
                out.append(row)
            vipds = [v for v in h.vipd_names if v in med]
            if vipds:
                for v in vipds:
                    ratios = [f"{v}/{n} = {med[v] / med[n]:.2f}×" for n in
                              ("haproxy", "haproxy-splice", "nginx", "direct") + tuple(vipds)
                              if n in med and n != v]
                    out.append("")
                    out.append("Ratios (median): " + ", ".join(ratios))
            else:
                out.append("")
                out.append("Ratios of vipd: n/a (vipd not run).")
            out.append("")
        mrecs = [r for r in recs if r["workload"] == "memory"]
        if mrecs:
            out.append("### Memory with idle connections open through the proxy")
            out.append("")
            out.append("| target | idle connections | RSS before (MiB) | RSS with connections (MiB) |"
                       " per connection (bytes) |")
            out.append("|---|---|---|---|---|")
            for r in mrecs:
                out.append(f"| {r['target']} | {r['idle_conns']:,} | {r['rss_idle_kib'] / 1024:.1f} |"
                           f" {r['rss_conns_kib'] / 1024:.1f} | {r['per_conn_bytes']:,} |"
                           + (f" {r['error']}" if r.get("error") else ""))
            notes = {r["note"] for r in mrecs if r.get("note")}
            for note in notes:
                out.append("")
                out.append(f"Note: {note}.")
            out.append("")
    if h.problems:
        out.append("## Problems")
        out.append("")
        out += [f"- {p}" for p in h.problems]
        out.append("")
    return "\n".join(out)


def machine_info() -> dict:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            return ((r.stdout or r.stderr).strip().splitlines() or ["?"])[0]
        except (OSError, subprocess.TimeoutExpired):
            return "not installed"

    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
        "haproxy": first_line(["haproxy", "-v"]).split(" - ")[0],
        "nginx": first_line(["nginx", "-v"]).replace("nginx version: ", ""),
        "iperf3": first_line(["iperf3", "--version"]).split(" (")[0],
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "python": platform.python_version(),
        "loadavg_start": loadavg(),
    }


def loadavg() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="few-second smoke run: 1 run, short loads, asserts correctness (exit 1 on a problem)")
    p.add_argument("--runs", type=int, default=None, help="runs per target and workload (default 3; quick 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds per load run (default 5; quick 0.5)")
    p.add_argument("--unpinned", action="store_true", help="add a second, unpinned pass")
    p.add_argument("--workloads", default="connect,rr,wrk,stream,iperf3,udp",
                   help="comma-separated subset of connect,rr,wrk,stream,iperf3,udp")
    p.add_argument("--skip-memory", action="store_true", help="skip the idle-connection memory test")
    p.add_argument("--idle-conns", type=int, default=None, help="idle connections for the memory test (default 10000; quick 200)")
    p.add_argument("--backends", type=int, default=2, help="backends per service (round-robin)")
    p.add_argument("--connect-concurrency", type=int, default=16)
    p.add_argument("--rr-connections", type=int, default=32, help="tcp-rr connections and wrk -c")
    p.add_argument("--udp-flows", type=int, default=8)
    p.add_argument("--udp-window", type=int, default=16)
    p.add_argument("--max-requests", type=int, default=50_000_000, help="count bound of every load run")
    p.add_argument("--bench-bin", help="vipd-bench binary (default: build and use target/release, or target/debug with --quick)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build")
    p.add_argument("--vipd-bin", action="append",
                   help="vipd binary (default target/release/vipd if it exists); repeat as"
                        " NAME=PATH to compare several builds in one run (targets vipd-NAME)")
    p.add_argument("--vipd-args", default="", help="extra arguments for `vipd run`")
    p.add_argument("--json-out", help="JSON lines of every run (default target/bench-compare/runs-<time>.jsonl)")
    p.add_argument("--markdown-out", help="also write the markdown summary here")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with configs and logs")
    a = p.parse_args()
    a.runs = a.runs if a.runs is not None else (1 if a.quick else 3)
    a.duration = a.duration if a.duration is not None else (0.5 if a.quick else 5.0)
    a.idle_conns = a.idle_conns if a.idle_conns is not None else (200 if a.quick else 10_000)
    a.workloads = [w.strip() for w in a.workloads.split(",") if w.strip()]
    for w in a.workloads:
        if w not in WL_TITLES:
            p.error(f"unknown workload {w!r}")
    if a.runs < 1 or a.duration <= 0:
        p.error("--runs and --duration must be positive")
    if not a.quick and a.runs < 3:
        log("warning: fewer than 3 runs; A B C / C B A alternation cannot cancel drift")
    passes = 2 if a.unpinned else 1
    per_run = a.duration + 1.5
    a.serve_bound = int(passes * (len(a.workloads) * a.runs * 5 * per_run + 600)) + 600

    command = shlex.join([sys.executable] + sys.argv)
    for tool in ("taskset", "haproxy", "nginx", "wrk", "iperf3"):
        if shutil.which(tool) is None:
            log(f"missing tool: {tool}")
            return 2
    h = Harness(a)
    h.raise_nofile()
    h.build()
    machine = machine_info()
    json_path = Path(a.json_out) if a.json_out else (
        REPO / "target" / "bench-compare" / f"runs-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    h.json_file = open(json_path, "w")
    h.json_file.write(json.dumps({"command": command, "machine": machine,
                                  "started": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                                  "vipd": dict(h.vipd_bins), "vipd_skipped": h.vipd_skip_reason or None,
                                  "options": {k: v for k, v in vars(a).items()}}) + "\n")

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        h.run_pass("pinned", True)
        if a.unpinned:
            h.run_pass("unpinned", False)
    except KeyboardInterrupt:
        log("interrupted; stopping everything")
        h.stop_all()
        return 130
    finally:
        h.stop_all()
        h.json_file.close()
        if not a.keep_tmp:
            shutil.rmtree(h.tmp, ignore_errors=True)
        else:
            log(f"configs and logs kept in {h.tmp}")
    md = summarize(h, command, machine)
    print(md)
    if a.markdown_out:
        Path(a.markdown_out).write_text(md + "\n")
    log(f"raw runs: {json_path}")
    if h.problems:
        log(f"{len(h.problems)} problem(s):")
        for pr in h.problems:
            log(f"  {pr}")
        if a.quick:
            return 1
    elif a.quick:
        log("quick: every target answered with no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
