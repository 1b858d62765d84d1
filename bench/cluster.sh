#!/usr/bin/env bash
# bench/cluster.sh - a 3-node weft cluster against a 3-node etcd cluster, side by side,
# on this machine, with the same HTTP load tool (wrk), printed as one table.
#
# What it measures, for each system (one cluster runs at a time, so they never share
# the CPU):
#   1. Durable writes/s and p50/p99 latency with 1 and with 64 concurrent clients.
#      wrk + a Lua script (bench/lua/): every request writes a unique name
#      (RUNID-THREAD-COUNTER) with a 256-byte payload.
#        etcd: POST /v3/kv/put on its JSON gateway, key/value base64.
#        weft: POST /edge/management/v1/services
#              {"name":"<unique>","tags":{"payload":"<256 chars>"}}, header zt-session.
#      Both systems acknowledge a write only after a quorum has it on disk (fsync).
#      The load targets the LEADER of each cluster (etcd: found with `etcdctl endpoint
#      status`; weft: GET /health-checks role == "leader"). weft also accepts writes on a
#      follower (it forwards them), but leader-only keeps it comparable with etcd.
#      writes/s counts only 2xx answers; every non-2xx answer and every socket error is
#      counted and reported (a run with errors is flagged with "!" and a WARNING line).
#      Each (system, clients) cell is the median of --runs runs of --duration seconds.
#   2. Leader-kill failover: a writer (bench/failover_writer.py: starts a write every
#      10 ms, each with a 0.5 s timeout, on keep-alive connections, so one write hanging
#      in the election does not hold up the next) writes through a survivor (a follower);
#      the leader is SIGKILLed; failover time = from the kill to the acknowledgement of
#      the first write that was *sent after* the kill. The killed node is restarted and
#      the cluster waited on until all 3 members are healthy before the next trial.
#      Median and max over --trials trials.
#   3. The ratio weft/etcd of each figure (>1 is better for writes/s, worse for
#      latency and failover time).
#
# Addresses: loopback only. Node i listens on 127.0.0.i:
#   weft  https://127.0.0.i:(17440+i)            (WEFT_PORT_BASE, default 17440)
#   etcd  client http://127.0.0.i:(23370+i), peer http://127.0.0.i:(23380+i)
#         (ETCD_CLIENT_PORT_BASE / ETCD_PEER_PORT_BASE, defaults 23370 / 23380)
# etcd runs with its default timing (heartbeat 100 ms, election 1000 ms) unless
# --etcd-heartbeat-ms / --etcd-election-ms say otherwise; weft with its own defaults.
#
# Usage: bench/cluster.sh [--duration S] [--trials N] [--runs R] [--warmup S]
#                         [--weft-bin PATH] [--out FILE] [--only weft|etcd] [--keep]
#                         [--etcd-heartbeat-ms MS] [--etcd-election-ms MS]
#                         [--weft-heartbeat-ms MS] [--weft-election-ms MS] [--weft-arg ARG]...
# (--weft-* pass --heartbeat-ms / --election-timeout-ms to every weft node; without them
# weft runs with its defaults. E.g. --weft-heartbeat-ms 100 --weft-election-ms 1000
# gives weft etcd's timing, for a like-for-like failover figure. --weft-arg passes one
# more argument to every `weft controller run`, e.g. --weft-arg --snapshot-logs=100000.)
# Needs: etcd + etcdctl (Debian etcd-server, etcd-client), wrk, curl, jq, python3;
# installed with apt-get when missing. See bench/README.md.
set -euo pipefail
export LC_ALL=C

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)

DURATION=10
TRIALS=5
RUNS=3
WARMUP=2
WEFT_BIN=""
OUT=""
ONLY=""
KEEP=0
ETCD_HEARTBEAT_MS=100  # etcd's defaults
ETCD_ELECTION_MS=1000
WEFT_HEARTBEAT_MS=""   # empty: weft's own defaults
WEFT_ELECTION_MS=""
WEFT_EXTRA_ARGS=()
REQ_TIMEOUT=0.5        # per-request timeout of the failover writer, seconds
FO_INTERVAL_MS=10      # the failover writer starts a write every FO_INTERVAL_MS
FAILOVER_TIMEOUT=30    # a trial with no acknowledged write this long after the kill fails
READY_TIMEOUT=90       # cluster start / restart / join waits, seconds
WEFT_PORT_BASE=${WEFT_PORT_BASE:-17440}
ETCD_CLIENT_PORT_BASE=${ETCD_CLIENT_PORT_BASE:-23370}
ETCD_PEER_PORT_BASE=${ETCD_PEER_PORT_BASE:-23380}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while (($#)); do
  case $1 in
    --duration) DURATION=${2:?}; shift 2 ;;
    --trials) TRIALS=${2:?}; shift 2 ;;
    --runs) RUNS=${2:?}; shift 2 ;;
    --warmup) WARMUP=${2:?}; shift 2 ;;
    --weft-bin) WEFT_BIN=${2:?}; shift 2 ;;
    --out) OUT=${2:?}; shift 2 ;;
    --only) ONLY=${2:?}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --etcd-heartbeat-ms) ETCD_HEARTBEAT_MS=${2:?}; shift 2 ;;
    --etcd-election-ms) ETCD_ELECTION_MS=${2:?}; shift 2 ;;
    --weft-heartbeat-ms) WEFT_HEARTBEAT_MS=${2:?}; shift 2 ;;
    --weft-election-ms) WEFT_ELECTION_MS=${2:?}; shift 2 ;;
    --weft-arg) WEFT_EXTRA_ARGS+=("${2:?}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in DURATION TRIALS RUNS WARMUP ETCD_HEARTBEAT_MS ETCD_ELECTION_MS; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { o=${v,,}; echo "--${o//_/-} must be a whole number" >&2; exit 2; }
done
for v in WEFT_HEARTBEAT_MS WEFT_ELECTION_MS; do
  [[ -z ${!v} || ${!v} =~ ^[0-9]+$ ]] || { o=${v,,}; echo "--${o//_/-} must be a whole number" >&2; exit 2; }
done
[[ -n $WEFT_HEARTBEAT_MS ]] && WEFT_EXTRA_ARGS+=(--heartbeat-ms "$WEFT_HEARTBEAT_MS")
[[ -n $WEFT_ELECTION_MS ]] && WEFT_EXTRA_ARGS+=(--election-timeout-ms "$WEFT_ELECTION_MS")
((DURATION >= 1 && TRIALS >= 1 && RUNS >= 1)) || { echo "duration, trials and runs must be >= 1" >&2; exit 2; }
case $ONLY in "" | weft | etcd) ;; *) echo "--only takes weft or etcd" >&2; exit 2 ;; esac
SYSTEMS=()
[[ $ONLY == etcd ]] || SYSTEMS+=(weft)
[[ $ONLY == weft ]] || SYSTEMS+=(etcd)

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

stop_pid() { # name [signal]: stop one tracked process and reap it (bounded)
  local name=$1 sig=${2:-TERM} pid i
  pid=${PIDS[$name]:-}
  [[ -n $pid ]] || return 0
  kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$name]"
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
    if ((rc == 130 || rc == 143)); then
      echo "state and logs kept in $STATE" >&2
    elif ((rc != 0)); then
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

# wait_until TIMEOUT_S DESCRIPTION CMD... : poll CMD every 0.2 s; die on timeout.
wait_until() {
  local timeout=$1 desc=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for: $desc"
    sleep 0.2
  done
}

require_alive() { # name: die (with its log) if a tracked node process has exited
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
  command -v wrk >/dev/null || need+=(wrk)
  command -v python3 >/dev/null || need+=(python3)
  if [[ $ONLY != weft ]]; then
    command -v etcd >/dev/null || need+=(etcd-server)
    command -v etcdctl >/dev/null || need+=(etcd-client)
  fi
  if ((${#need[@]})); then
    log "installing: ${need[*]}"
    ((EUID == 0)) || die "missing ${need[*]} and not root: install them first"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null || die "apt-get update failed"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        die "apt-get install ${need[*]} failed"
    fi
  fi
  # Debian's etcd-server package may start a default etcd on 2379/2380; ours does not
  # use those ports, so it is left alone.
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

# --- etcd -----------------------------------------------------------------------------
export ETCDCTL_API=3
etcd_ip() { echo "127.0.0.$1"; }
etcd_cport() { echo $((ETCD_CLIENT_PORT_BASE + $1)); }
etcd_pport() { echo $((ETCD_PEER_PORT_BASE + $1)); }
etcd_url() { echo "http://$(etcd_ip "$1"):$(etcd_cport "$1")"; }
ETCD_ENDPOINTS="$(etcd_url 1),$(etcd_url 2),$(etcd_url 3)"
ETCD_CLUSTER="etcd1=http://$(etcd_ip 1):$(etcd_pport 1),etcd2=http://$(etcd_ip 2):$(etcd_pport 2),etcd3=http://$(etcd_ip 3):$(etcd_pport 3)"

etcd_start_node() { # i  (same command for the first start and for a restart)
  local i=$1 ip cp pp
  ip=$(etcd_ip "$i") cp=$(etcd_cport "$i") pp=$(etcd_pport "$i")
  start_bg "etcd$i" "$STATE/etcd$i.log" etcd --name "etcd$i" --data-dir "$STATE/etcd$i" \
    --listen-client-urls "http://$ip:$cp" --advertise-client-urls "http://$ip:$cp" \
    --listen-peer-urls "http://$ip:$pp" --initial-advertise-peer-urls "http://$ip:$pp" \
    --initial-cluster "$ETCD_CLUSTER" --initial-cluster-state new \
    --initial-cluster-token "weft-bench-$$" --logger zap --log-outputs stderr \
    --heartbeat-interval "$ETCD_HEARTBEAT_MS" --election-timeout "$ETCD_ELECTION_MS"
}

etcd_all_healthy() {
  local i
  for i in 1 2 3; do require_alive "etcd$i"; done
  etcdctl --endpoints="$ETCD_ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
    endpoint health >/dev/null 2>&1 || return 1
  etcd_leader >/dev/null
}

etcd_leader() { # prints the index of the leader; fails if there is none
  local ep i
  ep=$(etcdctl --endpoints="$ETCD_ENDPOINTS" --dial-timeout=1s --command-timeout=2s \
    endpoint status -w simple 2>/dev/null | awk -F', ' '$5 == "true" {print $1; exit}') || true
  for i in 1 2 3; do
    [[ $ep == "$(etcd_url "$i")" ]] && { echo "$i"; return 0; }
  done
  return 1
}

etcd_start_cluster() {
  local i
  for i in 1 2 3; do
    port_in_use "$(etcd_ip "$i")" "$(etcd_cport "$i")" && die "port $(etcd_ip "$i"):$(etcd_cport "$i") is in use"
    port_in_use "$(etcd_ip "$i")" "$(etcd_pport "$i")" && die "port $(etcd_ip "$i"):$(etcd_pport "$i") is in use"
  done
  for i in 1 2 3; do etcd_start_node "$i"; done
  wait_until "$READY_TIMEOUT" "etcd: 3 healthy members and a leader" etcd_all_healthy
}

etcd_sanity_write() {
  local body
  body=$(curl -sS --max-time 5 -w '\n%{http_code}' -X POST "$(etcd_url "$1")/v3/kv/put" \
    -H 'Content-Type: application/json' \
    -d "{\"key\":\"$(printf 'bench-sanity' | base64 -w0)\",\"value\":\"$(printf 'x' | base64 -w0)\"}") ||
    die "etcd sanity write: curl failed"
  [[ ${body##*$'\n'} == 2* ]] || die "etcd sanity write answered ${body##*$'\n'}: ${body%$'\n'*}"
}

etcd_count_prefix() { # i PREFIX -> number of keys under PREFIX (range with count_only)
  local end=${2%?}
  end+=$(printf "\\$(printf '%03o' $(($(printf '%d' "'${2: -1}") + 1)))")
  curl -sS --max-time 30 -X POST "$(etcd_url "$1")/v3/kv/range" -H 'Content-Type: application/json' \
    -d "{\"key\":\"$(printf '%s' "$2" | base64 -w0)\",\"range_end\":\"$(printf '%s' "$end" | base64 -w0)\",\"count_only\":true}" |
    jq -r '(.count // 0) | tonumber' 2>/dev/null || echo "?"
}

etcd_version() { etcd --version 2>/dev/null | awk '/^etcd Version/ {print $3; exit}'; }

# --- weft -----------------------------------------------------------------------------
# shellcheck source=bench/weft.sh
source "$SCRIPT_DIR/weft.sh"

weft_sanity_write() {
  local r
  r=$(weft_api "$1" POST /edge/management/v1/services '{"name":"bench-sanity","tags":{"payload":"x"}}')
  [[ $(api_status "$r") == 2* ]] || die "weft sanity write answered $(api_status "$r"): $(api_body "$r")"
}

weft_count_services() {
  local r
  r=$(weft_api "$1" GET '/edge/management/v1/services?limit=1&consistency=linearizable')
  [[ $(api_status "$r") == 2* ]] || { echo "?"; return 0; }
  api_body "$r" | jq -r '.meta.pagination.totalCount // "?"'
}


# --- generic per-system dispatch ------------------------------------------------------
sys_start_cluster() { "${1}_start_cluster"; }
sys_leader() { "${1}_leader"; }
sys_all_healthy() { "${1}_all_healthy"; }
sys_restart_node() { # sys i
  if [[ $1 == etcd ]]; then etcd_start_node "$2"; else weft_start_node "$2"; fi
}
sys_host() { "${1}_ip" "$2"; }
sys_port() { if [[ $1 == etcd ]]; then etcd_cport "$2"; else weft_port "$2"; fi; }
sys_url() { "${1}_url" "$2"; }
sys_stop_cluster() { local i; for i in 1 2 3; do stop_pid "$1$i"; done; }

# --- throughput -----------------------------------------------------------------------
RES=""   # results dir
RUNTAG="r$(date +%s)-$$"

run_wrk() { # sys clients seconds runid outfile
  local sys=$1 c=$2 d=$3 runid=$4 outf=$5 leader t lua
  leader=$(sys_leader "$sys") || die "$sys: no leader before the wrk run"
  t=$((c < 2 ? c : 2))
  lua=$SCRIPT_DIR/lua/etcd_put.lua
  [[ $sys == weft ]] && lua=$SCRIPT_DIR/lua/weft_create.lua
  start_bg wrk "$outf" env WEFT_TOKEN="$WEFT_TOKEN" timeout -k 5 $((d + 60)) \
    wrk -t"$t" -c"$c" -d"${d}s" --timeout 5s --latency -s "$lua" "$(sys_url "$sys" "$leader")" -- "$runid"
  wait "${PIDS[wrk]}" || true
  unset "PIDS[wrk]"
  grep -q '^BENCH_RESULT ' "$outf" || die "wrk printed no BENCH_RESULT line (see $outf): $(tail -n 5 "$outf")"
  echo "$leader" >"$outf.leader"
}

kv() { # line key -> value
  local k parts
  read -r -a parts <<<"$1"
  for k in "${parts[@]}"; do [[ $k == "$2="* ]] && { echo "${k#*=}"; return 0; }; done
  echo 0
}

throughput_phase() { # sys
  local sys=$1 c r line outf ok dur rps errs
  if ((WARMUP > 0)); then
    log "$sys: warm-up, 64 clients, ${WARMUP}s"
    run_wrk "$sys" 64 "$WARMUP" "$RUNTAG-warm" "$RES/$sys-warmup.txt"
    line=$(grep '^BENCH_RESULT ' "$RES/$sys-warmup.txt")
    (($(kv "$line" ok) > 0)) || die "$sys warm-up: no write succeeded: $line"
    kv "$line" ok >"$RES/$sys-warmup-ok.txt"
  fi
  for c in 1 64; do
    for ((r = 1; r <= RUNS; r++)); do
      outf=$RES/$sys-c$c-run$r.txt
      run_wrk "$sys" "$c" "$DURATION" "$RUNTAG-c$c-$r" "$outf"
      line=$(grep '^BENCH_RESULT ' "$outf")
      ok=$(kv "$line" ok) dur=$(kv "$line" duration_us)
      rps=$(awk -v o="$ok" -v d="$dur" 'BEGIN { printf "%.1f", (d > 0 ? o * 1e6 / d : 0) }')
      errs=$(($(kv "$line" non2xx) + $(kv "$line" connect) + $(kv "$line" read) + $(kv "$line" write) + $(kv "$line" timeout)))
      printf '%s %s %s %s %s %s %s %s\n' "$c" "$r" "$rps" "$(kv "$line" p50_us)" "$(kv "$line" p99_us)" \
        "$(kv "$line" non2xx)" "$errs" "$ok" >>"$RES/$sys-runs.txt"
      log "$sys c=$c run $r/$RUNS: $rps writes/s, p50 $(kv "$line" p50_us)us, p99 $(kv "$line" p99_us)us, non-2xx $(kv "$line" non2xx), all errors $errs"
      if ((errs > 0)); then
        echo "WARNING: $sys, $c clients, run $r: $(kv "$line" non2xx) non-2xx (status:count $(kv "$line" codes)), socket errors connect/read/write/timeout $(kv "$line" connect)/$(kv "$line" read)/$(kv "$line" write)/$(kv "$line" timeout); first error body: $(kv "$line" sample | tr _ ' ')" >>"$RES/warnings.txt"
      fi
    done
  done
}

# --- failover -------------------------------------------------------------------------
writer_oks() { # file min -> true when the file has >= min ok lines
  [[ -f $1 ]] && (($(grep -c '^ok ' "$1" || true) >= $2))
}
first_ack_after() { # file t_kill_ns -> end_ns of the first ok sent after the kill
  awk -v k="$2" '$1 == "ok" && $2 >= k { print $3; found = 1; exit } END { exit !found }' "$1"
}

failover_phase() { # sys
  local sys=$1 trial leader survivor wout t_kill t_ack deadline ms gap i
  for ((trial = 1; trial <= TRIALS; trial++)); do
    wait_until "$READY_TIMEOUT" "$sys: all members healthy before trial $trial" sys_all_healthy "$sys"
    leader=$(sys_leader "$sys") || die "$sys: no leader before trial $trial"
    survivor=""
    for i in 1 2 3; do [[ $i != "$leader" ]] && { survivor=$i; break; }; done
    wout=$RES/$sys-failover-$trial.txt
    start_bg writer "$STATE/writer.log" env WEFT_TOKEN="$WEFT_TOKEN" python3 "$SCRIPT_DIR/failover_writer.py" \
      --kind "$sys" --host "$(sys_host "$sys" "$survivor")" --port "$(sys_port "$sys" "$survivor")" \
      --cacert "$([[ $sys == weft ]] && weft_ca || echo /dev/null)" \
      --prefix "$RUNTAG-fo$trial" --timeout "$REQ_TIMEOUT" --interval-ms "$FO_INTERVAL_MS" \
      --max-seconds $((FAILOVER_TIMEOUT + 30)) --out "$wout"
    wait_until 15 "$sys failover writer: 5 acknowledged writes through node $survivor" writer_oks "$wout" 5
    sleep 0.5
    # kill is a bash builtin and EPOCHREALTIME needs no fork: t_kill is within µs of the kill.
    if [[ -n ${EPOCHREALTIME:-} ]]; then t_kill=${EPOCHREALTIME/./}000; else t_kill=$(date +%s%N); fi
    kill -KILL "${PIDS[$sys$leader]}"
    wait "${PIDS[$sys$leader]}" 2>/dev/null || true
    unset "PIDS[$sys$leader]"
    deadline=$((SECONDS + FAILOVER_TIMEOUT))
    t_ack=""
    while ((SECONDS < deadline)); do
      if t_ack=$(first_ack_after "$wout" "$t_kill"); then break; fi
      t_ack=""
      sleep 0.05
    done
    stop_pid writer
    gap=$(awk -v k="$t_kill" '$2 >= k && $1 == "err" { c[$4]++ } $2 >= k && $1 == "ok" { exit }
      END { s = ""; for (e in c) s = s (s == "" ? "" : ", ") e " x" c[e]; print (s == "" ? "none" : s) }' "$wout")
    if [[ -n $t_ack ]]; then
      ms=$(awk -v a="$t_ack" -v k="$t_kill" 'BEGIN { printf "%.1f", (a - k) / 1e6 }')
      echo "$ms" >>"$RES/$sys-failover.txt"
      log "$sys failover trial $trial/$TRIALS: killed leader node $leader, writer on node $survivor: ${ms} ms (errors meanwhile: $gap)"
    else
      echo "fail" >>"$RES/$sys-failover.txt"
      log "$sys failover trial $trial/$TRIALS: NO acknowledged write within ${FAILOVER_TIMEOUT}s of killing node $leader (errors: $gap)"
      echo "WARNING: $sys failover trial $trial: no acknowledged write within ${FAILOVER_TIMEOUT}s after killing the leader (node $leader); writer errors: $gap" >>"$RES/warnings.txt"
    fi
    echo "trial $trial: killed $leader, writer on $survivor, errors: $gap" >>"$RES/$sys-failover-detail.txt"
    sys_restart_node "$sys" "$leader"
    wait_until "$READY_TIMEOUT" "$sys: restarted node $leader healthy, 3 members, a leader" sys_all_healthy "$sys"
  done
}

# --- the run of one system ------------------------------------------------------------
bench_system() { # sys
  local sys=$1 leader total_ok count
  log "$sys: starting a 3-node cluster"
  sys_start_cluster "$sys"
  leader=$(sys_leader "$sys") || die "$sys: no leader"
  log "$sys: leader is node $leader ($(sys_url "$sys" "$leader"))"
  "${sys}_sanity_write" "$leader"
  if [[ $sys == etcd ]]; then ETCD_VERSION=$(etcd_version); else WEFT_VERSION=$(weft_version); fi
  throughput_phase "$sys"
  # every acknowledged write must be there afterwards (a cheap check of the load itself)
  total_ok=$(awk '{ s += $8 } END { print s + 0 }' "$RES/$sys-runs.txt")
  if [[ $sys == etcd ]]; then
    count=$(etcd_count_prefix "$leader" "bench/$RUNTAG-c")
  else # weft counts every service: add the warm-up's and the sanity write
    total_ok=$((total_ok + 1 + $(cat "$RES/$sys-warmup-ok.txt" 2>/dev/null || echo 0)))
    count=$(weft_count_services "$leader")
  fi
  echo "$count $total_ok" >"$RES/$sys-count.txt"
  log "$sys: $count entries stored for $total_ok acknowledged writes"
  if [[ $count =~ ^[0-9]+$ ]] && ((count < total_ok)); then
    echo "WARNING: $sys holds $count entries after the load but acknowledged $total_ok writes: acknowledged writes are missing" >>"$RES/warnings.txt"
  fi
  failover_phase "$sys"
  log "$sys: stopping the cluster"
  sys_stop_cluster "$sys"
}

# --- report ---------------------------------------------------------------------------
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) { print "-"; exit }
  if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { sort -g | tail -n 1; }

cell() { # sys clients column(3=rps,4=p50us,5=p99us) -> median (latency in ms)
  local f=$RES/$1-runs.txt
  [[ -f $f ]] || { echo "-"; return; }
  awk -v c="$2" -v col="$3" '$1 == c { v = $col; if (col != 3) v = v / 1000; print v }' "$f" | median
}
errs_of() { # sys clients -> total errors of those runs
  local f=$RES/$1-runs.txt
  [[ -f $f ]] || { echo "-"; return; }
  awk -v c="$2" '$1 == c { s += $7 } END { print s + 0 }' "$f"
}
failover_stat() { # sys median|max
  local f=$RES/$1-failover.txt
  [[ -f $f ]] || { echo "-"; return; }
  grep -v fail "$f" | if [[ $2 == median ]]; then median; else maxof; fi
}
failover_fails() { local f=$RES/$1-failover.txt; if [[ -f $f ]]; then grep -c fail "$f" || true; else echo 0; fi; }

fmt() { # number -> 1 decimal for small values, integer for large
  [[ $1 == - || -z $1 ]] && { echo "-"; return; }
  awk -v v="$1" 'BEGIN { if (v >= 100) printf "%.0f", v; else if (v >= 10) printf "%.1f", v; else printf "%.2f", v }'
}
ratio() {
  [[ $1 == - || $2 == - || -z $1 || -z $2 ]] && { echo "-"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'
}

report() {
  local c w e flag_w flag_e cnt tok
  row() { printf '%-38s %12s %12s %10s\n' "$1" "$2" "$3" "$4"; }
  echo "== weft vs etcd: 3-node clusters, loopback, one machine =="
  echo "date:      $(date -u +%Y-%m-%dT%H:%M:%SZ)   host: $(nproc) cores, $(uname -sr)"
  echo "state dir: $(stat -f -c %T "$STATE") filesystem (under $(dirname "$STATE"))"
  echo "load avg:  ${LOAD_START:-?} at start, $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null) at end (1/5/15 min; >1 means other work shared the cores)"
  local weft_timing="its default settings"
  ((${#WEFT_EXTRA_ARGS[@]})) && weft_timing="with ${WEFT_EXTRA_ARGS[*]}"
  echo "weft:      ${WEFT_VERSION:-not run} ${WEFT_BIN:+($WEFT_BIN, $weft_timing)}"
  local etcd_def=""
  ((ETCD_HEARTBEAT_MS == 100 && ETCD_ELECTION_MS == 1000)) && etcd_def=", etcd's defaults"
  echo "etcd:      ${ETCD_VERSION:-not run} (heartbeat ${ETCD_HEARTBEAT_MS} ms, election ${ETCD_ELECTION_MS} ms${etcd_def}; JSON gateway /v3/kv/put)"
  echo "load:      $(wrk --version 2>&1 | head -n 1 | awk '{print $1, $2}'), each write a unique name + 256-byte payload, sent to the leader;"
  echo "           ${DURATION}s per run, median of ${RUNS} run(s); 1 client = -t1 -c1, 64 clients = -t2 -c64"
  echo "failover:  SIGKILL the leader; time to the first acknowledged write sent after the kill through a"
  echo "           survivor (a write every ${FO_INTERVAL_MS} ms, ${REQ_TIMEOUT}s timeout each); ${TRIALS} trial(s), killed node restarted in between"
  echo
  row "figure" "weft" "etcd" "weft/etcd"
  row "------" "----" "----" "---------"
  for c in 1 64; do
    local label="$c client"; ((c > 1)) && label="$c clients"
    flag_w=""; flag_e=""
    [[ $(errs_of weft $c) =~ ^[1-9] ]] && flag_w="!"
    [[ $(errs_of etcd $c) =~ ^[1-9] ]] && flag_e="!"
    w=$(cell weft $c 3) e=$(cell etcd $c 3)
    row "writes/s, $label" "$(fmt "$w")$flag_w" "$(fmt "$e")$flag_e" "$(ratio "$w" "$e")"
    w=$(cell weft $c 4) e=$(cell etcd $c 4)
    row "p50 latency ms, $label" "$(fmt "$w")$flag_w" "$(fmt "$e")$flag_e" "$(ratio "$w" "$e")"
    w=$(cell weft $c 5) e=$(cell etcd $c 5)
    row "p99 latency ms, $label" "$(fmt "$w")$flag_w" "$(fmt "$e")$flag_e" "$(ratio "$w" "$e")"
    row "errors (non-2xx+socket), $label" "$(errs_of weft $c)" "$(errs_of etcd $c)" ""
  done
  w=$(failover_stat weft median) e=$(failover_stat etcd median)
  flag_w=""; flag_e=""
  [[ $(failover_fails weft) =~ ^[1-9] ]] && flag_w="!"
  [[ $(failover_fails etcd) =~ ^[1-9] ]] && flag_e="!"
  row "failover median ms (n=$TRIALS)" "$(fmt "$w")$flag_w" "$(fmt "$e")$flag_e" "$(ratio "$w" "$e")"
  w=$(failover_stat weft max) e=$(failover_stat etcd max)
  row "failover max ms" "$(fmt "$w")$flag_w" "$(fmt "$e")$flag_e" "$(ratio "$w" "$e")"
  row "failover trials without recovery" "$([[ -f $RES/weft-failover.txt ]] && failover_fails weft || echo -)" \
    "$([[ -f $RES/etcd-failover.txt ]] && failover_fails etcd || echo -)" ""
  echo
  echo "weft/etcd > 1: weft better for writes/s, worse for latency and failover. '!' = errors in those runs."
  echo
  echo "details:"
  local sys
  for sys in weft etcd; do
    [[ -f $RES/$sys-runs.txt ]] || continue
    for c in 1 64; do
      echo "  $sys $c client(s), per run writes/s: $(awk -v c=$c '$1 == c { printf "%s ", $3 }' "$RES/$sys-runs.txt")"
    done
    [[ -f $RES/$sys-failover.txt ]] && echo "  $sys failover per trial ms: $(tr '\n' ' ' <"$RES/$sys-failover.txt")"
    [[ -f $RES/$sys-failover-detail.txt ]] && sed "s/^/  $sys failover /" "$RES/$sys-failover-detail.txt"
    [[ -f $RES/$sys-count.txt ]] && read -r cnt tok <"$RES/$sys-count.txt" &&
      echo "  $sys stored after the load: $cnt entries for $tok acknowledged writes$([[ $sys == weft ]] && echo ' (all services: measured runs, warm-up, sanity write)' || echo ' (keys of the measured runs)')"
  done
  if [[ -s $RES/warnings.txt ]]; then
    echo
    cat "$RES/warnings.txt"
  fi
}

# --- main -----------------------------------------------------------------------------
ensure_tools
[[ $ONLY == etcd ]] || ensure_weft
STATE=$(mktemp -d "${TMPDIR:-/tmp}/weft-bench.XXXXXX")
RES=$STATE/results
mkdir -p "$RES"
: >"$RES/warnings.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
awk '{ exit !($1 > 1.0) }' /proc/loadavg 2>/dev/null &&
  log "note: load average is $LOAD_START: other processes compete for the CPU, numbers will be noisy"
log "state in $STATE; duration ${DURATION}s x ${RUNS} run(s), ${TRIALS} failover trial(s)"
ETCD_VERSION="" WEFT_VERSION=""
for sys in "${SYSTEMS[@]}"; do bench_system "$sys"; done
if [[ -n $OUT ]]; then
  report | tee "$OUT"
else
  report
fi
