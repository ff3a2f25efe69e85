#!/usr/bin/env bash
# Relay throughput and latency with wrk: the mock provider alone, then the same non-stream
# chat request through Tollgate (key lookup, hold, upstream call, background settlement), one
# user and one key — the hottest row there is. Uses release binaries:
#   cargo build --release -p tollgate-server -p tollgate-tests --bins
#   bash scripts/bench/relay.sh                     # SQLite
#   STACK_DATABASE_URL=mysql://root@127.0.0.1:3306/<empty db> bash scripts/bench/relay.sh
# Settings: BENCH_SECONDS (10), BENCH_CONNECTIONS (16), BENCH_TOKEN_LIMITS (rate limits on
# the key), STACK_REDIS_URL (Tollgate with Redis). Needs wrk (Debian package `wrk`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../target}
export TOLLGATE_BIN=${TOLLGATE_BIN:-$target/release/tollgate} MOCK_BIN=${MOCK_BIN:-$target/release/mock-provider}
seconds=${BENCH_SECONDS:-10}
conns=${BENCH_CONNECTIONS:-16}
source "$here/../lib/stack.sh"
ext() { curl -fsS -X "$1" "$BASE/api/user/external$2" -H "Authorization: Bearer $EXT_KEY" -H "Content-Type: application/json" -d "$3"; }
adm() { curl -fsS -X "$1" "$BASE/api/admin$2" -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json" ${3:+-d "$3"}; }
adm POST /channels "{\"name\":\"mock\",\"type\":\"openai_compatible\",\"base_url\":\"$MOCK_URL\",\"key\":\"k\",\"models\":[\"qwen-turbo\"]}" >/dev/null
ext POST /sync '{"external_user_id":"bench","username":"bench"}' >/dev/null
ext POST /topup '{"external_user_id":"bench","amount_usd":100000,"payment_id":"bench"}' >/dev/null
# BENCH_TOKEN_LIMITS (e.g. '"rpm_limit":1000000,"tpm_limit":1000000000') gives the key rate
# limits high enough never to refuse: the cost of the check itself.
key=$(ext POST /token "{\"external_user_id\":\"bench\",\"token_name\":\"bench\"${BENCH_TOKEN_LIMITS:+,$BENCH_TOKEN_LIMITS}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_key"])')
lua=$(mktemp)
cat >"$lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"qwen-turbo","max_tokens":50,"messages":[{"role":"user","content":"hello there"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
run() { wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$lua" "$1" | grep -E 'Requests/sec|Latency |50%|99%|Non-2xx|errors'; }
echo "== mock provider alone ($conns connections, ${seconds}s)"
run "$MOCK_URL/chat/completions"
echo "== through Tollgate ($conns connections, ${seconds}s, database: ${STACK_DATABASE_URL:-sqlite})"
run "$BASE/v1/chat/completions"
sleep 1
echo "== the user afterwards (every call settled once, no hold left)"
curl -fsS "$BASE/api/user/external/bench/stats" -H "Authorization: Bearer $EXT_KEY" |
  python3 -c 'import json,sys; u=json.load(sys.stdin)["data"]["user_info"]; print({k: u[k] for k in ("total_requests","used_quota","current_balance","balance_capacity")})'
rm -f "$lua"
