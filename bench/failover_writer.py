#!/usr/bin/env python3
"""Tight, bounded write loop used by cluster.sh to measure leader-kill failover.

Sends one write at a time to a single node (a survivor), each with a short timeout, and
logs every attempt as a line:  ok|err  START_NS  END_NS  DETAIL
(START/END are CLOCK_REALTIME nanoseconds, the same clock as `date +%s%N`). cluster.sh
records the kill time and takes the first `ok` line whose START is after it.

A connection is kept alive between writes; after a timeout or a connection error it is
dropped and a new one is opened. The loop stops after --max-seconds, on SIGTERM/SIGINT,
or when --stop-file appears.
"""
import argparse
import base64
import http.client
import json
import os
import signal
import ssl
import sys
import time

PAYLOAD = "".join(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"[(i * 37) % 62]
    for i in range(1, 257)
)

stop = False


def on_signal(_sig, _frm):
    global stop
    stop = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["etcd", "weft"], required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cacert", help="CA file (weft: HTTPS)")
    ap.add_argument("--token", help="weft session token (or env WEFT_TOKEN)")
    ap.add_argument("--prefix", default="fo")
    ap.add_argument("--timeout", type=float, default=0.5, help="per-request timeout, s")
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--stop-file")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    token = a.token or os.environ.get("WEFT_TOKEN", "")

    ctx = None
    if a.kind == "weft":
        ctx = ssl.create_default_context(cafile=a.cacert)

    def connect():
        if ctx is not None:
            return http.client.HTTPSConnection(a.host, a.port, timeout=a.timeout, context=ctx)
        return http.client.HTTPConnection(a.host, a.port, timeout=a.timeout)

    value64 = base64.b64encode(PAYLOAD.encode()).decode()

    def request(name):
        if a.kind == "etcd":
            key64 = base64.b64encode(("bench/" + name).encode()).decode()
            body = json.dumps({"key": key64, "value": value64})
            return "/v3/kv/put", body, {"Content-Type": "application/json"}
        body = json.dumps({"name": name, "tags": {"payload": PAYLOAD}})
        return (
            "/edge/management/v1/services",
            body,
            {"Content-Type": "application/json", "zt-session": token},
        )

    deadline = time.monotonic() + a.max_seconds
    conn = None
    n = 0
    with open(a.out, "w", buffering=1) as out:
        while not stop and time.monotonic() < deadline:
            if a.stop_file and n % 8 == 0 and os.path.exists(a.stop_file):
                break
            n += 1
            path, body, headers = request("%s-%d" % (a.prefix, n))
            t0 = time.time_ns()
            detail = ""
            ok = False
            try:
                if conn is None:
                    conn = connect()
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                ok = 200 <= resp.status < 300
                detail = str(resp.status)
                if not ok:
                    try:
                        detail += ":" + json.loads(data)["error"]["code"]
                    except Exception:
                        pass
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # timeout, refused, reset, TLS error ...
                detail = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            t1 = time.time_ns()
            out.write("%s %d %d %s\n" % ("ok" if ok else "err", t0, t1, detail))
            if not ok and t1 - t0 < 5_000_000:
                time.sleep(0.005)  # fast failure (refused, 503): don't spin a core
    if conn is not None:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
