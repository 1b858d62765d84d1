"""Schemathesis hooks for weft (loaded by .ci/schemathesis.sh through SCHEMATHESIS_HOOKS).

Authentication: an admin session. The run may revoke its own session (logout, or
deleting the api-session whose id it saw in a listing); a 401 makes schemathesis log in
again and replay the request once (an operation whose replay is still 401, such as the
join and peer endpoints, which take other credentials, is not retried again), so those
operations can stay in the run. The logins come from their own source address
(WEFT_ST_LOGIN_FROM), so the failed logins the run makes on purpose, which count against
the run's address, never rate-limit them.
"""

import http.client
import json
import os
import ssl

import schemathesis

URL = os.environ["WEFT_ST_URL"]  # https://HOST:PORT of the node to log in on
CA = os.environ["WEFT_ST_CA"]
PASSWORD = os.environ["WEFT_ST_PASSWORD"]
LOGIN_FROM = os.environ.get("WEFT_ST_LOGIN_FROM", "")


def login() -> str:
    host, port = URL.removeprefix("https://").rsplit(":", 1)
    conn = http.client.HTTPSConnection(
        host,
        int(port),
        context=ssl.create_default_context(cafile=CA),
        timeout=20,
        source_address=(LOGIN_FROM, 0) if LOGIN_FROM else None,
    )
    body = json.dumps({"username": "admin", "password": PASSWORD})
    conn.request(
        "POST",
        "/edge/management/v1/authenticate?method=password",
        body=body,
        headers={"content-type": "application/json"},
    )
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"admin login: HTTP {resp.status} {data!r}")
    return json.loads(data)["data"]["token"]


@schemathesis.auth(refresh_interval=600, retry_on=[401])
class WeftAdminSession:
    def get(self, case, context):
        return login()

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["zt-session"] = data
