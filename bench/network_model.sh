#!/usr/bin/env bash
# bench/network_model.sh - policy evaluation at scale: a 3-node weft cluster loaded with a
# network model (default 100,000 identities, 10,000 services, 2,000 policies), then the
# latency of the two policy queries and the memory of each controller, as one table.
#
# What it does:
#   1. Starts 3 real `weft controller run` processes on loopback (bootstrap + 2 joins).
#   2. Loads the model through the management API of the leader with many concurrent
#      keep-alive HTTPS clients (bench/network_model.py load: --procs processes x
#      --threads threads): identities (1-3 role attributes out of 1,000), services (1-2
#      out of 500), 50 edge routers, service policies (Dial/Bind, #attribute and @id roles,
#      AnyOf and AllOf), edge router policies and service edge router policies; plus one
#      non-admin identity, "bench-user", with a updb authenticator. Load time = first
#      write to last acknowledged write.
#   3. Once the controllers are idle (their snapshots and log purges after the load done;
#      at most 120 s), times, one request at a time on one keep-alive connection (after --warmup untimed
#      requests), on the leader:
#        GET /edge/client/v1/services as bench-user (its own session; the default page of
#            10, and again with ?limit=500, a whole list, reported but not a target), and
#        GET /edge/management/v1/identities/{id}/policy-advice/{serviceId} as admin,
#            cycling over 50 services (25 bench-user may use, 25 random ones).
#      Client-side time (Python http.client over TLS, from sending the request to having
#      read the whole answer), so it includes the client's own overhead; p50 and p99 over
#      --requests requests each. "server p99" is the controller's own handling time, from
#      its weft_http_request_seconds histogram (so only as fine as its buckets: 0.5, 1,
#      2.5, 5, 10 ms...): it tells the server's share of a slow p99 from the client's and
#      the machine's.
#   4. Reads each controller's VmRSS (and VmHWM, its peak) from /proc/PID/status.
# Targets (from the issue): p99 < 5 ms for both queries, RSS < 500 MB per controller.
# The figures are reported, not asserted.
#
# Addresses: node i listens on https://127.0.0.i:(17450+i) (WEFT_PORT_BASE, default 17450).
#
# Usage: bench/network_model.sh [--identities N] [--services N] [--policies N]
#                               [--requests N] [--warmup N] [--procs P] [--threads T]
#                               [--weft-bin PATH] [--out FILE] [--keep] [--weft-arg ARG]...
# (--identities 10000 --services 1000 --policies 200 is a quick run of a minute or two.)
# Needs: curl, jq, python3 (installed with apt-get when missing). See bench/README.md.
set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

IDENTITIES=100000
SERVICES=10000
POLICIES=2000
REQUESTS=2000
WARMUP=100
PROCS=2
THREADS=32
WEFT_BIN=""
OUT=""
KEEP=0
WEFT_EXTRA_ARGS=()
READY_TIMEOUT=90
WEFT_PORT_BASE=${WEFT_PORT_BASE:-17450}
TARGET_P99_MS=5
TARGET_RSS_MB=500

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
  case $1 in
    --identities) IDENTITIES=${2:?}; shift 2 ;;
    --services) SERVICES=${2:?}; shift 2 ;;
    --policies) POLICIES=${2:?}; shift 2 ;;
    --requests) REQUESTS=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --procs) PROCS=${2:?}; shift 2 ;;
    --threads) THREADS=${2:?}; shift 2 ;;
    --weft-bin) WEFT_BIN=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --weft-arg) WEFT_EXTRA_ARGS+=("${2:?}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in IDENTITIES SERVICES POLICIES REQUESTS WARMUP PROCS THREADS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { o=${v,,}; echo "--$o must be a whole number" >&2; exit 2; }
done
((IDENTITIES >= 1 && SERVICES >= 1 && POLICIES >= 3 && REQUESTS >= 1 && PROCS >= 1 && THREADS >= 1)) ||
  { echo "need identities, services, requests, procs, threads >= 1 and policies >= 3" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# --- processes and cleanup ------------------------------------------------------------
declare -A PIDS=()   # name -> pid of every background process this script started
STATE=""

start_bg() { # name logfile cmd...  (must run in the main shell, not in $(...))
  local name=$1 logf=$2; shift 2
  "$@" >>"$logf" 2>&1 &
  PIDS[$name]=$!
}

cleanup() {
  local rc=$? name pid i
  trap - EXIT INT TERM
  for name in "${!PIDS[@]}"; do kill -TERM "${PIDS[$name]}" 2>/dev/null || true; done
  for ((i = 0; i < 50; i++)); do
    local alive=0
    for name in "${!PIDS[@]}"; do kill -0 "${PIDS[$name]}" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for name in "${!PIDS[@]}"; do
    pid=${PIDS[$name]}
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $STATE && -d $STATE ]]; then
    if ((rc != 0)); then
      local f
      for f in "$STATE"/*.log; do
        [[ -s $f ]] || continue
        echo "----- last lines of $f -----" >&2
        tail -n 10 "$f" >&2
      done
      echo "state and logs kept in $STATE" >&2
    elif ((KEEP)); then
      echo "state and logs kept in $STATE" >&2
    else
      rm -rf "$STATE"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

wait_until() { # TIMEOUT_S DESCRIPTION CMD... : poll CMD every 0.2 s; die on timeout.
  local timeout=$1 desc=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for: $desc"
    sleep 0.2
  done
}

require_alive() {
  local pid=${PIDS[$1]:-}
  if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
    die "$1 is not running (see $STATE/$1.log)"
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# --- tools ----------------------------------------------------------------------------
ensure_tools() {
  local need=()
  command -v curl >/dev/null || need+=(curl)
  command -v jq >/dev/null || need+=(jq)
  command -v python3 >/dev/null || need+=(python3)
  if ((${#need[@]})); then
    log "installing: ${need[*]}"
    ((EUID == 0)) || die "missing ${need[*]} and not root: install them first"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null || die "apt-get update failed"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
    fi
  fi
}

ensure_weft() {
  if [[ -z $WEFT_BIN ]]; then
    WEFT_BIN=$REPO_DIR/target/release/weft
    if [[ ! -x $WEFT_BIN ]]; then
      command -v cargo >/dev/null || die "no $WEFT_BIN and no cargo to build it"
      log "building weft: cargo build --release (in $REPO_DIR)"
      (cd "$REPO_DIR" && cargo build --release) >&2 || die "cargo build --release failed"
    fi
  fi
  [[ -x $WEFT_BIN ]] || die "weft binary not found or not executable: $WEFT_BIN"
  WEFT_BIN=$(cd "$(dirname "$WEFT_BIN")" && pwd)/$(basename "$WEFT_BIN")
  local help
  help=$("$WEFT_BIN" controller run --help 2>&1) || die "'$WEFT_BIN controller run --help' fails: $help"
  grep -q -- '--data-dir' <<<"$help" ||
    die "'$WEFT_BIN controller run --help' shows no --data-dir: this binary has no 'controller run'"
}

# --- weft -----------------------------------------------------------------------------
# shellcheck source=bench/weft.sh
source "$SCRIPT_DIR/weft.sh"


# applied index of node i, from its /health-checks (appliedIndex)
applied_index() {
  curl -sS --max-time 2 --cacert "$(weft_ca)" "$(weft_url "$1")/health-checks" 2>/dev/null |
    jq -r '.data.appliedIndex // empty'
}
all_caught_up() { # every node has applied what the leader has
  local l a i
  l=$(applied_index "$LEADER") || return 1
  [[ -n $l ]] || return 1
  for i in 1 2 3; do
    a=$(applied_index "$i") || return 1
    [[ -n $a && $a -ge $l ]] || return 1
  done
}

cpu_ticks() { # total user+system clock ticks of the three controllers
  local i t=0 f
  for i in 1 2 3; do
    f=$(cut -d')' -f2 "/proc/${PIDS[weft$i]}/stat" 2>/dev/null) || continue
    t=$((t + $(awk '{ print $12 + $13 }' <<<"$f")))
  done
  echo "$t"
}
controllers_quiet() { # the controllers used under 10% of one core over the last second
  local a b hz
  hz=$(getconf CLK_TCK 2>/dev/null || echo 100)
  a=$(cpu_ticks)
  sleep 1
  b=$(cpu_ticks)
  (((b - a) * 10 < hz))
}

rss_kb() { # i field(VmRSS|VmHWM) -> kB
  awk -v f="$2:" '$1 == f { print $2 }' "/proc/${PIDS[weft$1]}/status" 2>/dev/null || echo 0
}

# --- report ---------------------------------------------------------------------------
mb() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
ms() { awk -v v="$1" 'BEGIN { if (v >= 10) printf "%.1f", v; else printf "%.2f", v }'; }
verdict() { # value target -> "ok" or "OVER"
  awk -v v="$1" -v t="$2" 'BEGIN { print (v < t ? "ok" : "OVER") }'
}

report() {
  local load_s writes wps c i rss hwm
  row() { printf '%-46s %12s %14s %6s\n' "$1" "$2" "$3" "$4"; }
  load_s=$(jq -r '.loadSeconds' "$RES/load.json")
  writes=$(jq -r '.writes' "$RES/load.json")
  wps=$(awk -v w="$writes" -v s="$load_s" 'BEGIN { printf "%.0f", w / s }')
  echo "== weft network model: 3-node cluster, loopback, one machine =="
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)   host: $(nproc) cores, $(uname -sr)"
  echo "weft:      $WEFT_VERSION ($WEFT_BIN${WEFT_EXTRA_ARGS[*]:+, with ${WEFT_EXTRA_ARGS[*]}})"
  echo "load avg:  $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) at end"
  echo "model:     $(jq -r '.counts | "\(.identities) identities, \(.services) services, \(.edgeRouters) edge routers, \(.servicePolicies) service policies, \(.edgeRouterPolicies) edge router policies, \(.serviceEdgeRouterPolicies) service edge router policies"' "$RES/load.json")"
  echo "load:      $writes writes to the leader, $PROCS procs x $THREADS keep-alive HTTPS clients"
  echo "queries:   on the leader, sequential, one keep-alive connection, $REQUESTS timed after $WARMUP warm-up;"
  echo "           bench-user may use $(jq -r '.services.total' "$RES/measure.json") services (the default page returns $(jq -r '.services.page' "$RES/measure.json"), ?limit=500 $(jq -r '.servicesAll.page' "$RES/measure.json"));"
  echo "           advice cycles over $(jq -r '.advice.services' "$RES/measure.json") services (half of them ones bench-user may use)"
  echo
  row "figure" "measured" "target" ""
  row "------" "--------" "------" ""
  row "load time s (entities + policies)" "$(awk -v s="$load_s" 'BEGIN { printf "%.1f", s }')" "-" ""
  row "  writes/s during the load" "$wps" "-" ""
  row "  entities s / policies s" "$(jq -r '"\(.entitySeconds | floor) / \(.policySeconds | floor)"' "$RES/load.json")" "-" ""
  for c in services advice servicesAll; do
    local label="GET /edge/client/v1/services" target="< $TARGET_P99_MS"
    [[ $c == advice ]] && label="policy-advice"
    [[ $c == servicesAll ]] && label="  same, ?limit=500 (not a target)" target="-"
    local p50 p99 mx v=""
    p50=$(jq -r ".$c.p50" "$RES/measure.json") p99=$(jq -r ".$c.p99" "$RES/measure.json")
    mx=$(jq -r ".$c.max" "$RES/measure.json")
    [[ $target != - ]] && v=$(verdict "$p99" "$TARGET_P99_MS")
    local sp99
    sp99=$(jq -r ".$c.serverP99AtMost // empty" "$RES/measure.json")
    row "$label p50 ms" "$(ms "$p50")" "-" ""
    row "$label p99 ms" "$(ms "$p99")" "$target" "$v"
    row "$label max ms" "$(ms "$mx")" "-" ""
    [[ -n $sp99 ]] && row "$label server p99 ms" "<= $(ms "$sp99")" "-" ""
  done
  for i in 1 2 3; do
    rss=$(cat "$RES/rss$i") hwm=$(cat "$RES/hwm$i")
    local role=follower
    [[ $i == "$LEADER" ]] && role=leader
    row "controller $i ($role) RSS MB (peak)" "$(mb "$rss") ($(mb "$hwm"))" "< $TARGET_RSS_MB" \
      "$(verdict "$(mb "$hwm")" "$TARGET_RSS_MB")"
  done
}

# --- main -----------------------------------------------------------------------------
ensure_tools
ensure_weft
STATE=$(mktemp -d "${TMPDIR:-/tmp}/weft-netmodel.XXXXXX")
RES=$STATE/results
mkdir -p "$RES"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
awk '{ exit !($1 > 1.0) }' /proc/loadavg 2>/dev/null &&
  log "note: load average is $LOAD_START: other processes compete for the CPU, numbers will be noisy"
log "state in $STATE; model: $IDENTITIES identities, $SERVICES services, $POLICIES policies"
log "starting a 3-node cluster"
weft_start_cluster
LEADER=$(weft_leader) || die "no leader"
WEFT_VERSION=$(weft_version)
log "leader is node $LEADER; loading the model ($PROCS procs x $THREADS clients)"
WEFT_ADMIN_PASSWORD=$WEFT_PASS python3 "$SCRIPT_DIR/network_model.py" load \
  --url "$(weft_url "$LEADER")" --cacert "$(weft_ca)" --out "$RES/load.json" \
  --identities "$IDENTITIES" --services "$SERVICES" --policies "$POLICIES" \
  --procs "$PROCS" --threads "$THREADS" || die "load failed"
for i in 1 2 3; do require_alive "weft$i"; done
log "loaded in $(jq -r '.loadSeconds | floor' "$RES/load.json") s; waiting for every node to apply it"
wait_until "$READY_TIMEOUT" "all nodes caught up with the leader" all_caught_up
# After the load the controllers still write snapshots and purge logs for a while; the
# queries are timed once they are idle (or after 120 s, noted in the log).
wait_quiet_until=$((SECONDS + 120))
until controllers_quiet; do
  ((SECONDS < wait_quiet_until)) || { log "note: the controllers are still busy; measuring anyway"; break; }
done
log "measuring: $REQUESTS requests per query"
WEFT_ADMIN_PASSWORD=$WEFT_PASS python3 "$SCRIPT_DIR/network_model.py" measure \
  --url "$(weft_url "$LEADER")" --cacert "$(weft_ca)" --summary "$RES/load.json" \
  --out "$RES/measure.json" --requests "$REQUESTS" --warmup "$WARMUP" || die "measure failed"
for i in 1 2 3; do
  require_alive "weft$i"
  rss_kb "$i" VmRSS >"$RES/rss$i"
  rss_kb "$i" VmHWM >"$RES/hwm$i"
done
if [[ -n $OUT ]]; then
  report | tee "$OUT"
else
  report
fi
