#!/usr/bin/env python3
"""A stand-in for `vipd run`, used only to exercise compare.py's vipd path before vipd's data
plane exists: `fake_vipd.py run --apps FILE --bind-address 127.0.0.1 --worker-threads 1` reads
the same Marathon-shaped apps file compare.py writes for vipd, turns it into an nginx `stream`
config (round-robin over each app's TASK_RUNNING tasks, TCP and/or UDP per portDefinition) and
execs nginx in the foreground, so the PID compare.py started is the proxy's. Its numbers are
nginx's, not vipd's: use it to test the harness (`--vipd-bin benches/compare/fake_vipd.py`), never
to report results.
"""

import argparse
import json
import os
import sys
import tempfile

NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"


def main() -> None:
    p = argparse.ArgumentParser(prog="fake_vipd.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="serve the apps file (via nginx stream)")
    r.add_argument("--apps", required=True)
    r.add_argument("--bind-address", default="127.0.0.1")
    r.add_argument("--worker-threads", type=int, default=1)
    a = p.parse_args()
    with open(a.apps) as f:
        doc = json.load(f)
    ups, srv = [], []
    for i, app in enumerate(doc["apps"]):
        tasks = [t for t in app.get("tasks", []) if t.get("state") == "TASK_RUNNING"]
        for j, pd in enumerate(app.get("portDefinitions", [])):
            name = f"app{i}_{j}"
            servers = "".join(f"        server {t['host']}:{t['ports'][j]};\n" for t in tasks)
            ups.append(f"    upstream {name} {{\n{servers}    }}")
            for proto in pd.get("protocol", "tcp").split(","):
                udp = " udp" if proto == "udp" else ""
                srv.append(f"    server {{\n        listen {a.bind_address}:{pd['port']}{udp};\n"
                           f"        proxy_pass {name};\n        proxy_timeout 300s;\n    }}")
    d = tempfile.mkdtemp(prefix="fake-vipd-")
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"load_module {NGINX_STREAM_MODULE};\nworker_processes {a.worker_threads};\n"
                "events { worker_connections 20000; }\n"
                "stream {\n" + "\n".join(ups) + "\n" + "\n".join(srv) + "\n}\n")
    sys.stdout.flush()
    os.execvp("nginx", ["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log"),
                        "-g", f"daemon off; pid {os.path.join(d, 'nginx.pid')};"])


if __name__ == "__main__":
    main()
