#!/usr/bin/env bash
# Replays the LLM section of the seed test guide (shared/seed, "LLM API 调用测试") with curl
# against a running Tollgate whose channel is the mock provider, printing each command's
# answer. Starts both itself (see scripts/lib/stack.sh); needs curl and python3.
#   cargo build -p tollgate-server -p tollgate-tests --bins && bash scripts/seed-llm.sh
set -euo pipefail
source "$(dirname "$0")/lib/stack.sh"
pretty() { python3 -c 'import json,sys; d=sys.stdin.read(); print(json.dumps(json.loads(d), ensure_ascii=False, indent=1) if d.strip().startswith("{") or d.strip().startswith("[") else d)'; }
ext() { curl -sS -X "$1" "$BASE/api/user/external$2" -H "Authorization: Bearer $EXT_KEY" -H "Content-Type: application/json" ${3:+-d "$3"}; }
adm() { curl -sS -X "$1" "$BASE/api/admin$2" -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json" ${3:+-d "$3"}; }
chat() { curl -sS -i "$BASE/v1/chat/completions" -H "Content-Type: application/json" -H "Authorization: Bearer $1" -d "$2" | tr -d '\r' | sed -n '/^HTTP\//p;/^x-request-id/Ip;/^$/,$p'; }
show() { echo; echo "### $*"; }
info() { ext GET "/$1/stats" | python3 -c 'import json,sys; u=json.load(sys.stdin)["data"]["user_info"]; print({k: u[k] for k in ("current_quota","used_quota","total_requests","balance_capacity")})'; }

show "setup: the mock provider as a channel for the seed's models (default prices)"
adm POST /channels "{\"name\":\"mock\",\"type\":\"openai_compatible\",\"base_url\":\"$MOCK_URL\",\"key\":\"sk-mock-upstream\",\"models\":[\"qwen-turbo\",\"qwen-plus\",\"deepseek-chat\"]}"; echo
ext POST /sync '{"external_user_id":"test_user_001","username":"testuser","email":"test@example.com","login_type":"email"}' >/dev/null
ext POST /topup '{"external_user_id":"test_user_001","amount_usd":10.0,"payment_id":"seed_llm_payment_1"}' >/dev/null
KEY=$(ext POST /token '{"external_user_id":"test_user_001","token_name":"My API Token","expires_in_days":365}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_key"])')
echo "user test_user_001 topped up \$10, key ${KEY:0:7}...${KEY: -4}"

show "1. balance_capacity before any call"
ext GET /test_user_001/stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["user_info"]["balance_capacity"])'

show "2.1 qwen-turbo"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"user","content":"你好！"}]}' | pretty
show "2.2 system role, multi-turn, max_tokens, temperature"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"system","content":"你是一个有帮助的AI助手，专门回答技术问题。"},{"role":"user","content":"什么是RESTful API？"}],"max_tokens":200,"temperature":0.7}' | pretty
show "2.3 deepseek-chat"
chat "$KEY" '{"model":"deepseek-chat","messages":[{"role":"user","content":"解释一下机器学习的概念"}]}' | pretty
show "2.4 qwen-plus"
chat "$KEY" '{"model":"qwen-plus","messages":[{"role":"user","content":"请写一个Python函数来计算斐波那契数列"}]}' | pretty
show "2.x streaming (qwen-turbo, stream: true)"
curl -sS -N "$BASE/v1/chat/completions" -H "Content-Type: application/json" -H "Authorization: Bearer $KEY" \
  -d '{"model":"qwen-turbo","stream":true,"messages":[{"role":"user","content":"你好！"}]}'

show "3.1 invalid token"
chat sk-invalid-token '{"model":"qwen-turbo","messages":[{"role":"user","content":"test"}]}' | pretty
show "3.2 unsupported model"
chat "$KEY" '{"model":"nonexistent-model","messages":[{"role":"user","content":"test"}]}' | pretty
show "3.3 insufficient balance (a synced user that was never topped up)"
ext POST /sync '{"external_user_id":"low_balance_user","username":"low"}' >/dev/null
LOW=$(ext POST /token '{"external_user_id":"low_balance_user","token_name":"low"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_key"])')
chat "$LOW" '{"model":"qwen-turbo","messages":[{"role":"user","content":"test"}]}' | pretty

show "4.1 stats before a call"
sleep 0.3; info test_user_001
show "4.2 one more call"
chat "$KEY" '{"model":"qwen-turbo","messages":[{"role":"user","content":"这是一个测试消息"}]}' | head -n 2
show "4.3 stats after the call (used_quota up, total_requests +1, current_quota down)"
sleep 0.3; info test_user_001
show "recent logs (raw JSON: money fields are exact decimals)"
ext GET "/test_user_001/logs?type=consume&page_size=3"; echo
