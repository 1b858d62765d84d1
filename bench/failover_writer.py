#!/usr/bin/env python3
"""Tight, bounded write loop used by cluster.sh to measure leader-kill failover.

Starts one write every --interval-ms (default 10 ms) to a single node (a survivor), each
with a short per-request timeout (--timeout, default 0.5 s), on a pool of worker threads
with one keep-alive connection each. So a request that hangs during the election (etcd
keeps a proposal on a leaderless follower until the client gives up) does not delay the
next one: the time resolution is the interval, not the timeout. Every attempt is logged as
    ok|err  START_NS  END_NS  DETAIL
(START/END are CLOCK_REALTIME nanoseconds, the same clock as `date +%s%N`). cluster.sh
records the kill time and takes the first `ok` line whose START is after it.

After a timeout or a connection error the worker's connection is dropped and reopened on
its next request. The loop stops after --max-seconds, on SIGTERM/SIGINT, or when
--stop-file appears.
"""
import argparse
import base64
import http.client
import json
import os
import queue
import signal
import ssl
import sys
import threading
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
    ap.add_argument("--interval-ms", type=float, default=10.0, help="start a write every ... ms")
    ap.add_argument("--workers", type=int, default=64, help="threads (max writes in flight)")
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

    lock = threading.Lock()
    jobs = queue.Queue()
    out = open(a.out, "w", buffering=1)

    def worker():
        conn = None
        while True:
            name = jobs.get()
            if name is None:
                break
            path, body, headers = request(name)
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
            with lock:
                out.write("%s %d %d %s\n" % ("ok" if ok else "err", t0, t1, detail))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.workers)]
    for t in threads:
        t.start()

    interval = a.interval_ms / 1000.0
    start = time.monotonic()
    deadline = start + a.max_seconds
    n = 0
    while not stop and time.monotonic() < deadline:
        if a.stop_file and n % 16 == 0 and os.path.exists(a.stop_file):
            break
        # Never queue up more than the pool can start: a backlog would only delay sends.
        if jobs.qsize() < 2:
            n += 1
            jobs.put("%s-%d" % (a.prefix, n))
        next_tick = start + n * interval
        delay = next_tick - time.monotonic()
        time.sleep(delay if delay > 0 else interval)
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join(timeout=a.timeout + 1)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
