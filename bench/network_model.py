#!/usr/bin/env python3
"""Loads a network model into a weft cluster and times policy queries (network_model.sh).

  load     creates identities, services, edge routers and policies through the management
           API with many concurrent keep-alive HTTPS clients (--procs processes x --threads
           threads each), plus one non-admin "bench user" identity with a updb
           authenticator. Writes a JSON summary (ids the measurement needs, counts, times).
  measure  logs the bench user in and times, one request at a time on one keep-alive
           connection, GET /edge/client/v1/services (as that user; the default page,
           then ?limit=500) and
           GET /edge/management/v1/identities/{id}/policy-advice/{serviceId} (as admin).
           Writes p50/p99/max in milliseconds as JSON.

The model is generated from --seed, so two runs load the same network:
  * identities: 1-3 role attributes out of --identity-attrs departments (default: one per
    100 identities, at most 1,000);
  * services: 1-2 role attributes out of --service-attrs applications (default: one per 20
    services, at most 500);
  * edge routers (--routers, default 50): one of 5 regions, some also "public";
  * policies (--policies in all): 90% service policies (3 Dial : 1 Bind; identity roles
    one or two #departments, sometimes an @identity; service roles one to three
    #applications, sometimes an @service; AnyOf, or AllOf for two-attribute pairs), 5%
    edge router policies (#departments or #all to #regions), 5% service edge router
    policies (#applications to #regions, and one #all to #all, OpenZiti's usual default).
The bench user has three departments, like the biggest identities of the model.
"""
import argparse
import http.client
import json
import os
import random
import ssl
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import quote, urlsplit

MGMT = "/edge/management/v1"
BENCH_USER = "bench-user"
BENCH_PASSWORD = "bench-user-password"
RETRIES = 8


class Client:
    """One keep-alive HTTPS connection; reopened after an error."""

    def __init__(self, url, cacert, token, timeout=30.0):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port
        self.ctx = ssl.create_default_context(cafile=cacert)
        self.token = token
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, token=None):
        """(status, parsed body or raw text)."""
        status, raw = self.request_raw(method, path, body, token)
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed

    def request_raw(self, method, path, body=None, token=None):
        """(status, body bytes)."""
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=self.ctx)
        headers = {"Content-Type": "application/json"}
        tok = token if token is not None else self.token
        if tok:
            headers["zt-session"] = tok
        data = None if body is None else json.dumps(body)
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (OSError, http.client.HTTPException) as e:
                self.close()
                # A keep-alive connection the server closed while idle: a GET is safe to
                # send again on a new one (a POST is retried by `create`, which checks).
                stale = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                       ConnectionResetError))
                if attempt == 0 and stale and method == "GET":
                    self.conn = http.client.HTTPSConnection(
                        self.host, self.port, timeout=self.timeout, context=self.ctx)
                    continue
                raise
        return resp.status, raw

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def create(client, coll, body):
    """POSTs one entity, retrying transient failures; returns its id."""
    last = None
    for attempt in range(RETRIES):
        try:
            status, reply = client.request("POST", f"{MGMT}/{coll}", body)
        except (OSError, http.client.HTTPException) as e:
            last = repr(e)
            time.sleep(0.05 * (attempt + 1))
            continue
        if status == 201:
            return reply["data"]["id"]
        code = (reply or {}).get("error", {}).get("code") if isinstance(reply, dict) else None
        if code == "ENTITY_ALREADY_EXISTS" and attempt > 0:
            # An earlier attempt was committed but its answer lost: find it by name.
            flt = quote("name = " + json.dumps(body["name"]))
            s, r = client.request("GET", f"{MGMT}/{coll}?filter={flt}")
            if s == 200 and r["data"]:
                return r["data"][0]["id"]
        last = f"HTTP {status}: {str(reply)[:300]}"
        if status < 500 and status not in (421, 429):
            break
        time.sleep(0.05 * (attempt + 1))
    raise RuntimeError(f"create {coll} {body.get('name')}: {last}")


def run_chunk(args):
    """One worker process: `threads` clients create `items` ((index, coll, body)) in order
    of a shared cursor; returns [(index, id)] and the error count."""
    url, cacert, token, threads, items = args
    out = [None] * len(items)
    errors = []
    cursor = [0]
    lock = threading.Lock()

    def worker():
        c = Client(url, cacert, token)
        while True:
            with lock:
                i = cursor[0]
                cursor[0] += 1
            if i >= len(items):
                break
            idx, coll, body = items[i]
            try:
                out[i] = (idx, create(c, coll, body))
            except Exception as e:  # reported, the run fails at the end
                errors.append(str(e))
        c.close()

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [o for o in out if o is not None], errors


def create_all(a, token, items, what):
    """Creates `items` ((coll, body)) with --procs x --threads clients; returns their ids in
    order. Exits on any permanent failure."""
    if not items:
        return []
    indexed = [(i, coll, body) for i, (coll, body) in enumerate(items)]
    procs = max(1, min(a.procs, len(items)))
    chunks = [indexed[p::procs] for p in range(procs)]
    threads = max(1, a.threads)
    ids = [None] * len(items)
    errors = []
    t0 = time.monotonic()
    with ProcessPoolExecutor(max_workers=procs) as ex:
        for done, errs in ex.map(run_chunk, [(a.url, a.cacert, token, threads, c) for c in chunks]):
            for idx, id_ in done:
                ids[idx] = id_
            errors.extend(errs)
    dt = time.monotonic() - t0
    if errors:
        sys.exit(f"{what}: {len(errors)} writes failed, first: {errors[0]}")
    print(f"  {what}: {len(items)} in {dt:.1f}s ({len(items) / dt:.0f}/s)", file=sys.stderr)
    return ids


def login(client, user, password):
    status, reply = client.request(
        "POST", "/edge/client/v1/authenticate?method=password",
        {"username": user, "password": password}, token="")
    if status != 200:
        sys.exit(f"login {user}: HTTP {status} {reply}")
    return reply["data"]["token"]


def load(a):
    rnd = random.Random(a.seed)
    c = Client(a.url, a.cacert, "")
    token = login(c, a.admin_user, a.admin_password)
    c.token = token
    depts = [f"dept-{i:04d}" for i in range(a.identity_attrs)]
    apps = [f"app-{i:04d}" for i in range(a.service_attrs)]
    regions = [f"region-{i}" for i in range(5)]
    t_start = time.monotonic()

    user_attrs = rnd.sample(depts, 3)
    user_id = create(c, "identities", {"name": BENCH_USER, "roleAttributes": user_attrs})
    create(c, "authenticators", {"method": "updb", "identityId": user_id,
                                 "username": BENCH_USER, "password": BENCH_PASSWORD})

    phase1 = []
    for i in range(a.identities - 1):
        phase1.append(("identities", {"name": f"identity-{i:06d}",
                                      "roleAttributes": rnd.sample(depts, rnd.randint(1, 3))}))
    for i in range(a.services):
        phase1.append(("services", {"name": f"service-{i:06d}",
                                    "roleAttributes": rnd.sample(apps, rnd.randint(1, 2))}))
    for i in range(a.routers):
        attrs = [regions[i % len(regions)]] + (["public"] if i % 3 == 0 else [])
        phase1.append(("edge-routers", {"name": f"router-{i:03d}", "roleAttributes": attrs}))
    ids = create_all(a, token, phase1, "identities, services, edge routers")
    identity_ids = [user_id] + [i for (coll, _), i in zip(phase1, ids) if coll == "identities"]
    service_ids = [i for (coll, _), i in zip(phase1, ids) if coll == "services"]
    t_entities = time.monotonic()

    n_erp = max(1, a.policies * 5 // 100)
    n_serp = max(1, a.policies * 5 // 100)
    n_sp = max(0, a.policies - n_erp - n_serp)
    phase2 = []
    for i in range(n_sp):
        kind = "Dial" if rnd.random() < 0.75 else "Bind"
        if rnd.random() < 0.15:
            semantic = "AllOf"
            identity_roles = ["#" + d for d in rnd.sample(depts, 2)]
            service_roles = ["#" + s for s in rnd.sample(apps, 2)]
        else:
            semantic = "AnyOf"
            identity_roles = ["#" + d for d in rnd.sample(depts, rnd.randint(1, 2))]
            if rnd.random() < 0.2:
                identity_roles.append("@" + rnd.choice(identity_ids))
            service_roles = ["#" + s for s in rnd.sample(apps, rnd.randint(1, 3))]
            if rnd.random() < 0.2:
                service_roles.append("@" + rnd.choice(service_ids))
        phase2.append(("service-policies", {
            "name": f"sp-{i:05d}", "type": kind, "semantic": semantic,
            "identityRoles": identity_roles, "serviceRoles": service_roles}))
    for i in range(n_erp):
        identity_roles = ["#all"] if i == 0 else ["#" + d for d in rnd.sample(depts, 20)]
        router_roles = ["#public"] if i == 0 else ["#" + rnd.choice(regions)]
        phase2.append(("edge-router-policies", {
            "name": f"erp-{i:04d}", "semantic": "AnyOf",
            "identityRoles": identity_roles, "edgeRouterRoles": router_roles}))
    for i in range(n_serp):
        if i == 0:
            service_roles, router_roles = ["#all"], ["#all"]
        else:
            service_roles = ["#" + s for s in rnd.sample(apps, 10)]
            router_roles = ["#" + rnd.choice(regions)]
        phase2.append(("service-edge-router-policies", {
            "name": f"serp-{i:04d}", "semantic": "AnyOf",
            "serviceRoles": service_roles, "edgeRouterRoles": router_roles}))
    create_all(a, token, phase2, "policies")
    t_end = time.monotonic()

    # Services to ask advice about: some the bench user may use, some random ones.
    status, reply = c.request("GET", f"{MGMT}/identities/{user_id}/services?limit=500")
    if status != 200:
        sys.exit(f"bench user's services: HTTP {status} {reply}")
    granted = [s["id"] for s in reply["data"]]
    advice_services = granted[:25] + rnd.sample(service_ids, min(25, len(service_ids)))
    summary = {
        "userId": user_id, "userName": BENCH_USER, "userPassword": BENCH_PASSWORD,
        "userServices": reply["meta"]["pagination"]["totalCount"],
        "adviceServices": advice_services,
        "counts": {"identities": len(identity_ids), "services": len(service_ids),
                   "edgeRouters": a.routers, "servicePolicies": n_sp,
                   "edgeRouterPolicies": n_erp, "serviceEdgeRouterPolicies": n_serp},
        "writes": len(phase1) + len(phase2) + 2,
        "loadSeconds": t_end - t_start,
        "entitySeconds": t_entities - t_start,
        "policySeconds": t_end - t_entities,
    }
    with open(a.out, "w") as f:
        json.dump(summary, f)
    c.close()


def percentile(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    k = min(len(sorted_ms) - 1, max(0, int(round(p / 100.0 * len(sorted_ms) + 0.5)) - 1))
    return sorted_ms[k]


def route_buckets(client, route, admin_token):
    """The cumulative bucket counts {le: count} of weft_http_request_seconds for `route`
    on the node `client` talks to (its /metrics, which needs an admin session)."""
    status, raw = client.request_raw("GET", "/metrics", token=admin_token)
    if status != 200:
        return {}
    out = {}
    prefix = 'weft_http_request_seconds_bucket{'
    for line in raw.decode(errors="replace").splitlines():
        if not line.startswith(prefix) or f'route="{route}"' not in line:
            continue
        labels, _, value = line.rpartition(" ")
        le = labels.split('le="', 1)[1].split('"', 1)[0]
        out[float("inf") if le == "+Inf" else float(le)] = float(value)
    return out


def server_p99(before, after):
    """The 99th percentile of the server's own handling time (from its histogram: the
    upper bound of the bucket it falls in, in ms), over the requests between two reads."""
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = delta.get(float("inf"), 0)
    if total <= 0:
        return None
    for le in sorted(delta):
        if delta[le] >= 0.99 * total:
            return le * 1000.0
    return None


def timed(client, paths, n, warmup, token, check, route=None, admin_token=""):
    """Times n sequential GETs cycling through `paths`, after `warmup` untimed ones: from
    sending the request to having read the whole answer (parsed and checked afterwards)."""
    times = []
    before = {}
    for i in range(warmup + n):
        if i == warmup and route:
            before = route_buckets(client, route, admin_token)
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        status, raw = client.request_raw("GET", path, token=token)
        dt = (time.perf_counter() - t0) * 1000.0
        if status != 200:
            sys.exit(f"GET {path}: HTTP {status} {raw[:300]!r}")
        check(json.loads(raw))
        if i >= warmup:
            times.append(dt)
    times.sort()
    out = {"n": n, "p50": percentile(times, 50), "p99": percentile(times, 99),
           "max": times[-1], "mean": sum(times) / len(times)}
    if route:
        out["serverP99AtMost"] = server_p99(before, route_buckets(client, route, admin_token))
    return out


def measure(a):
    with open(a.summary) as f:
        s = json.load(f)
    c = Client(a.url, a.cacert, "")
    admin = login(c, a.admin_user, a.admin_password)
    user = login(c, s["userName"], s["userPassword"])
    seen = {}

    def check_services(reply):
        seen["total"] = reply["meta"]["pagination"]["totalCount"]
        seen["page"] = len(reply["data"])

    def check_advice(reply):
        if "isDialable" not in reply["data"]:
            sys.exit(f"advice without isDialable: {str(reply)[:300]}")

    # As the issue names it (the default page), then as a client fetching its whole list.
    route = "/edge/client/v1/services"
    services = timed(c, [route], a.requests, a.warmup, user, check_services, route, admin)
    services["total"] = seen.get("total")
    services["page"] = seen.get("page")
    services_all = timed(c, [f"{route}?limit={a.limit}"], a.requests, a.warmup, user,
                         check_services, route, admin)
    services_all["page"] = seen.get("page")
    advice_paths = [f"{MGMT}/identities/{s['userId']}/policy-advice/{sid}"
                    for sid in s["adviceServices"]]
    advice = timed(c, advice_paths, a.requests, a.warmup, admin, check_advice,
                   f"{MGMT}/identities/{{id}}/policy-advice/{{service_id}}", admin)
    advice["services"] = len(advice_paths)
    with open(a.out, "w") as f:
        json.dump({"services": services, "servicesAll": services_all, "advice": advice}, f)
    c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("load", "measure"):
        p = sub.add_parser(name)
        p.add_argument("--url", required=True, help="https://host:port of a controller")
        p.add_argument("--cacert", required=True)
        p.add_argument("--admin-user", default="admin")
        p.add_argument("--admin-password", default=os.environ.get("WEFT_ADMIN_PASSWORD", ""))
        p.add_argument("--out", required=True)
    p = sub.choices["load"]
    p.add_argument("--identities", type=int, default=100_000)
    p.add_argument("--services", type=int, default=10_000)
    p.add_argument("--policies", type=int, default=2_000)
    p.add_argument("--routers", type=int, default=50)
    p.add_argument("--identity-attrs", type=int, default=0,
                   help="identity attributes (default: identities / 100, at most 1,000)")
    p.add_argument("--service-attrs", type=int, default=0,
                   help="service attributes (default: services / 20, at most 500)")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--seed", type=int, default=1)
    p = sub.choices["measure"]
    p.add_argument("--summary", required=True, help="the JSON `load` wrote")
    p.add_argument("--requests", type=int, default=2_000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--limit", type=int, default=500, help="page size of the services list")
    a = ap.parse_args()
    if not a.admin_password:
        sys.exit("--admin-password (or WEFT_ADMIN_PASSWORD) is required")
    if a.cmd == "load":
        if a.identities < 1 or a.services < 1 or a.policies < 3:
            sys.exit("need at least 1 identity, 1 service and 3 policies")
        # Attributes scale with the model, so a quick run keeps the full run's proportions.
        a.identity_attrs = a.identity_attrs or min(1_000, max(20, a.identities // 100))
        a.service_attrs = a.service_attrs or min(500, max(10, a.services // 20))
        if a.identity_attrs < 20 or a.service_attrs < 10:
            sys.exit("need at least 20 identity attributes and 10 service attributes")
        load(a)
    else:
        measure(a)


if __name__ == "__main__":
    main()
