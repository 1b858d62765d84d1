#!/usr/bin/env bash
# Schemathesis (property-based API testing from the OpenAPI document) against a running
# 3-node weft cluster: no 500, no answer the document does not describe (status, content
# type, body schema), no operation that works without its credential.
#
#   .ci/schemathesis.sh              # short mode, as CI runs it
#   SCHEMATHESIS_EXAMPLES=100 .ci/schemathesis.sh   # longer
#   .ci/schemathesis.sh --report har --report-dir "$PWD/target/st"   # more options
#
# Schemathesis runs in the cluster's temporary directory (it keeps a cache where it
# runs), so give report paths absolute.
# Environment: WEFT_BIN (default target/debug/weft, built if missing), SCHEMATHESIS (the
# schemathesis command; default the one on PATH), SCHEMATHESIS_EXAMPLES (test cases per
# operation and phase, default 8), SCHEMATHESIS_SEED (default 1: a run is reproducible),
# KEEP=1 keeps the cluster's data and logs (their directory is printed).
#
# The cluster runs on 127.0.0.1-3 with one port; node 0 bootstraps, 1 and 2 join. The
# document is fetched from node 0 with an admin session (it needs one); the tests target
# node 1, so writes are forwarded to the leader as a client's would be. The run
# authenticates as the admin through .ci/schemathesis_hooks.py, which logs in again
# after a 401, so the operations that revoke the run's own session (logout, deleting an
# api-session it saw listed) can stay in. Its logins come from 127.0.0.10; the run's
# requests (with their failed logins) from 127.0.0.1, where a login-failure limit of 5
# per 2 s makes `authenticate` answer 429 RATE_LIMITED now and then, so that answer is
# checked too while the login logic is still reached.
#
# Excluded: addClusterMember (POST /fabric/v1/cluster/add-member): it makes the node
# connect to the address in the body, which generated data would point at arbitrary
# hosts. The join endpoints (join token) and peer endpoints (controller certificate) stay
# in although the run has neither credential: they must answer 401 whatever they are
# sent (schemathesis warns that they "returned only 401"). The stateful phase is left out
# to keep the run short.
set -euo pipefail
cd "$(dirname "$0")/.."

weft="${WEFT_BIN:-target/debug/weft}"
st="${SCHEMATHESIS:-schemathesis}"
examples="${SCHEMATHESIS_EXAMPLES:-8}"
seed="${SCHEMATHESIS_SEED:-1}"
password="schemathesis-admin-password"

if [ ! -x "$weft" ]; then
  cargo build -q -p weft-cli --bin weft
fi
if ! command -v "$st" >/dev/null 2>&1; then
  echo "schemathesis not found: install it (pip install -r .ci/schemathesis-requirements.txt) or set SCHEMATHESIS" >&2
  exit 1
fi
weft="$(realpath "$weft")"
case "$st" in */*) st="$(realpath "$st")" ;; esac

work="$(mktemp -d -t weft-schemathesis.XXXXXX)"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$status" -ne 0 ]; then
    for log in "$work"/n*/weft.log; do
      [ -f "$log" ] && { echo "----- last lines of $log"; tail -n 30 "$log"; }
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
  exit "$status"
}
trap cleanup EXIT

# Small HTTPS client (the standard library only): api METHOD URL [TOKEN] [BODY] prints
# the answer's body and fails on anything but 2xx.
cat >"$work/api.py" <<'EOF'
import ssl, sys, urllib.error, urllib.request
method, url, ca = sys.argv[1:4]
token = sys.argv[4] if len(sys.argv) > 4 else ""
body = sys.argv[5] if len(sys.argv) > 5 else ""
req = urllib.request.Request(url, method=method, data=body.encode() if body else None)
req.add_header("content-type", "application/json")
if token:
    req.add_header("zt-session", token)
try:
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=ca), timeout=20) as r:
        sys.stdout.write(r.read().decode())
except urllib.error.HTTPError as e:
    sys.exit(f"{method} {url}: HTTP {e.code} {e.read().decode()}")
except OSError as e:
    sys.exit(f"{method} {url}: {e}")
EOF
api() { python3 "$work/api.py" "$1" "$2" "$work/n0/ca.pem" "${3:-}" "${4:-}"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][sys.argv[1]])' "$1"; }

# A port free on 127.0.0.1-3, below the ephemeral range and the test harness's ports.
port="$(python3 - <<'EOF'
import random, socket
for _ in range(200):
    port = random.randrange(12000, 19000)
    try:
        for host in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
            with socket.socket() as s:
                s.bind((host, port))
        print(port)
        break
    except OSError:
        continue
EOF
)"
[ -n "$port" ] || { echo "no free port" >&2; exit 1; }

start_node() { # start_node I ARGS...
  local i=$1; shift
  mkdir -p "$work/n$i"
  "$weft" controller run --data-dir "$work/n$i" --listen "127.0.0.$((i + 1)):$port" "$@" \
    >"$work/n$i/weft.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q "listening on" "$work/n$i/weft.log" && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "node $i exited" >&2; return 1; }
    sleep 0.1
  done
  echo "node $i did not start" >&2
  return 1
}

url0="https://127.0.0.1:$port"
limits=(--login-failures-per-ip 5 --login-failure-window-secs 2)
start_node 0 --bootstrap --admin-password "$password" "${limits[@]}"
login='{"username":"admin","password":"'"$password"'"}'
token="$(api POST "$url0/edge/management/v1/authenticate?method=password" "" "$login" | field token)"
for i in 1 2; do
  join="$(api POST "$url0/fabric/v1/cluster/join-token" "$token" '{}' | field token)"
  start_node "$i" --join "$url0" --join-token "$join" "${limits[@]}"
done

# Every node in quorum, all naming one leader.
healthy=""
for _ in $(seq 300); do
  leaders="$(for i in 0 1 2; do
    api GET "https://127.0.0.$((i + 1)):$port/health-checks" 2>/dev/null |
      python3 -c 'import json,sys; d=json.load(sys.stdin)["data"]; print(d["leaderId"] if d["inQuorum"] else "")' 2>/dev/null || true
  done | sort -u)"
  if [ "$(echo "$leaders" | grep -c .)" = 1 ] && [ "$(echo "$leaders" | wc -l)" = 1 ]; then
    healthy=1
    break
  fi
  sleep 0.2
done
[ -n "$healthy" ] || { echo "the cluster did not become healthy" >&2; exit 1; }
echo "cluster up on 127.0.0.1-3:$port (leader $leaders)"

api GET "$url0/openapi.json" "$token" >"$work/openapi.json"

started=$(date +%s)
target="https://127.0.0.2:$port"
hooks="$PWD/.ci/schemathesis_hooks.py"
# In the work dir: schemathesis keeps a cache in the current directory.
cd "$work"
WEFT_ST_URL="$target" WEFT_ST_CA="$work/n0/ca.pem" WEFT_ST_PASSWORD="$password" \
  WEFT_ST_LOGIN_FROM=127.0.0.10 SCHEMATHESIS_HOOKS="$hooks" \
  NO_COLOR=1 "$st" run "$work/openapi.json" \
  --url "$target" \
  --tls-verify "$work/n0/ca.pem" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  --seed "$seed" \
  --request-timeout 30 \
  --exclude-operation-id addClusterMember \
  --no-color \
  "$@" | tee "$work/schemathesis.out"
# The test cases of the run as a plain closing line ("N passed, 0 failed").
cases="$(grep -Eo '[0-9]+ generated, [0-9]+ passed' "$work/schemathesis.out" | tail -n 1 |
  grep -Eo '[0-9]+ passed$' | grep -Eo '[0-9]+' || echo 0)"
echo "schemathesis run: $(($(date +%s) - started)) s (with ${examples} examples per operation and phase)"
echo "schemathesis: $cases passed, 0 failed"
