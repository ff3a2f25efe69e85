#!/usr/bin/env bash
# Replays the external-user-API part of the seed guide (sections 1–5 and the billing check) with
# curl against a running Tollgate, printing each request and response.
#   TOLLGATE_URL=http://localhost:3000 TOLLGATE_PLATFORM_KEY=secret scripts/seed-external-api.sh
# Ids get a run suffix so the script can be replayed against the same database.
set -euo pipefail
base=${TOLLGATE_URL:-http://localhost:3000}/api/user/external
key=${TOLLGATE_PLATFORM_KEY:?set TOLLGATE_PLATFORM_KEY to one of TOLLGATE_EXTERNAL_API_KEYS}
run=${RUN_ID:-$(date +%s)}
user=test_user_001_$run
flow=flow_test_user_$run

call() {
  local method=$1 path=$2 body=${3:-}
  printf '\n>>> %s %s %s\n' "$method" "$path" "$body"
  if [ -n "$body" ]; then
    curl -sS -X "$method" "$base$path" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body"
  else
    curl -sS -X "$method" "$base$path" -H "Authorization: Bearer $key"
  fi
  echo
}

echo "=== 1. sync"
call POST /sync "{\"external_user_id\":\"$user\",\"username\":\"testuser\",\"display_name\":\"测试用户\",\"email\":\"test@example.com\",\"phone\":\"13800138000\",\"login_type\":\"email\"}"
call POST /sync "{\"external_user_id\":\"$user\",\"username\":\"updated_testuser\",\"display_name\":\"更新的测试用户\",\"email\":\"updated@example.com\",\"phone\":\"13900139000\",\"login_type\":\"sms\"}"
call POST /sync '{"username":"testuser","email":"test@example.com"}'
call POST /sync "{\"external_user_id\":\"test_user_002_$run\",\"username\":\"testuser2\",\"email\":\"test2@example.com\",\"login_type\":\"invalid_type\"}"

echo "=== 2. topup"
call POST /topup "{\"external_user_id\":\"$user\",\"amount_usd\":10.0,\"payment_id\":\"stripe_payment_123456_$run\"}"
call POST /topup "{\"external_user_id\":\"nonexistent_user_$run\",\"amount_usd\":10.0,\"payment_id\":\"stripe_payment_789_$run\"}"
call POST /topup "{\"external_user_id\":\"$user\",\"amount_usd\":-5.0,\"payment_id\":\"stripe_payment_invalid_$run\"}"
call POST /topup "{\"external_user_id\":\"$user\",\"amount_usd\":5.0}"
call POST /topup "{\"external_user_id\":\"$user\",\"amount_usd\":10.0,\"payment_id\":\"stripe_payment_123456_$run\"}"

echo "=== 3. token"
call POST /token "{\"external_user_id\":\"$user\",\"token_name\":\"My API Token\",\"expires_in_days\":365}"
call POST /token "{\"external_user_id\":\"$user\",\"token_name\":\"Default Expiry Token\"}"
call POST /token "{\"external_user_id\":\"nonexistent_user_$run\",\"token_name\":\"Test Token\"}"
call POST /token "{\"external_user_id\":\"$user\",\"expires_in_days\":30}"

echo "=== 4. stats"
call GET "/$user/stats"
call GET "/nonexistent_user_$run/stats"

echo "=== 5. full flow"
call POST /sync "{\"external_user_id\":\"$flow\",\"username\":\"flowtest\",\"display_name\":\"流程测试用户\",\"email\":\"flowtest@example.com\",\"login_type\":\"email\"}"
call POST /topup "{\"external_user_id\":\"$flow\",\"amount_usd\":20.0,\"payment_id\":\"flow_test_payment_001_$run\"}"
call POST /token "{\"external_user_id\":\"$flow\",\"token_name\":\"Flow Test Token\",\"expires_in_days\":90}"
call GET "/$flow/stats"
call POST /sync "{\"external_user_id\":\"$flow\",\"username\":\"flowtest_updated\",\"display_name\":\"更新后的流程测试用户\",\"email\":\"flowtest_updated@example.com\",\"phone\":\"13800138888\",\"login_type\":\"sms\"}"
call GET "/$flow/stats"

echo "=== billing: \$25.50 -> 12,750,000 quota"
call POST /topup "{\"external_user_id\":\"$user\",\"amount_usd\":25.50,\"payment_id\":\"billing_test_001_$run\"}"
call GET "/$user/logs?page_size=5"
