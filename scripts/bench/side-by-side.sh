#!/usr/bin/env bash
# Side by side, in one run (the performance issue's harness): the same chat request sent by wrk
# to the mock provider directly, through a plain nginx `proxy_pass` hop, and through Tollgate on
# SQLite and on MariaDB. The hop under test (nginx, or Tollgate with its MariaDB server) is
# pinned to one core, the mock provider and the load generator to the other. Fixed concurrency
# (64 connections), JSON and streaming answers, one hot user and 1,000 users with a key each;
# with `oha` installed (crates.io), also a fixed rate (1,000 calls/s) to read the latency
# Tollgate adds over calling the mock directly. After every Tollgate row the books are checked
# in the database: balances + Σ charges = Σ top-ups, one log row per answered call, no hold
# left. Prints one table; ratios are to the nginx row of the same mode.
#
#   cargo build --release -p tollgate-server -p tollgate-tests --bins
#   bash scripts/bench/side-by-side.sh
#
# Settings: BENCH_SECONDS (10), BENCH_CONNECTIONS (64), BENCH_USERS ("1 1000"), BENCH_MODES
# ("json stream"), BENCH_DATABASES ("sqlite mysql"), BENCH_MYSQL (mysql://root@127.0.0.1:3306;
# a database is created and dropped per row), BENCH_RATE (1000), BENCH_GATEWAY_CPU (0),
# BENCH_LOAD_CPU (1), BENCH_LEDGER (lease: TOLLGATE_LEDGER of the Tollgate rows), BENCH_PIN_MARIADB (1: pin mariadbd to the gateway's core for the MariaDB
# rows, restored after), BENCH_OPEN_STREAMS (1: hold 1,000 streams open on the 1,000-user
# instances and report the peak RSS), BENCH_KEEP (set: keep the work folder with every log),
# BENCH_WRAP (a command Tollgate runs under: `env LD_PRELOAD=…`, which execs, or `heaptrack -o
# /tmp/tg`, whose RSS and CPU figures are then the wrapper's; heaptrack sees Rust's allocations
# only in a build without jemalloc). Needs wrk, nginx (Debian
# `nginx-light`), taskset, python3, the mysql client for MariaDB rows; `oha` for the fixed-rate
# rows. Besides the table it prints, per Tollgate row, the CPU time Tollgate used per answered
# call (steadier than calls/s on a machine shared with noisy neighbours).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
tg_bin=${TOLLGATE_BIN:-$target/release/tollgate}
mock_bin=${MOCK_BIN:-$target/release/mock-provider}
seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-64}
user_counts=${BENCH_USERS:-"1 1000"}
modes=${BENCH_MODES:-"json stream"}
databases=${BENCH_DATABASES:-"sqlite mysql"}
mysql_server=${BENCH_MYSQL:-mysql://root@127.0.0.1:3306}
rate=${BENCH_RATE:-1000}
gw_cpu=${BENCH_GATEWAY_CPU:-0}
load_cpu=${BENCH_LOAD_CPU:-1}
pin_mariadb=${BENCH_PIN_MARIADB:-1}
ledger=${BENCH_LEDGER:-lease}

for tool in wrk nginx taskset python3; do
  command -v "$tool" >/dev/null || { echo "side-by-side: $tool is missing (apt-get install wrk nginx-light util-linux)" >&2; exit 1; }
done
[ -x "$tg_bin" ] && [ -x "$mock_bin" ] || { echo "side-by-side: build first: cargo build --release -p tollgate-server -p tollgate-tests --bins" >&2; exit 1; }
have_oha=0
command -v oha >/dev/null && have_oha=1

work=$(mktemp -d)
pids=()
mariadb_pid=$(pgrep -x mariadbd || pgrep -x mysqld || true)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -z "$mariadb_pid" ] || taskset -a -p -c 0-"$(($(nproc) - 1))" "$mariadb_pid" >/dev/null 2>&1 || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "side-by-side: logs kept in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "side-by-side: $1 did not answer" >&2; return 1
}

# The mock provider, on the load generator's core.
taskset -c "$load_cpu" "$mock_bin" >"$work/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/mock.out" ] && break; sleep 0.05; done
mock_url=$(head -n1 "$work/mock.out")
mock_port=${mock_url##*:}; mock_port=${mock_port%%/*}

# nginx: one worker on the gateway's core, keep-alive to the mock, streaming unbuffered.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity $(python3 -c "print(format(1 << $gw_cpu, 'b'))");
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream mock { server 127.0.0.1:$mock_port; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
taskset -c "$gw_cpu" nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' >"$work/nginx/out" 2>&1 &
pids+=($!)

admin_key=admin-$RANDOM$RANDOM
ext_key=platform-$RANDOM$RANDOM
tg_pid=
tg_base=
tg_db=
tg_mysql_db=

# Starts Tollgate on database $1 (sqlite|mysql) pinned to the gateway's core.
start_tollgate() {
  local port dir
  port=$(free_port)
  dir=$work/tg-$1-$RANDOM
  mkdir -p "$dir"
  if [ "$1" = sqlite ]; then
    tg_db="sqlite://$dir/tollgate.db?mode=rwc"
  else
    tg_mysql_db=tg_sbs_$RANDOM$RANDOM
    mysql -h127.0.0.1 -uroot -e "CREATE DATABASE $tg_mysql_db"
    tg_db="$mysql_server/$tg_mysql_db"
    if [ "$pin_mariadb" = 1 ] && [ -n "$mariadb_pid" ]; then
      taskset -a -p -c "$gw_cpu" "$mariadb_pid" >/dev/null
    fi
  fi
  (
    for v in $(env | sed -n 's/^\(TOLLGATE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
    export TOLLGATE_LISTEN=127.0.0.1:$port TOLLGATE_DATABASE_URL=$tg_db
    export TOLLGATE_ADMIN_KEY=$admin_key TOLLGATE_EXTERNAL_API_KEYS=$ext_key TOLLGATE_LOG_DIR=$dir/logs
    export TOLLGATE_LEDGER=$ledger
    # shellcheck disable=SC2086 # BENCH_WRAP is a command line, split on purpose
    cd "$dir" && exec taskset -c "$gw_cpu" ${BENCH_WRAP:-} "$tg_bin"
  ) >"$dir/out" 2>&1 &
  tg_pid=$!
  pids+=("$tg_pid")
  tg_base=http://127.0.0.1:$port
  tg_dir=$dir
  wait_http "$tg_base/healthz"
}

stop_tollgate() {
  # A BENCH_WRAP that does not exec (heaptrack) runs Tollgate as its child: only Tollgate is
  # stopped, and the wrapper is waited for (heaptrack's own children are still writing its
  # file when Tollgate ends).
  # A wrapper that runs Tollgate in its own process (valgrind) has no such child: it is sent
  # the TERM itself, which it passes on.
  local bin p child=
  bin=$(readlink -f "$tg_bin")
  if [ "$(readlink -f "/proc/$tg_pid/exe" 2>/dev/null)" = "$bin" ]; then
    kill "$tg_pid" 2>/dev/null || true
  else
    for p in $(pgrep -P "$tg_pid"); do
      [ "$(readlink -f "/proc/$p/exe" 2>/dev/null)" != "$bin" ] || { kill -TERM "$p" 2>/dev/null || true; child=1; }
    done
    [ -n "$child" ] || kill -TERM "$tg_pid" 2>/dev/null || true
  fi
  wait "$tg_pid" 2>/dev/null || true
  if [ -n "$tg_mysql_db" ]; then
    mysql -h127.0.0.1 -uroot -e "DROP DATABASE $tg_mysql_db"
    tg_mysql_db=
    [ -z "$mariadb_pid" ] || taskset -a -p -c 0-"$(($(nproc) - 1))" "$mariadb_pid" >/dev/null 2>&1 || true
  fi
}

# One channel to the mock, $1 users each topped up with $100 and given one key; the keys go to
# $work/keys (one a line).
seed() {
  python3 - "$tg_base" "$admin_key" "$ext_key" "$mock_url" "$1" >"$work/keys" <<'PY'
import http.client, json, sys, urllib.parse
base, admin, ext, mock, users = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
u = urllib.parse.urlparse(base)
c = http.client.HTTPConnection(u.hostname, u.port)
def call(method, path, key, body):
    c.request(method, path, json.dumps(body), {"Authorization": "Bearer " + key, "Content-Type": "application/json"})
    r = c.getresponse(); data = json.loads(r.read())
    if r.status != 200 or not data.get("success"):
        sys.exit(f"seed: {method} {path} -> {r.status} {data}")
    return data["data"]
call("PUT", "/api/admin/pricing/qwen-stall", admin, {"input": 2, "output": 6, "cached_input": 2})
call("POST", "/api/admin/channels", admin, {"name": "mock", "type": "openai_compatible", "base_url": mock, "key": "k", "models": ["qwen-turbo", "qwen-stall"], "model_mapping": {"qwen-stall": "stall"}})
for i in range(users):
    uid = f"bench-{i}"
    call("POST", "/api/user/external/sync", ext, {"external_user_id": uid, "username": uid})
    call("POST", "/api/user/external/topup", ext, {"external_user_id": uid, "amount_usd": 100, "payment_id": f"pay-{uid}"})
    print(call("POST", "/api/user/external/token", ext, {"external_user_id": uid, "token_name": "bench"})["access_key"])
PY
}

# The wrk script: each request with a key drawn from $work/keys; $1 = json|stream, $2 = the
# model (qwen-turbo).
write_lua() {
  local stream=false
  [ "$1" = stream ] && stream=true
  python3 - "$work/keys" "$stream" "${2:-qwen-turbo}" >"$work/req.lua" <<'PY'
import sys
keys = [k.strip() for k in open(sys.argv[1]) if k.strip()] or ["sk-none"]
print("local keys = {" + ",".join('"%s"' % k for k in keys) + "}")
print('local body = \'{"model":"%s","max_tokens":50,"stream":%s,"messages":[{"role":"user","content":"hello there"}]}\'' % (sys.argv[3], sys.argv[2]))
print('''local n = 0
request = function()
  n = n + 1
  local key = keys[(n % #keys) + 1]
  return wrk.format("POST", nil, {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end''')
PY
}

results=$work/results
: >"$results"
: >"$results.books"
# wrk at fixed concurrency against $2 (full URL); appends "label|rps|p50|p99|calls_ok|errors".
measure() {
  local label=$1 url=$2 out
  taskset -c "$load_cpu" wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$work/req.lua" "$url" >"$work/wrk.out"
  python3 - "$label" "$work/wrk.out" <<'PY' >>"$results"
import re, sys
out = open(sys.argv[2]).read()
def val(pat, default="0"):
    m = re.search(pat, out); return m.group(1) if m else default
def ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    if not m: sys.exit("side-by-side: cannot read wrk's output:\n" + out)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v
total = int(val(r"(\d+) requests in"))
non2xx = int(val(r"Non-2xx or 3xx responses: (\d+)"))
errs = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", val(r"Socket errors: ([^\n]*)", "")))
print("|".join([sys.argv[1], val(r"Requests/sec:\s+([\d.]+)"), "%.2f" % ms(val(r"(?m)^\s+50%\s+(\S+)", "0us")), "%.2f" % ms(val(r"(?m)^\s+99%\s+(\S+)", "0us")), str(total - non2xx), str(non2xx + errs)]))
PY
}

# oha at a fixed rate against $2; appends "label|p50|p99" to $work/rates.
rates=$work/rates
: >"$rates"
measure_rate() {
  [ "$have_oha" = 1 ] || return 0
  local label=$1 url=$2 key body
  key=$(head -n1 "$work/keys")
  body='{"model":"qwen-turbo","max_tokens":50,"stream":false,"messages":[{"role":"user","content":"hello there"}]}'
  taskset -c "$load_cpu" oha --no-tui --output-format json -z "${seconds}s" -q "$rate" -c "$conns" -m POST \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" "$url" >"$work/oha.json"
  python3 - "$label" "$work/oha.json" >>"$rates" <<'PY'
import json, sys
d = json.load(open(sys.argv[2]))
p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
print("|".join([sys.argv[1], "%.3f" % (p["p50"] * 1000), "%.3f" % (p["p99"] * 1000), str(codes)]))
PY
}

# The CPU time Tollgate's process has used so far, in clock ticks (user + system, all threads).
# Calls/s on this machine vary by ±20% from run to run; the CPU a call costs varies less, so it
# is the figure to compare two builds by.
cpu_ticks() {
  awk '{print $14 + $15}' "/proc/$tg_pid/stat"
}

# Appends "$1: N µs of CPU a call" to $work/rss: the ticks since $2 over $3 answered calls (with
# MariaDB, its own server's CPU is not in it).
cpu_per_call() {
  local ticks
  ticks=$(( $(cpu_ticks) - $2 ))
  python3 -c 'import os, sys; t, n = int(sys.argv[2]), int(sys.argv[3]); hz = os.sysconf("SC_CLK_TCK"); print(f"{sys.argv[1]}: {t * 1e6 / hz / max(n, 1):.1f} µs of CPU a call ({n} calls)")' "$1" "$ticks" "$3" >>"$work/rss"
}

# 1,000 streams held open (the mock's `stall` model: two pieces, then silence) for
# $seconds by as many wrk connections; the peak RSS of Tollgate and of its holds in flight go
# to $work/rss. Returns the calls to allow for in the books (each stream is cut by wrk's stop).
open_streams() {
  local label=$1 peak=0 holds=0 rss h
  write_lua stream qwen-stall
  taskset -c "$load_cpu" wrk -t1 -c1000 -d"${seconds}s" --timeout 60s -s "$work/req.lua" "$tg_base/v1/chat/completions" >"$work/open.out" 2>&1 &
  local wrk_pid=$!
  while kill -0 "$wrk_pid" 2>/dev/null; do
    rss=$(ps -o rss= -p "$tg_pid" | tr -d ' ')
    h=$(curl -fsS "$tg_base/metrics" | awk '$1 == "tollgate_holds_in_flight" {print int($2)}')
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss
    [ "${h:-0}" -gt "$holds" ] && holds=$h
    sleep 0.2
  done
  wait "$wrk_pid" || true
  echo "$label: peak RSS $((peak / 1024)) MB with up to $holds streams open at once (1,000 wrk connections, ${seconds}s)" >>"$work/rss"
}

# The books of the running Tollgate: prints "ok" or what is wrong. $1 = calls answered 2xx,
# $2 = calls that may have been cut when wrk stopped (its connections, per run so far).
check_books() {
  local sql
  sql="SELECT (SELECT COALESCE(SUM(quota_added),0) FROM topups), (SELECT COALESCE(SUM(quota),0) FROM users),
       (SELECT COALESCE(SUM(quota),0) FROM logs WHERE kind = 2), (SELECT COUNT(*) FROM logs WHERE kind = 2),
       (SELECT COUNT(*) FROM holds), (SELECT COALESCE(SUM(held_quota),0) FROM users),
       (SELECT COUNT(*) - COUNT(DISTINCT request_id) FROM logs WHERE kind = 2)"
  local ok=$1 row holds
  for _ in $(seq 1 100); do
    if [ -z "$tg_mysql_db" ]; then
      row=$(python3 -c 'import sqlite3,sys; print(" ".join(map(str, sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone())))' "$tg_dir/tollgate.db" "$sql")
    else
      row=$(mysql -h127.0.0.1 -uroot -N -B "$tg_mysql_db" -e "$sql" | tr '\t' ' ')
    fi
    # Settlements are written in the background: wait for the last holds to go.
    holds=$(echo "$row" | awk '{print $5}')
    [ "$holds" = 0 ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086 # one argument per number
  python3 - $row "$ok" "$2" <<'PY'
import sys
top, bal, charged, logged, holds, held, dup, ok, conns = map(int, sys.argv[1:10])
bad = []
if bal + charged != top: bad.append(f"balances {bal} + charges {charged} != top-ups {top}")
# wrk counts the calls it read whole; the calls in flight when it stops (one a connection at
# most) may still be settled (a stream for what it delivered) without being counted by wrk.
if not ok <= logged <= ok + conns: bad.append(f"{logged} log rows for {ok} answered calls")
if dup: bad.append(f"{dup} calls logged twice")
if holds or held: bad.append(f"{holds} holds ({held} quota) left")
print(("ok" + (f" (+{logged - ok} cut by wrk's stop)" if logged > ok else "")) if not bad else "; ".join(bad))
PY
}

# nginx answers (whatever the mock says to that path).
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && break; sleep 0.05; done
: >"$work/keys"
for mode in $modes; do
  write_lua "$mode"
  measure "mock directly, $mode" "$mock_url/chat/completions"
  echo "|" >>"$results.books"
  measure "nginx proxy_pass, $mode" "http://127.0.0.1:$nginx_port/v1/chat/completions"
  echo "|" >>"$results.books"
done
echo 'sk-any' >"$work/keys"
write_lua json
measure_rate "mock directly" "$mock_url/chat/completions"
measure_rate "nginx proxy_pass" "http://127.0.0.1:$nginx_port/v1/chat/completions"

for db in $databases; do
  for users in $user_counts; do
    start_tollgate "$db"
    seed "$users"
    for mode in $modes; do
      write_lua "$mode"
      cpu_before=$(cpu_ticks)
      measure "Tollgate $db, $users user(s), $mode" "$tg_base/v1/chat/completions"
      ok=$(tail -n1 "$results" | cut -d'|' -f5)
      cpu_per_call "Tollgate $db, $users user(s), $mode" "$cpu_before" "$ok"
      # The books hold every row so far on this instance.
      total_ok=$(( ${total_ok_for_instance:-0} + ok ))
      total_ok_for_instance=$total_ok
      runs_here=$(( ${runs_here:-0} + 1 ))
      echo "|$(check_books "$total_ok" $((runs_here * conns)))" >>"$results.books"
    done
    if [ "$users" = 1 ]; then
      write_lua json
      measure_rate "Tollgate $db, 1 user" "$tg_base/v1/chat/completions"
    elif [ "${BENCH_OPEN_STREAMS:-1}" = 1 ]; then
      open_streams "Tollgate $db, $users users"
      sleep 2
      echo "Tollgate $db, $users users, after 1,000 streams cut: books $(check_books "$total_ok" $((runs_here * conns + 1000)))" >>"$work/rss"
    fi
    rss=$(ps -o rss= -p "$tg_pid" | tr -d ' ')
    echo "Tollgate $db, $users user(s): RSS after the run ${rss} KiB" >>"$work/rss"
    total_ok_for_instance=0
    runs_here=0
    stop_tollgate
  done
done

git_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')
echo "side-by-side at $git_rev, $(date -u +%Y-%m-%dT%H:%MZ), ledger $ledger, ${seconds}s per row, $conns connections, gateway on cpu $gw_cpu, mock and wrk on cpu $load_cpu"
echo
python3 - "$results" "$results.books" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
books = [l.rstrip("\n").split("|", 1)[1] for l in open(sys.argv[2])]
nginx = {r[0].split(", ")[-1]: float(r[1]) for r in rows if r[0].startswith("nginx")}
print("| row | calls/s | p50 ms | p99 ms | answered | failed | vs nginx | books |")
print("|---|---|---|---|---|---|---|---|")
for r, b in zip(rows, books):
    mode = r[0].split(", ")[-1]
    ratio = float(r[1]) / nginx[mode] * 100 if nginx.get(mode) else 0
    print(f"| {r[0]} | {float(r[1]):,.0f} | {r[2]} | {r[3]} | {r[4]} | {r[5]} | {ratio:.0f}% | {b or '—'} |")
PY
if [ -s "$rates" ]; then
  echo
  echo "At a fixed $rate calls/s (oha, JSON, one key):"
  echo
  python3 - "$rates" <<'PY'
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
base = next((r for r in rows if r[0] == "mock directly"), None)
print("| row | p50 ms | p99 ms | added p50 | added p99 | statuses |")
print("|---|---|---|---|---|---|")
for r in rows:
    a50 = float(r[1]) - float(base[1]) if base else 0
    a99 = float(r[2]) - float(base[2]) if base else 0
    print(f"| {r[0]} | {r[1]} | {r[2]} | {a50:+.3f} | {a99:+.3f} | {r[3]} |")
PY
fi
[ ! -s "$work/rss" ] || { echo; cat "$work/rss"; }
