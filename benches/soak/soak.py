#!/usr/bin/env python3
"""Chaos soak of vipd under load (issue 20, "Chaos soak under load").

One command: python3 benches/soak/soak.py --duration 10m [--seed N] [--vipd PATH]
             [--source marathon|mesos]

It runs, all on 127.0.0.1 (traffic only to 127.0.0.0/8):
  * with --source mesos, a fake Mesos master instead (POST /api/v1 SUBSCRIBE answered with
    RecordIO over chunked encoding: SUBSCRIBED with the state, TASK_ADDED/TASK_UPDATED, a
    HEARTBEAT every second; "Marathon" faults below become 503s, master restarts, silent streams
    and bad records); or
  * a fake Marathon (GET /v2/apps?embed=apps.tasks, GET /v2/apps/{id}, GET /v2/events as SSE
    with event_stream_attached and CRLF heartbeats, HEAD/GET /v2/pods -> 404);
  * tagged TCP and UDP echo backends (a TCP backend greets with "<tag>\\n"; a UDP backend
    answers "<tag>|<datagram>"), which are the tasks of the apps it serves;
  * vipd itself, then continuous load: short TCP connections, long-lived streaming TCP
    connections (through the service port and, when 127.64.x can be bound, the named VIP), and
    UDP flows; and, at seeded random intervals, chaos: table changes through status_update_event,
    backend kills and restarts, Marathon 500s, a Marathon restart on the same port, a silent
    stream, garbage on the stream, SIGHUP, admin scrapes and SIGUSR2 in-place upgrades.

Every client failure is classified: *allowed* when its connection was in flight to a backend at
the moment that backend was killed (a failure whose backend is unknown - no greeting or no UDP
reply yet - is allowed when a backend of its protocol was killed while it was in flight, and
counted in allowed_unattributed too); anything else is a *defect*. The last line is one JSON
object; exit status 1 on defects or panics. Standard library only. Stops only the processes it
started, by PID.
"""

import argparse
import ctypes
import http.server
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

T0 = time.monotonic()
MAX_DEFECT_LINES = 50


def now():
    return time.monotonic()


def log(msg):
    print(f"[soak {now() - T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_duration(s):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {s!r} (use 45s, 10m, 1h)")
    v = float(m.group(1))
    unit = m.group(2) or "s"
    return v * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# ---------------------------------------------------------------- backends


class Kills:
    """Kill moments of every backend: (tag, proto, t_kill)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []

    def add(self, tag, proto):
        with self.lock:
            self.events.append((tag, proto, now()))

    def killed_during(self, tag, proto, start, end):
        with self.lock:
            for t, p, k in self.events:
                if p == proto and (tag is None or t == tag) and start <= k <= end + 0.05:
                    return True
        return False


class TcpEcho:
    def __init__(self, tag):
        self.tag = tag
        self.proto = "tcp"
        self.port = None
        self.lock = threading.Lock()
        self.conns = set()
        self.lsock = None
        self.alive = False

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):
            try:
                s.bind(("127.0.0.1", self.port or 0))
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"backend {self.tag}: cannot rebind port {self.port}")
        s.listen(256)
        self.port = s.getsockname()[1]
        with self.lock:
            self.lsock = s
            self.alive = True
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            with self.lock:
                if not self.alive:
                    c.close()
                    return
                self.conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.sendall(f"{self.tag}\n".encode())
            while True:
                b = c.recv(65536)
                if not b:
                    break
                c.sendall(b)
        except OSError:
            pass
        finally:
            with self.lock:
                self.conns.discard(c)
            try:
                c.close()
            except OSError:
                pass

    def kill(self, kills):
        with self.lock:
            self.alive = False
            kills.add(self.tag, self.proto)
            if self.lsock:
                try:
                    self.lsock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.lsock.close()
                self.lsock = None
            for c in list(self.conns):
                try:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()


class UdpEcho:
    def __init__(self, tag):
        self.tag = tag
        self.proto = "udp"
        self.port = None
        self.sock = None
        self.alive = False
        self.lock = threading.Lock()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):
            try:
                s.bind(("127.0.0.1", self.port or 0))
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"backend {self.tag}: cannot rebind port {self.port}")
        self.port = s.getsockname()[1]
        with self.lock:
            self.sock = s
            self.alive = True
        threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        prefix = f"{self.tag}|".encode()
        while True:
            try:
                b, peer = s.recvfrom(65536)
                if peer is None:  # the socket was shut down by kill()
                    return
                s.sendto(prefix + b, peer)
            except (OSError, TypeError):
                return

    def kill(self, kills):
        with self.lock:
            self.alive = False
            kills.add(self.tag, self.proto)
            if self.sock:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self.sock.close()
                self.sock = None


# ---------------------------------------------------------------- fake Marathon


class FakeMarathon:
    """The state every generation of the HTTP server serves; it survives restarts."""

    def __init__(self, tcp_service_port, udp_service_port, vip_label):
        self.lock = threading.Lock()
        self.tcp_service_port = tcp_service_port
        self.udp_service_port = udp_service_port
        self.vip_label = vip_label
        self.tasks = {}  # task id -> backend (in the table)
        self.fail500 = False
        self.silent = False
        self.subscribers = []  # queues of live streams
        self.generation = 0
        self.server = None
        self.port = None
        self.attached = 0

    def _app(self, app_id):
        proto = "tcp" if app_id == "/soak/tcp" else "udp"
        pd = {"port": self.tcp_service_port if proto == "tcp" else self.udp_service_port,
              "protocol": proto, "name": proto}
        if proto == "tcp" and self.vip_label:
            pd["labels"] = {"VIP_0": self.vip_label}
        tasks = [
            {"id": tid, "appId": app_id, "host": "127.0.0.1", "ports": [b.port],
             "state": "TASK_RUNNING", "ipAddresses": [], "healthCheckResults": [],
             "version": "2024-01-01T00:00:00.000Z", "slaveId": "agent-1"}
            for tid, b in sorted(self.tasks.items()) if b.proto == proto
        ]
        return {"id": app_id, "version": "2024-01-01T00:00:00.000Z", "instances": len(tasks),
                "networks": [{"mode": "host"}], "portDefinitions": [pd], "healthChecks": [],
                "labels": {}, "tasks": tasks}

    def apps_doc(self):
        with self.lock:
            return {"apps": [self._app("/soak/tcp"), self._app("/soak/udp")]}

    def app_doc(self, app_id):
        with self.lock:
            if app_id in ("/soak/tcp", "/soak/udp"):
                return {"app": self._app(app_id)}
            return None

    def publish(self, frame):
        with self.lock:
            subs = list(self.subscribers)
        for q in subs:
            q.put(frame)

    def status_update(self, task_id, backend, status):
        app_id = "/soak/tcp" if backend.proto == "tcp" else "/soak/udp"
        with self.lock:
            if status == "TASK_RUNNING":
                self.tasks[task_id] = backend
            else:
                self.tasks.pop(task_id, None)
        data = {"eventType": "status_update_event", "timestamp": "2024-01-01T00:00:01.000Z",
                "slaveId": "agent-1", "taskId": task_id, "taskStatus": status, "message": "",
                "appId": app_id, "host": "127.0.0.1", "ipAddresses": [], "ports": [backend.port],
                "version": "2024-01-01T00:00:00.000Z"}
        self.publish(f"event: status_update_event\r\ndata: {json.dumps(data)}\r\n\r\n".encode())

    def cut_streams(self):
        with self.lock:
            self.generation += 1
            subs = list(self.subscribers)
        for q in subs:
            q.put(None)

    def has_stream(self):
        with self.lock:
            return bool(self.subscribers) and not self.fail500 and not self.silent

    def start(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def _send(self, code, body=b"", ctype="application/json"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self):
                self._send(404)

            def do_GET(self):
                with fake.lock:
                    fail = fake.fail500
                path = self.path.split("?", 1)[0]
                if path.startswith("/v2/pods"):
                    return self._send(404, b'{"message":"not found"}')
                if fail and path.startswith("/v2/"):
                    return self._send(500, b'{"message":"soak: injected 500"}')
                if path in ("/v2/apps", "/v2/apps/"):
                    return self._send(200, json.dumps(fake.apps_doc()).encode())
                if path.startswith("/v2/apps/"):
                    doc = fake.app_doc(path[len("/v2/apps"):])
                    if doc is None:
                        return self._send(404, b'{"message":"App does not exist"}')
                    return self._send(200, json.dumps(doc).encode())
                if path == "/v2/events":
                    return self._events()
                return self._send(404, b"{}")

            def _events(self):
                accept = self.headers.get_all("Accept") or []
                if not any(a.strip() == "text/event-stream" for a in accept):
                    return self._send(405, b"HTTP method GET is not supported", "text/plain")
                q = queue.Queue()
                with fake.lock:
                    gen = fake.generation
                    fake.subscribers.append(q)
                    fake.attached += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream;charset=utf-8")
                    self.end_headers()
                    att = {"eventType": "event_stream_attached", "remoteAddress": "127.0.0.1",
                           "timestamp": "2024-01-01T00:00:00.000Z"}
                    self.wfile.write(
                        f"event: event_stream_attached\r\ndata: {json.dumps(att)}\r\n\r\n".encode())
                    self.wfile.flush()
                    last_beat = now()
                    while True:
                        with fake.lock:
                            if fake.generation != gen:
                                return
                            silent = fake.silent
                        try:
                            frame = q.get(timeout=0.5)
                        except queue.Empty:
                            frame = b""
                        if frame is None:
                            return
                        if silent:
                            continue
                        if frame:
                            self.wfile.write(frame)
                            self.wfile.flush()
                        if now() - last_beat >= 1.0:
                            self.wfile.write(b"\r\n")
                            self.wfile.flush()
                            last_beat = now()
                except OSError:
                    return
                finally:
                    with fake.lock:
                        if q in fake.subscribers:
                            fake.subscribers.remove(q)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(100):
            try:
                srv = Server(("127.0.0.1", self.port or 0), Handler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"fake Marathon cannot rebind 127.0.0.1:{self.port}")
        self.port = srv.server_address[1]
        self.server = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()

    def stop(self):
        srv, self.server = self.server, None
        if srv:
            srv.shutdown()
            srv.server_close()
        self.cut_streams()


class FakeMesos:
    """A Mesos master's operator API (POST /api/v1 SUBSCRIBE, RecordIO over chunked encoding:
    SUBSCRIBED with the whole state, TASK_ADDED / TASK_UPDATED, HEARTBEAT every second). The same
    interface as FakeMarathon, so the chaos loop drives either; its state survives restarts.
    With `--mesos` alone there are no service ports: the TCP tasks carry an IP VIP on
    127.0.0.1:<tcp port> and the named VIP, the UDP tasks an IP VIP on 127.0.0.1:<udp port>."""

    FW = "soak-marathon-fw"

    def __init__(self, tcp_service_port, udp_service_port, vip_label):
        self.lock = threading.Lock()
        self.tcp_service_port = tcp_service_port
        self.udp_service_port = udp_service_port
        self.vip_label = vip_label
        self.tasks = {}  # task id -> backend (in the table)
        self.fail500 = False  # answers 503 (no leader) while set
        self.silent = False  # no record, not even a heartbeat, while set
        self.subscribers = []
        self.generation = 0
        self.server = None
        self.port = None
        self.attached = 0

    def _task(self, tid, b, state):
        labels = [{"key": "network-scope", "value": "host"}]
        sp = self.tcp_service_port if b.proto == "tcp" else self.udp_service_port
        labels.append({"key": "VIP_0", "value": f"127.0.0.1:{sp}"})
        if b.proto == "tcp" and self.vip_label:
            labels.append({"key": "VIP_1", "value": self.vip_label})
        status = {"task_id": {"value": tid}, "state": state, "timestamp": time.time(),
                  "agent_id": {"value": "agent-1"}, "source": "SOURCE_EXECUTOR"}
        return {"name": tid, "task_id": {"value": tid}, "framework_id": {"value": self.FW},
                "agent_id": {"value": "agent-1"}, "state": state, "statuses": [status],
                "status_update_state": state,
                "resources": [{"name": "ports", "type": "RANGES",
                               "ranges": {"range": [{"begin": b.port, "end": b.port}]}}],
                "discovery": {"visibility": "FRAMEWORK", "name": tid, "ports": {"ports": [
                    {"number": b.port, "name": b.proto, "protocol": b.proto,
                     "labels": {"labels": labels}}]}}}

    def subscribed(self):
        with self.lock:
            tasks = [self._task(t, b, "TASK_RUNNING") for t, b in sorted(self.tasks.items())]
        state = {
            "get_tasks": {"tasks": tasks} if tasks else {}, "get_executors": {},
            "get_frameworks": {"frameworks": [{"framework_info": {
                "id": {"value": self.FW}, "name": "marathon", "user": "root"},
                "active": True, "connected": True, "recovered": False}]},
            "get_agents": {"agents": [{"agent_info": {
                "id": {"value": "agent-1"}, "hostname": "127.0.0.1", "port": 5051},
                "active": True, "version": "1.9.0"}]},
        }
        return {"type": "SUBSCRIBED", "subscribed": {
            "get_state": state, "heartbeat_interval_seconds": 1.0}}

    @staticmethod
    def record(event):
        body = json.dumps(event).encode()
        return str(len(body)).encode() + b"\n" + body

    def publish(self, frame):
        with self.lock:
            subs = list(self.subscribers)
        for q in subs:
            q.put(frame)

    def status_update(self, task_id, backend, status):
        with self.lock:
            if status == "TASK_RUNNING":
                self.tasks[task_id] = backend
            else:
                self.tasks.pop(task_id, None)
            task = self._task(task_id, backend, status)
        if status == "TASK_RUNNING":
            event = {"type": "TASK_ADDED", "task_added": {"task": task}}
        else:
            event = {"type": "TASK_UPDATED", "task_updated": {
                "framework_id": {"value": self.FW}, "status": task["statuses"][0],
                "state": status}}
        self.publish(self.record(event))

    def cut_streams(self):
        with self.lock:
            self.generation += 1
            subs = list(self.subscribers)
        for q in subs:
            q.put(None)

    def has_stream(self):
        with self.lock:
            return bool(self.subscribers) and not self.fail500 and not self.silent

    def start(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code, body=b""):
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _chunk(self, data):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                if self.path != "/api/v1":
                    return self._send(404)
                with fake.lock:
                    fail = fake.fail500
                if fail:
                    return self._send(503, b"No leader elected")
                try:
                    call = json.loads(body)
                except ValueError:
                    return self._send(400)
                if call.get("type") != "SUBSCRIBE":
                    return self._send(400)
                q = queue.Queue()
                with fake.lock:
                    gen = fake.generation
                    fake.subscribers.append(q)
                    fake.attached += 1
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self._chunk(fake.record(fake.subscribed()))
                    last_beat = now()
                    while True:
                        with fake.lock:
                            if fake.generation != gen:
                                return
                            silent = fake.silent
                        try:
                            frame = q.get(timeout=0.25)
                        except queue.Empty:
                            frame = b""
                        if frame is None:
                            return
                        if silent:
                            continue
                        if frame:
                            self._chunk(frame)
                        if now() - last_beat >= 1.0:
                            self._chunk(fake.record({"type": "HEARTBEAT"}))
                            last_beat = now()
                except OSError:
                    return
                finally:
                    self.close_connection = True
                    with fake.lock:
                        if q in fake.subscribers:
                            fake.subscribers.remove(q)

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(100):
            try:
                srv = Server(("127.0.0.1", self.port or 0), Handler)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"fake Mesos master cannot rebind 127.0.0.1:{self.port}")
        self.port = srv.server_address[1]
        self.server = srv
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()

    def stop(self):
        srv, self.server = self.server, None
        if srv:
            srv.shutdown()
            srv.server_close()
        self.cut_streams()


# ---------------------------------------------------------------- vipd process


PR_SET_CHILD_SUBREAPER = 36


class Vipd:
    def __init__(self, path, args, logfile):
        self.lines = []
        self.lock = threading.Lock()
        self.logfile = open(logfile, "w")
        # The successor of an upgrade is the old process's child: be its subreaper so that it
        # is reparented to us when its predecessor exits, and we reap it.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except OSError:
            pass
        self.proc = subprocess.Popen([path] + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        self.pids = [self.pid]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.logfile.write(line + "\n")
            self.logfile.flush()
            with self.lock:
                self.lines.append(line)

    def log_lines(self):
        with self.lock:
            return list(self.lines)

    def wait_log(self, needle, timeout, after=0):
        deadline = now() + timeout
        while True:
            lines = self.log_lines()
            for i in range(after, len(lines)):
                if needle in lines[i]:
                    return i, lines[i]
            if now() >= deadline:
                return None
            time.sleep(0.05)

    def reap(self):
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return

    def alive(self, pid=None):
        pid = pid or self.pid
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("State:"):
                        return "Z" not in line.split()[1]
        except OSError:
            return False
        return False

    def rss_mib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def strip_ansi(s):
    return re.sub(r"\x1b\[[0-9;]*m", "", s)


def logged_addr(line):
    for w in strip_ansi(line).split():
        for p in ("local=", "listen="):
            if w.startswith(p):
                v = w[len(p):].strip('"')
                host, _, port = v.rpartition(":")
                if port.isdigit():
                    return host, int(port)
    return None


def http_get(addr, path, timeout=5.0):
    url = f"http://{addr[0]}:{addr[1]}{path}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---------------------------------------------------------------- load


class Stats:
    def __init__(self, kills):
        self.lock = threading.Lock()
        self.kills = kills
        self.connections = 0
        self.flows = 0
        self.failed = 0
        self.allowed = 0
        self.allowed_unattributed = 0
        self.defects = 0
        self.defect_lines = 0

    def ok(self, kind):
        with self.lock:
            if kind == "udp":
                self.flows += 1
            else:
                self.connections += 1

    def fail(self, kind, proto, target, tag, start, err):
        end = now()
        self._classify(kind, proto, target, tag, start, end, err)
        time.sleep(0.05)  # a failing target (vipd gone) must not turn a loop into a spin

    def _classify(self, kind, proto, target, tag, start, end, err):
        with self.lock:
            if proto == "udp":
                self.flows += 1
            else:
                self.connections += 1
            self.failed += 1
            if tag is not None and self.kills.killed_during(tag, proto, start, end):
                self.allowed += 1
                return
            if tag is None and self.kills.killed_during(None, proto, start, end):
                self.allowed += 1
                self.allowed_unattributed += 1
                return
            self.defects += 1
            if self.defect_lines < MAX_DEFECT_LINES:
                self.defect_lines += 1
                print(f"DEFECT {kind} to {target[0]}:{target[1]} backend={tag} "
                      f"t={start - T0:.2f}s..{end - T0:.2f}s: {err}", file=sys.stderr, flush=True)

    def defect(self, what):
        with self.lock:
            self.defects += 1
            if self.defect_lines < MAX_DEFECT_LINES:
                self.defect_lines += 1
                print(f"DEFECT {what}", file=sys.stderr, flush=True)


def read_line(sock, deadline):
    buf = b""
    while not buf.endswith(b"\n"):
        sock.settimeout(max(0.05, deadline - now()))
        b = sock.recv(256)
        if not b:
            raise ConnectionError(f"closed before the greeting (got {buf!r})")
        buf += b
        if len(buf) > 200:
            raise ConnectionError("no greeting line")
    return buf.decode().strip()


def recv_exact(sock, n, deadline):
    buf = bytearray()
    while len(buf) < n:
        sock.settimeout(max(0.05, deadline - now()))
        b = sock.recv(n - len(buf))
        if not b:
            raise ConnectionError(f"closed after {len(buf)} of {n} echoed bytes")
        buf += b
    return bytes(buf)


class Load:
    def __init__(self, stats, tcp_targets, udp_target, seed):
        self.stats = stats
        self.tcp_targets = tcp_targets
        self.udp_target = udp_target
        self.seed = seed
        self.running = threading.Event()  # set: generate load
        self.stop = threading.Event()
        self.threads = []
        self.active = 0
        self.lock = threading.Lock()

    def _enter(self):
        with self.lock:
            self.active += 1

    def _leave(self):
        with self.lock:
            self.active -= 1

    def start(self, n_short=3, n_long=3, n_udp=2):
        for i in range(n_short):
            self._spawn(self._short, i)
        for i in range(n_long):
            self._spawn(self._long, 100 + i)
        for i in range(n_udp):
            self._spawn(self._udp, 200 + i)

    def _spawn(self, f, i):
        t = threading.Thread(target=f, args=(random.Random(self.seed * 1000 + i),), daemon=True)
        t.start()
        self.threads.append(t)

    def _wait_running(self):
        while not self.stop.is_set():
            if self.running.wait(0.2):
                return not self.stop.is_set()
        return False

    def _short(self, rng):
        while self._wait_running():
            target = rng.choice(self.tcp_targets)
            self._enter()
            start, tag = now(), None
            try:
                with socket.create_connection(target, timeout=5) as s:
                    deadline = now() + 5
                    tag = read_line(s, deadline)
                    payload = rng.randbytes(rng.randint(1, 4096))
                    s.sendall(payload)
                    if recv_exact(s, len(payload), deadline) != payload:
                        raise ConnectionError("echo mismatch")
                self.stats.ok("tcp")
            except (OSError, ConnectionError) as e:
                self.stats.fail("tcp-short", "tcp", target, tag, start, repr(e))
            finally:
                self._leave()
            time.sleep(rng.uniform(0.005, 0.03))

    def _long(self, rng):
        while self._wait_running():
            target = rng.choice(self.tcp_targets)
            life = rng.uniform(3, 12)
            self._enter()
            start, tag = now(), None
            try:
                with socket.create_connection(target, timeout=5) as s:
                    tag = read_line(s, now() + 5)
                    end = now() + life
                    while now() < end and self.running.is_set():
                        payload = rng.randbytes(rng.randint(1, 16384))
                        s.sendall(payload)
                        if recv_exact(s, len(payload), now() + 5) != payload:
                            raise ConnectionError("echo mismatch")
                        time.sleep(0.05)
                self.stats.ok("tcp")
            except (OSError, ConnectionError) as e:
                self.stats.fail("tcp-long", "tcp", target, tag, start, repr(e))
            finally:
                self._leave()

    def _udp(self, rng):
        while self._wait_running():
            self._enter()
            start, tag = now(), None
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    s.connect(self.udp_target)
                    for _ in range(rng.randint(3, 10)):
                        payload = rng.randbytes(rng.randint(1, 1200))
                        # One resend after 1 s (a full loopback buffer may drop a datagram),
                        # then the flow counts as failed.
                        got = None
                        for _attempt in range(2):
                            s.send(payload)
                            s.settimeout(1.0)
                            try:
                                got = s.recv(65536)
                                break
                            except socket.timeout:
                                continue
                        if got is None:
                            raise ConnectionError("no UDP reply")
                        t, _, body = got.partition(b"|")
                        if body != payload:
                            raise ConnectionError("UDP echo mismatch")
                        tag = t.decode()
                        time.sleep(0.02)
                self.stats.ok("udp")
            except (OSError, ConnectionError) as e:
                self.stats.fail("udp", "udp", self.udp_target, tag, start, repr(e))
            finally:
                self._leave()

    def pause(self, timeout=30):
        self.running.clear()
        deadline = now() + timeout
        while now() < deadline:
            with self.lock:
                if self.active == 0:
                    return True
            time.sleep(0.05)
        return False

    def finish(self):
        self.pause()
        self.stop.set()
        for t in self.threads:
            t.join(5)


# ---------------------------------------------------------------- main


def can_bind(ip):
    try:
        s = socket.socket()
        s.bind((ip, 0))
        s.close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=parse_duration, default=600.0,
                    help="how long the load runs: 45s, 10m, 1h (default 10m)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", choices=["marathon", "mesos"], default="marathon",
                    help="the cluster state vipd reads: a fake Marathon (service ports and a "
                         "named VIP) or a fake Mesos master (IP VIPs and a named VIP)")
    ap.add_argument("--vipd", default=None,
                    help="vipd binary (default target/release/vipd, else target/debug/vipd)")
    ap.add_argument("--log", default=None, help="vipd's log file (default /tmp/vipd-soak-PID.log)")
    a = ap.parse_args()
    path = a.vipd
    if path is None:
        path = "target/release/vipd" if os.path.exists("target/release/vipd") else "target/debug/vipd"
    if not os.path.exists(path):
        print(f"soak: no vipd binary at {path}", file=sys.stderr)
        return 2
    path = os.path.abspath(path)
    rng = random.Random(a.seed)
    logfile = a.log or f"/tmp/vipd-soak-{os.getpid()}.log"

    kills = Kills()
    stats = Stats(kills)
    tcp_backends = [TcpEcho(f"tcp-{i}") for i in range(4)]
    udp_backends = [UdpEcho(f"udp-{i}") for i in range(3)]
    for b in tcp_backends + udp_backends:
        b.start()
    tcp_sp, udp_sp = free_port(), free_port(socket.SOCK_DGRAM)
    vip_ok = can_bind("127.64.0.1")
    fake_class = FakeMesos if a.source == "mesos" else FakeMarathon
    fake = fake_class(tcp_sp, udp_sp, "/soak-tcp:7000" if vip_ok else None)
    task_of = {b.tag: f"soak_{b.proto}.{b.tag}" for b in tcp_backends + udp_backends}
    # One TCP backend starts outside the table: table changes add and remove it.
    for b in tcp_backends[:3] + udp_backends:
        fake.tasks[task_of[b.tag]] = b
    fake.start()
    url = f"http://127.0.0.1:{fake.port}"
    log(f"fake {a.source} {url}; tcp port {tcp_sp}, udp {udp_sp}; vipd {path}")

    if a.source == "mesos":
        source_args = ["--mesos", url, "--mesos-backoff-initial", "200ms",
                       "--mesos-backoff-max", "2s", "--mesos-connect-timeout", "1s",
                       "--mesos-timeout", "5s"]
    else:
        source_args = ["--marathon", url,
                       "--marathon-stream-timeout", "3s", "--marathon-resync-interval", "20s",
                       "--marathon-backoff-initial", "200ms", "--marathon-backoff-max", "2s",
                       "--marathon-connect-timeout", "1s", "--marathon-timeout", "5s",
                       "--marathon-event-debounce", "100ms"]
    args = ["run", *source_args, "--bind-address", "127.0.0.1",
            "--admin-listen", "127.0.0.1:0", "--vip-cidr", "127.64.0.0/16",
            "--drain-timeout", "30s", "--udp-idle-timeout", "3s"]
    vipd = Vipd(path, args, logfile)
    result = None
    try:
        result = soak(a, rng, vipd, fake, stats, kills, tcp_backends, udp_backends, task_of,
                      tcp_sp, udp_sp, vip_ok)
    finally:
        stop_vipd(vipd)
        fake.stop()
    panics = sum(1 for line in vipd.log_lines() if "panicked" in line)
    result["panics"] = panics
    result["vipd_log"] = logfile
    ok = result["defects"] == 0 and panics == 0
    print(f"soak: {'PASS' if ok else 'FAIL'}: {result['defects']} defects, {panics} panics; "
          f"RSS goal (end within 10 % of warm-up) {'met' if result['rss_goal_met'] else 'NOT met'}; "
          f"fd goal (end within warm-up +/- 5) {'met' if result['fds_goal_met'] else 'NOT met'}",
          file=sys.stderr, flush=True)
    print(json.dumps(result), flush=True)
    return 0 if ok else 1


def stop_vipd(vipd):
    pids = [p for p in vipd.pids if vipd.alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = now() + 40
    while now() < deadline and any(vipd.alive(p) for p in pids):
        vipd.reap()
        time.sleep(0.1)
    for p in pids:
        if vipd.alive(p):
            log(f"vipd pid {p} did not exit on SIGTERM; SIGKILL")
            os.kill(p, signal.SIGKILL)
    time.sleep(0.2)
    vipd.reap()


def find_vip(admin):
    _, body = http_get(admin, "/v1/vips")
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    items = doc if isinstance(doc, list) else (doc.get("vips") or doc.get("frontends") or [])
    for v in items:
        if isinstance(v, dict) and v.get("vip_name") and v.get("protocol", "tcp") == "tcp":
            for k in ("frontend", "vip", "address", "listen"):
                s = str(v.get(k) or "")
                h, _, p = s.rpartition(":")
                if h.startswith("127.64.") and p.isdigit():
                    return h, int(p)
            ip, port = v.get("ip"), v.get("port")
            if ip and port:
                return str(ip), int(port)
    return None


def soak(a, rng, vipd, fake, stats, kills, tcp_backends, udp_backends, task_of, tcp_sp, udp_sp,
         vip_ok):
    found = vipd.wait_log("admin server listening", 60)
    if not found:
        raise SystemExit("soak: vipd never logged its admin address:\n" +
                         "\n".join(vipd.log_lines()[-30:]))
    admin = logged_addr(found[1])
    deadline = now() + 60
    while True:
        try:
            if http_get(admin, "/readyz", 2)[0] == 200:
                break
        except OSError:
            pass
        if now() > deadline:
            raise SystemExit("soak: /readyz never answered 200")
        time.sleep(0.1)
    log(f"vipd pid {vipd.pid} ready; admin {admin[0]}:{admin[1]}")

    tcp_targets = [("127.0.0.1", tcp_sp)]
    vip_note = "skipped: 127.64.0.1 cannot be bound here"
    if vip_ok:
        vip_addr = None
        deadline = now() + 15
        while vip_addr is None and now() < deadline:
            vip_addr = find_vip(admin)
            if vip_addr is None:
                time.sleep(0.2)
        if vip_addr:
            try:
                with socket.create_connection(vip_addr, timeout=3) as s:
                    read_line(s, now() + 3)
                tcp_targets.append(vip_addr)
                vip_note = f"named VIP /soak-tcp:7000 at {vip_addr[0]}:{vip_addr[1]}"
            except (OSError, ConnectionError) as e:
                vip_note = f"skipped: the named VIP at {vip_addr} does not answer ({e!r})"
        else:
            vip_note = "skipped: no named VIP address in /v1/vips"
    log(f"VIP: {vip_note}")

    load = Load(stats, tcp_targets, ("127.0.0.1", udp_sp), a.seed)
    load.start()
    t_end = now() + a.duration
    warm = min(60.0, max(5.0, a.duration * 0.1))
    load.running.set()
    time.sleep(warm)
    # Baseline: load paused, connections closed, UDP flows idled out (--udp-idle-timeout 3s).
    load.pause()
    time.sleep(4.5)
    rss_start, fds_start = vipd.rss_mib(), vipd.fds()
    log(f"warm-up done: RSS {rss_start:.1f} MiB, {fds_start} fds (pid {vipd.pid})")
    load.running.set()

    injections = {}
    upgrades_ok = 0
    last_upgrade = now() - 20
    down = {}  # tag -> "killed" | "removed"
    kinds = ["table", "table", "kill", "kill", "m500", "mrestart", "silent", "garbage",
             "sighup", "scrape", "scrape", "upgrade"]
    stop_chaos = t_end - 8  # the last seconds are load only, after every fault has healed
    every = tcp_backends + udp_backends

    def wait_stream(timeout=15):
        d = now() + timeout
        while now() < d:
            if fake.has_stream():
                return True
            time.sleep(0.05)
        return False

    def restore_one(proto):
        for tag, how in list(down.items()):
            b = next(x for x in every if x.tag == tag)
            if b.proto != proto:
                continue
            if how == "killed":
                b.start()
            wait_stream()
            fake.status_update(task_of[tag], b, "TASK_RUNNING")
            del down[tag]
            return f"restored {tag} ({how})"
        return None

    # The first round takes every kind once (in a seeded order), so a short smoke sees each.
    first_round = sorted(set(kinds))
    rng.shuffle(first_round)
    while now() < stop_chaos:
        time.sleep(rng.uniform(0.5, 3.0))
        if now() >= stop_chaos:
            break
        if not vipd.alive():
            stats.defect(f"vipd pid {vipd.pid} exited during the soak")
            break
        kind = first_round.pop() if first_round else rng.choice(kinds)
        # Long streams live at most 12 s, well inside the 30 s drain: one upgrade per 20 s.
        if kind == "upgrade" and now() - last_upgrade < 20:
            kind = "scrape"
        note = ""
        if kind in ("table", "kill"):
            proto = rng.choice(["tcp", "udp"])
            pool = [b for b in every if b.proto == proto]
            up = [b for b in pool if b.tag not in down and task_of[b.tag] in fake.tasks]
            outside = [b for b in pool if b.tag not in down and task_of[b.tag] not in fake.tasks]
            if rng.random() < 0.4 and any(t.startswith(proto) for t in down):
                note = restore_one(proto) or ""
            elif kind == "table" and outside:
                b = rng.choice(outside)
                wait_stream()
                fake.status_update(task_of[b.tag], b, "TASK_RUNNING")
                note = f"added {b.tag}"
            elif len(up) >= 2:
                b = rng.choice(up)
                wait_stream()
                if kind == "kill":
                    b.kill(kills)
                    fake.status_update(task_of[b.tag], b, "TASK_KILLED")
                    down[b.tag] = "killed"
                    note = f"killed {b.tag}"
                else:
                    fake.status_update(task_of[b.tag], b, "TASK_FINISHED")
                    if rng.random() < 0.5:
                        down[b.tag] = "removed"
                    note = f"removed {b.tag} from the table (it keeps running)"
            else:
                note = restore_one(proto) or "nothing to do"
        elif kind == "m500":
            fake.fail500 = True
            fake.cut_streams()
            time.sleep(rng.uniform(1, 4))
            fake.fail500 = False
        elif kind == "mrestart":
            fake.stop()
            time.sleep(rng.uniform(0.5, 3))
            fake.start()
        elif kind == "silent":
            fake.silent = True
            time.sleep(rng.uniform(3.5, 6))
            fake.silent = False
        elif kind == "garbage":
            if a.source == "mesos":
                junk = rng.choice([b"12x\n{}", b"10\n{not json}",
                                   FakeMesos.record({"type": "TASK_ADDED", "task_added": 5}),
                                   rng.randbytes(64)])
            else:
                junk = rng.choice([b"\xff\xfe\x00garbage\r\n\r\n", b"data: {not json\r\n\r\n",
                                   b"event: status_update_event\r\ndata: [1,2\r\n\r\n",
                                   rng.randbytes(64) + b"\r\n\r\n"])
            fake.publish(junk)
        elif kind == "sighup":
            os.kill(vipd.pid, signal.SIGHUP)
        elif kind == "scrape":
            for p in ("/metrics", "/v1/vips"):
                try:
                    code, _ = http_get(admin, p)
                    if code != 200:
                        raise OSError(f"status {code}")
                except OSError as e:
                    stats.defect(f"admin GET {p} failed: {e!r}")
        elif kind == "upgrade":
            before = len(vipd.log_lines())
            old = vipd.pid
            os.kill(old, signal.SIGUSR2)
            got = vipd.wait_log("upgrade complete: serving", 60, after=before)
            if got:
                m = re.search(r"pid=(\d+)", strip_ansi(got[1]))
                if m:
                    vipd.pid = int(m.group(1))
                    vipd.pids.append(vipd.pid)
                    upgrades_ok += 1
                    note = f"pid {old} -> {vipd.pid}"
                else:
                    stats.defect(f"upgrade: no pid= in {got[1]!r}")
            else:
                failed = vipd.wait_log("upgrade failed", 0, after=before)
                stats.defect(f"upgrade of pid {old} did not complete in 60 s"
                             + (f": {failed[1]}" if failed else ""))
            last_upgrade = now()
        injections[kind] = injections.get(kind, 0) + 1
        vipd.reap()
        log(f"inject {kind} {note}".rstrip())

    # Heal: every backend back in the table for the last seconds and the end measurement.
    for proto in ("tcp", "udp"):
        while restore_one(proto):
            pass
    while now() < t_end:
        time.sleep(0.2)
    load.finish()
    # The predecessors of upgrades exit after their drain; wait for them (bounded).
    deadline = now() + 35
    while now() < deadline and any(vipd.alive(p) for p in vipd.pids if p != vipd.pid):
        vipd.reap()
        time.sleep(0.2)
    time.sleep(4.5)  # UDP flows idle out (--udp-idle-timeout 3s)
    if not vipd.alive():
        stats.defect(f"vipd pid {vipd.pid} is not running at the end")
        rss_end, fds_end = None, None
    else:
        rss_end, fds_end = vipd.rss_mib(), vipd.fds()
    log(f"end: RSS {rss_end if rss_end is None else round(rss_end, 1)} MiB, {fds_end} fds "
        f"(pid {vipd.pid})")
    lingering = [p for p in vipd.pids if p != vipd.pid and vipd.alive(p)]
    if lingering:
        stats.defect(f"upgrade predecessors still running at the end: {lingering}")
    return {
        "connections": stats.connections, "flows": stats.flows, "failed": stats.failed,
        "allowed": stats.allowed, "defects": stats.defects, "panics": 0,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": None if rss_end is None else round(rss_end, 1),
        "fds_start": fds_start, "fds_end": fds_end,
        "allowed_unattributed": stats.allowed_unattributed,
        "rss_goal_met": rss_end is not None and rss_start * 0.9 <= rss_end <= rss_start * 1.1,
        "fds_goal_met": fds_end is not None and abs(fds_end - fds_start) <= 5,
        "duration_s": round(a.duration, 1), "seed": a.seed,
        "upgrades": upgrades_ok, "pids": vipd.pids, "injections": injections,
        "backend_kills": len(kills.events), "vip": vip_note,
        "source": a.source, "source_streams_attached": fake.attached,
    }


if __name__ == "__main__":
    sys.exit(main())
