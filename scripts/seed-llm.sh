#!/usr/bin/env bash
# Replays the LLM section of the seed test guide (shared/seed, "LLM API 调用测试") with curl
# against a running Tollgate whose channel is the mock provider, printing each answer and
# checking it: the status, the fields SPEC §3–4 fix, and every charge against SPEC's rule
# (ceil((prompt × input + completion × output) × 500,000 / 1M) quota) at the prices the server
# lists. The first answer that differs stops the script with a non-zero exit and says why on
# stderr. Starts Tollgate and the mock itself (see scripts/lib/stack.sh); needs curl and
# python3.
#   cargo build -p tollgate-server -p tollgate-tests --bins && bash scripts/seed-llm.sh
set -euo pipefail
source "$(dirname "$0")/lib/stack.sh"
out=$(mktemp -d)
trap 'rm -rf "$out"; kill $tollgate_pid $mock_pid 2>/dev/null; wait $tollgate_pid $mock_pid 2>/dev/null || true; rm -rf "$stack_dir"' EXIT

# The mock provider's usage of every call (tests/src/mock.rs).
PROMPT_TOKENS=14
COMPLETION_TOKENS=18

fail() { echo "seed-llm: $step: $*" >&2; exit 1; }
show() { step=$*; echo; echo "### $*"; }

# http METHOD URL KEY [BODY]: the answer's status in $status, headers and body in files; the
# status line and the body are printed as received (money fields are exact decimals).
http() {
  status=$(curl -sS -o "$out/body" -D "$out/head" -w '%{http_code}' -X "$1" "$2" \
    -H "Authorization: Bearer $3" -H 'Content-Type: application/json' ${4:+-d "$4"})
  echo "HTTP $status"
  cat "$out/body"
  echo
}
ext() { http "$1" "$BASE/api/user/external$2" "$EXT_KEY" "${3:-}"; }
adm() { http "$1" "$BASE/api/admin$2" "$ADMIN_KEY" "${3:-}"; }
chat() { http POST "$BASE/v1/chat/completions" "$1" "$2"; }

# get PATH: a field of the last body (`data.user_info.used_quota`, `choices.0.message`),
# printed as JSON (numbers exactly as sent).
get() {
  python3 - "$out/body" "$1" <<'PY'
import decimal, json, sys
value = json.load(open(sys.argv[1], encoding="utf-8"), parse_float=decimal.Decimal)
for part in sys.argv[2].split("."):
    value = value[int(part)] if isinstance(value, list) else value.get(part)
if isinstance(value, decimal.Decimal):
    print(format(value.normalize(), "f"))  # 10.0 and 10 are the same number (SPEC §3)
else:
    print(json.dumps(value, ensure_ascii=False, default=str))
PY
}
expect_status() { [ "$status" = "$1" ] || fail "HTTP $status, expected $1: $(cat "$out/body")"; }
expect() { local got; got=$(get "$1"); [ "$got" = "$2" ] || fail "$1 is $got, expected $2"; }
expect_request_id() { grep -qi '^x-request-id: ' "$out/head" || fail "no X-Request-Id"; }

# charge MODEL: SPEC §4's charge of one mock call at the model's listed price.
charge() {
  adm GET /pricing >/dev/null
  python3 - "$out/body" "$1" "$PROMPT_TOKENS" "$COMPLETION_TOKENS" <<'PY'
import decimal, json, math, sys
prices = json.load(open(sys.argv[1], encoding="utf-8"), parse_float=decimal.Decimal)["data"]
p = prices[sys.argv[2]]
usd_per_million = int(sys.argv[3]) * decimal.Decimal(p["input"]) + int(sys.argv[4]) * decimal.Decimal(p["output"])
print(max(1, math.ceil(usd_per_million * 500_000 / 1_000_000)))
PY
}

# settled N: the user's stats once N calls are settled (SPEC §3.4: within 1 s), else fail.
settled() {
  for _ in $(seq 1 20); do
    ext GET /test_user_001/stats >/dev/null
    [ "$(get data.user_info.total_requests)" -ge "$1" ] && return
    sleep 0.1
  done
  fail "total_requests did not reach $1 within 2 s: $(cat "$out/body")"
}

show "setup: the mock provider as a channel for the seed's models (default prices)"
adm POST /channels "{\"name\":\"mock\",\"type\":\"openai_compatible\",\"base_url\":\"$MOCK_URL\",\"key\":\"sk-mock-upstream\",\"models\":[\"qwen-turbo\",\"qwen-plus\",\"deepseek-chat\"]}"
expect_status 200
ext POST /sync '{"external_user_id":"test_user_001","username":"testuser","email":"test@example.com","login_type":"email"}' >/dev/null
expect_status 200
expect message '"用户创建成功"'
ext POST /topup '{"external_user_id":"test_user_001","amount_usd":10.0,"payment_id":"seed_llm_payment_1"}' >/dev/null
expect_status 200
expect data.quota_added 5000000
ext POST /token '{"external_user_id":"test_user_001","token_name":"My API Token","expires_in_days":365}' >/dev/null
expect_status 200
KEY=$(get data.access_key | tr -d '"')
[[ $KEY =~ ^sk-[A-Za-z0-9]{48}$ ]] || fail "access_key is not sk- and 48 characters: $KEY"
echo "user test_user_001 topped up \$10, key ${KEY:0:7}...${KEY: -4}"
turbo=$(charge qwen-turbo) plus=$(charge qwen-plus) deepseek=$(charge deepseek-chat)
echo "one mock call ($PROMPT_TOKENS + $COMPLETION_TOKENS tokens) costs: qwen-turbo $turbo, qwen-plus $plus, deepseek-chat $deepseek quota"

show "1. balance_capacity before any call"
ext GET /test_user_001/stats >/dev/null
expect_status 200
expect data.user_info.balance_capacity 10
get data.user_info.balance_capacity

completion() { # completion MODEL: a 200 chat completion answer with the mock's usage.
  expect_status 200
  expect_request_id
  expect object '"chat.completion"'
  expect choices.0.message.role '"assistant"'
  [ "$(get choices.0.message.content)" != '""' ] || fail "empty answer"
  expect usage.prompt_tokens "$PROMPT_TOKENS"
  expect usage.completion_tokens "$COMPLETION_TOKENS"
}
show "2.1 qwen-turbo"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"user","content":"你好！"}]}'
completion
show "2.2 system role, multi-turn, max_tokens, temperature"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"system","content":"你是一个有帮助的AI助手，专门回答技术问题。"},{"role":"user","content":"什么是RESTful API？"}],"max_tokens":200,"temperature":0.7}'
completion
show "2.3 deepseek-chat"
chat "$KEY" '{"model":"deepseek-chat","messages":[{"role":"user","content":"解释一下机器学习的概念"}]}'
completion
show "2.4 qwen-plus"
chat "$KEY" '{"model":"qwen-plus","messages":[{"role":"user","content":"请写一个Python函数来计算斐波那契数列"}]}'
completion
show "2.x streaming (qwen-turbo, stream: true)"
chat "$KEY" '{"model":"qwen-turbo","stream":true,"messages":[{"role":"user","content":"你好！"}]}'
expect_status 200
grep -qi '^content-type: text/event-stream' "$out/head" || fail "not an SSE stream"
[ "$(grep '^data: ' "$out/body" | tail -n1)" = "data: [DONE]" ] || fail "the stream does not end with [DONE]"
! grep -q '"usage"' "$out/body" || fail "usage shown to a client that did not ask for it"

error() { # error STATUS CODE [MESSAGE]: an OpenAI-shaped error.
  expect_status "$1"
  expect_request_id
  expect error.code "\"$2\""
  [ -z "${3:-}" ] || expect error.message "\"$3\""
}
show "3.1 invalid token"
chat sk-invalid-token '{"model":"qwen-turbo","messages":[{"role":"user","content":"test"}]}'
error 401 invalid_api_key 无效的令牌
show "3.2 unsupported model"
chat "$KEY" '{"model":"nonexistent-model","messages":[{"role":"user","content":"test"}]}'
error 404 model_not_found
show "3.3 insufficient balance (a synced user that was never topped up)"
ext POST /sync '{"external_user_id":"low_balance_user","username":"low"}' >/dev/null
ext POST /token '{"external_user_id":"low_balance_user","token_name":"low"}' >/dev/null
LOW=$(get data.access_key | tr -d '"')
chat "$LOW" '{"model":"qwen-turbo","messages":[{"role":"user","content":"test"}]}'
error 403 insufficient_user_quota

# Five calls so far: 2.1, 2.2 and the stream on qwen-turbo, 2.3 on deepseek-chat, 2.4 on
# qwen-plus.
spent=$((3 * turbo + deepseek + plus))
show "4.1 stats after the five calls (settled within 1 s)"
settled 5
get data.user_info
expect data.user_info.total_requests 5
expect data.user_info.used_quota "$spent"
expect data.user_info.current_quota $((5000000 - spent))
show "4.2 one more call"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"user","content":"这是一个测试消息"}]}' >/dev/null
completion
show "4.3 stats after the call (used_quota up, total_requests +1, current_quota down)"
settled 6
get data.user_info
expect data.user_info.total_requests 6
expect data.user_info.used_quota $((spent + turbo))
expect data.user_info.current_quota $((5000000 - spent - turbo))
expect data.model_usage.qwen-turbo.requests 4
expect data.model_usage.qwen-turbo.prompt_tokens $((4 * PROMPT_TOKENS))

show "recent logs"
ext GET "/test_user_001/logs?type=consume&page_size=3"
expect_status 200
expect data.pagination.total 6
expect data.logs.0.model '"qwen-turbo"'
expect data.logs.0.quota "$turbo"
expect data.logs.0.prompt_tokens "$PROMPT_TOKENS"
expect data.logs.0.completion_tokens "$COMPLETION_TOKENS"
ext GET /low_balance_user/stats >/dev/null
expect data.user_info.total_requests 0
expect data.user_info.used_quota 0
echo
echo "seed-llm: every answer as expected"
