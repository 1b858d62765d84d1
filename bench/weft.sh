# Shared by bench/cluster.sh and bench/network_model.sh (sourced, never run): a 3-node
# weft cluster of real `weft controller run` processes on loopback, and calls to its API.
# Needs from the sourcing script: log, die, start_bg, wait_until, port_in_use, STATE,
# WEFT_BIN, READY_TIMEOUT and the WEFT_* options it documents.

WEFT_PASS="bench-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
WEFT_TOKEN=""
weft_ip() { echo "127.0.0.$1"; }
weft_port() { echo $((WEFT_PORT_BASE + $1)); }
weft_url() { echo "https://$(weft_ip "$1"):$(weft_port "$1")"; }
weft_ca() { echo "$STATE/weft1/ca.pem"; }

weft_health() { # i -> JSON of /health-checks .data (empty on failure)
  curl -sS --max-time 1 --cacert "$(weft_ca)" "$(weft_url "$1")/health-checks" 2>/dev/null |
    jq -c '.data // empty' 2>/dev/null || true
}

weft_api() { # i METHOD PATH [BODY] -> body, then a last line with the HTTP status
  local i=$1 m=$2 p=$3 b=${4:-}
  local args=(-sS --max-time 10 --cacert "$(weft_ca)" -w '\n%{http_code}' -X "$m"
    -H 'Content-Type: application/json')
  [[ -n $WEFT_TOKEN ]] && args+=(-H "zt-session: $WEFT_TOKEN")
  [[ -n $b ]] && args+=(-d "$b")
  curl "${args[@]}" "$(weft_url "$i")$p" 2>&1 || true
}
api_status() { printf '%s\n' "$1" | tail -n 1; }
api_body() { printf '%s\n' "$1" | sed '$d'; }

weft_node_is() { # i ROLE-REGEX: node answers health with that role and is in quorum
  local h
  require_alive "weft$1"
  h=$(weft_health "$1")
  [[ -n $h ]] || return 1
  jq -e --arg r "$2" '(.role | test("^(" + $r + ")$")) and .inQuorum == true and .leaderId != null' \
    <<<"$h" >/dev/null
}

weft_leader() { # prints the index of the node whose role is leader
  local i h
  for i in 1 2 3; do
    h=$(weft_health "$i")
    [[ -n $h ]] && jq -e '.role == "leader"' <<<"$h" >/dev/null && { echo "$i"; return 0; }
  done
  return 1
}

weft_all_healthy() {
  local i
  for i in 1 2 3; do weft_node_is "$i" 'leader|follower' || return 1; done
  weft_leader >/dev/null
}

weft_three_voters() {
  local r n
  r=$(weft_api 1 GET /fabric/v1/cluster/list-members)
  [[ $(api_status "$r") == 2* ]] || return 1
  n=$(api_body "$r" | jq '[.data[] | select(.voter == true)] | length' 2>/dev/null) || return 1
  [[ $n == 3 ]]
}

weft_start_node() { # i [extra args...]
  local i=$1; shift
  start_bg "weft$i" "$STATE/weft$i.log" "$WEFT_BIN" controller run \
    --data-dir "$STATE/weft$i" --listen "$(weft_ip "$i"):$(weft_port "$i")" \
    ${WEFT_EXTRA_ARGS[@]+"${WEFT_EXTRA_ARGS[@]}"} "$@"
}

weft_login() {
  local r
  WEFT_TOKEN=""
  r=$(weft_api 1 POST '/edge/client/v1/authenticate?method=password' \
    "{\"username\":\"admin\",\"password\":\"$WEFT_PASS\"}")
  [[ $(api_status "$r") == 2* ]] || die "weft login answered $(api_status "$r"): $(api_body "$r")"
  WEFT_TOKEN=$(api_body "$r" | jq -r '.data.token // empty')
  [[ -n $WEFT_TOKEN ]] || die "weft login: no data.token in: $(api_body "$r")"
}

weft_start_cluster() {
  local i r jt
  for i in 1 2 3; do
    port_in_use "$(weft_ip "$i")" "$(weft_port "$i")" && die "port $(weft_ip "$i"):$(weft_port "$i") is in use"
  done
  weft_start_node 1 --bootstrap --admin-password "$WEFT_PASS"
  wait_until "$READY_TIMEOUT" "weft1 to write $(weft_ca)" test -s "$(weft_ca)"
  wait_until "$READY_TIMEOUT" "weft1 to be leader (GET /health-checks)" weft_node_is 1 leader
  weft_login
  for i in 2 3; do
    r=$(weft_api 1 POST /fabric/v1/cluster/join-token)
    [[ $(api_status "$r") == 2* ]] || die "join-token answered $(api_status "$r"): $(api_body "$r")"
    jt=$(api_body "$r" | jq -r '.data.token // empty')
    [[ -n $jt ]] || die "join-token: no data.token in: $(api_body "$r")"
    weft_start_node "$i" --join "$(weft_url 1)" --join-token "$jt"
    wait_until "$READY_TIMEOUT" "weft$i to join (health: follower, inQuorum)" weft_node_is "$i" 'leader|follower'
  done
  wait_until "$READY_TIMEOUT" "weft: 3 voters in list-members" weft_three_voters
  wait_until "$READY_TIMEOUT" "weft: 3 healthy members and a leader" weft_all_healthy
  api_body "$(weft_api 1 GET /fabric/v1/cluster/list-members)" >"$STATE/weft-members.json" || true
}

weft_version() {
  local v
  v=$(api_body "$(weft_api 1 GET /version)" | jq -r '.data.version // empty' 2>/dev/null) || true
  [[ -n $v ]] || v=$("$WEFT_BIN" --version 2>/dev/null | head -n 1) || true
  echo "${v:-unknown}"
}
