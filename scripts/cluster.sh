#!/usr/bin/env bash
# A Tollgate cluster on this machine: N instances (default 2) on one MariaDB/MySQL database and
# one Redis, behind a round-robin nginx (Debian's nginx-light), for trying the multi-instance
# model and for CI.
#
#   bash scripts/cluster.sh [N]          # start, print the addresses, run until Ctrl-C
#   bash scripts/cluster.sh --check [N]  # start, check the cluster end to end, stop
#
# Settings: CLUSTER_DATABASE_URL (default a fresh database `tollgate_cluster_<pid>` on
# mysql://root@127.0.0.1:3306), CLUSTER_REDIS_URL (default redis://127.0.0.1:6379),
# CLUSTER_PORT (nginx, default 8080; 0 picks a free port), TOLLGATE_BIN (default target/debug/tollgate; build it
# with `cargo build --bin tollgate`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
check=false
if [ "${1:-}" = "--check" ]; then check=true; shift; fi
n=${1:-2}
tg_bin=${TOLLGATE_BIN:-$root/target/debug/tollgate}
redis_url=${CLUSTER_REDIS_URL:-redis://127.0.0.1:6379}
lb_port=${CLUSTER_PORT:-8080}
dir=$(mktemp -d)
admin_key=admin-$RANDOM$RANDOM
ext_key=platform-$RANDOM$RANDOM
pids=()
made_db=""

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$made_db" ]; then
    mysql -uroot --protocol=tcp -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$made_db\`" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx-light"; exit 1; }
[ -x "$tg_bin" ] || { echo "no binary at $tg_bin: cargo build --bin tollgate"; exit 1; }

if [ -n "${CLUSTER_DATABASE_URL:-}" ]; then
  db_url=$CLUSTER_DATABASE_URL
else
  made_db=tollgate_cluster_$$
  mysql -uroot --protocol=tcp -h127.0.0.1 -e "CREATE DATABASE \`$made_db\`"
  db_url=mysql://root@127.0.0.1:3306/$made_db
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# CLUSTER_PORT=0: any free port (CI, where 8080 may be taken).
if [ "$lb_port" = 0 ]; then lb_port=$(free_port); fi
ports=()
for i in $(seq 1 "$n"); do
  port=$(free_port)
  ports+=("$port")
  (
    for v in $(env | sed -n 's/^\(TOLLGATE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
    export TOLLGATE_LISTEN=127.0.0.1:$port TOLLGATE_DATABASE_URL=$db_url TOLLGATE_REDIS_URL=$redis_url
    export TOLLGATE_ADMIN_KEY=$admin_key TOLLGATE_EXTERNAL_API_KEYS=$ext_key
    export TOLLGATE_INSTANCE_NAME=node-$i TOLLGATE_LOG_DIR=$dir/logs-$i
    exec "$tg_bin"
  ) >"$dir/node-$i.out" 2>&1 &
  pids+=($!)
  # One at a time: the first runs the migrations.
  for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { echo "node-$i did not start:"; cat "$dir/node-$i.out"; exit 1; }
done

{
  echo "worker_processes 1; daemon off; pid $dir/nginx.pid; error_log stderr warn;"
  echo "events { worker_connections 1024; }"
  echo "http {"
  echo "  access_log off;"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $dir/$t;"; done
  echo "  upstream tollgate {"
  for p in "${ports[@]}"; do echo "    server 127.0.0.1:$p;"; done
  echo "    keepalive 64;"
  echo "  }"
  echo "  server {"
  echo "    listen 127.0.0.1:$lb_port;"
  echo "    client_max_body_size 9m;"
  echo "    location / {"
  echo "      proxy_pass http://tollgate;"
  echo "      proxy_http_version 1.1;"
  echo "      proxy_set_header Connection \"\";"
  echo "      proxy_buffering off;"
  echo "      proxy_read_timeout 600s;"
  echo "    }"
  echo "  }"
  echo "}"
} >"$dir/nginx.conf"
nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/nginx.out" 2>&1 &
pids+=($!)
lb=http://127.0.0.1:$lb_port
for _ in $(seq 1 50); do curl -fsS "$lb/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "$lb/healthz" >/dev/null || { echo "nginx did not start:"; cat "$dir/nginx.out"; exit 1; }

echo "cluster: $n instances on $db_url and $redis_url"
for i in $(seq 1 "$n"); do echo "  node-$i  http://127.0.0.1:${ports[$((i-1))]}"; done
echo "  nginx   $lb   (admin key $admin_key, platform key $ext_key)"

if ! $check; then
  echo "Ctrl-C stops everything."
  wait "${pids[0]}"
  exit 0
fi

fail() { echo "FAIL: $*"; exit 1; }
A="Authorization: Bearer $admin_key"; P="Authorization: Bearer $ext_key"; J="Content-Type: application/json"
node() { echo "http://127.0.0.1:${ports[$(($1-1))]}"; }

curl -fsS "$lb/readyz" | grep -q '"redis":"up"' || fail "readyz through nginx does not show Redis up"
# A channel created through node 1 is served by every node within a second.
curl -fsS "$(node 1)/api/admin/channels" -H "$A" -H "$J" -d '{"name":"echo","type":"echo","models":["qwen-turbo"]}' >/dev/null
start=$(date +%s%N)
for i in $(seq 1 "$n"); do
  until curl -fsS "$(node "$i")/api/user/external/models" -H "$P" | grep -q qwen-turbo; do
    [ $(( ($(date +%s%N) - start) / 1000000 )) -lt 1000 ] || fail "node-$i did not see the channel within 1 s"
    sleep 0.01
  done
done
echo "PASS a channel created on node-1 is served by all $n nodes within 1 s"
curl -fsS "$lb/api/user/external/sync" -H "$P" -H "$J" -d '{"external_user_id":"c1","username":"c"}' >/dev/null
curl -fsS "$lb/api/user/external/topup" -H "$P" -H "$J" -d '{"external_user_id":"c1","amount_usd":1,"payment_id":"c1-p1"}' >/dev/null
key=$(curl -fsS "$lb/api/user/external/token" -H "$P" -H "$J" -d '{"external_user_id":"c1","token_name":"k"}' | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["access_key"])')
for _ in $(seq 1 20); do
  curl -fsS "$lb/v1/chat/completions" -H "Authorization: Bearer $key" -H "$J" \
    -d '{"model":"qwen-turbo","messages":[{"role":"user","content":"hello"}]}' >/dev/null || fail "a call through nginx failed"
done
sleep 1
total=$(curl -fsS "$lb/api/user/external/c1/stats" -H "$P" | python3 -c 'import json,sys;print(json.load(sys.stdin)["data"]["user_info"]["total_requests"])')
[ "$total" = 20 ] || fail "20 calls through nginx, $total settled"
echo "PASS 20 calls through nginx across $n nodes, each settled once"
for i in $(seq 1 "$n"); do
  curl -fsS "$(node "$i")/metrics" >"$dir/metrics-$i.txt"
  if command -v promtool >/dev/null; then
    promtool check metrics <"$dir/metrics-$i.txt" || fail "promtool rejects node-$i's /metrics"
  fi
  grep -q '^tollgate_upstream_requests_total' "$dir/metrics-$i.txt" || fail "node-$i relayed nothing: round robin?"
done
echo "PASS every node relayed calls and its /metrics passes promtool check metrics"
echo "cluster check: 3 passed, 0 failed"
