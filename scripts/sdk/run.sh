#!/usr/bin/env bash
# Runs the official OpenAI SDKs (Python and Node) and the official Anthropic Python SDK as
# clients of Tollgate against the mock provider. The SDKs are installed once under
# ~/.cache/tollgate-sdk (pinned versions); build the binaries first:
# cargo build -p tollgate-server -p tollgate-tests --bins
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TOLLGATE_SDK_CACHE:-$HOME/.cache/tollgate-sdk}
PY_SDK=openai==3.57.0
ANTHROPIC_SDK=anthropic==2.16.0
NODE_SDK=openai@4.104.0
mkdir -p "$cache"
if [ ! -x "$cache/venv/bin/python" ] || ! "$cache/venv/bin/pip" show openai 2>/dev/null | grep -q "^Version: ${PY_SDK#openai==}$"; then
  python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install -q "$PY_SDK"
fi
if ! "$cache/venv/bin/pip" show anthropic 2>/dev/null | grep -q "^Version: ${ANTHROPIC_SDK#anthropic==}$"; then
  "$cache/venv/bin/pip" install -q "$ANTHROPIC_SDK"
fi
if [ ! -f "$cache/node/node_modules/openai/package.json" ] || ! grep -q "\"version\": \"${NODE_SDK#openai@}\"" "$cache/node/node_modules/openai/package.json"; then
  mkdir -p "$cache/node" && (cd "$cache/node" && npm install --silent --no-save "$NODE_SDK" >/dev/null)
fi
source "$here/../lib/stack.sh"
ext() { curl -fsS -X "$1" "$BASE/api/user/external$2" -H "Authorization: Bearer $EXT_KEY" -H "Content-Type: application/json" -d "$3"; }
adm() { curl -fsS -X "$1" "$BASE/api/admin$2" -H "Authorization: Bearer $ADMIN_KEY" -H "Content-Type: application/json" ${3:+-d "$3"}; }
for m in qwen-turbo m-500 m-400 m-off m-slow; do adm PUT "/pricing/$m" '{"input":2,"output":6}' >/dev/null; done
adm POST /channels "{\"name\":\"mock\",\"type\":\"openai_compatible\",\"base_url\":\"$MOCK_URL\",\"key\":\"sk-mock\",\"models\":[\"qwen-turbo\",\"m-500\",\"m-400\",\"m-slow\"],\"model_mapping\":{\"m-500\":\"fail-500\",\"m-400\":\"fail-400\",\"m-slow\":\"slow\"}}" >/dev/null
off=$(adm POST /channels "{\"name\":\"off\",\"type\":\"openai_compatible\",\"base_url\":\"$MOCK_URL\",\"models\":[\"m-off\"]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
adm POST "/channels/$off/disable" >/dev/null
# Anthropic's API natively (claude-*), embeddings and legacy completions.
for m in claude-haiku-4-5 claude-tools claude-500 gpt-3.5-turbo-instruct; do adm PUT "/pricing/$m" '{"input":2,"output":6}' >/dev/null; done
adm PUT /pricing/text-embedding-3-small '{"input":2,"output":0}' >/dev/null
adm POST /channels "{\"name\":\"claude\",\"type\":\"anthropic\",\"base_url\":\"$MOCK_URL\",\"key\":\"sk-mock\",\"models\":[\"claude-haiku-4-5\",\"claude-tools\",\"claude-500\"],\"model_mapping\":{\"claude-tools\":\"tools\",\"claude-500\":\"fail-500\"}}" >/dev/null
adm POST /channels "{\"name\":\"openai\",\"type\":\"openai\",\"base_url\":\"$MOCK_URL\",\"key\":\"sk-mock\",\"models\":[\"text-embedding-3-small\",\"gpt-3.5-turbo-instruct\"]}" >/dev/null
key_for() {
  ext POST /sync "{\"external_user_id\":\"$1\",\"username\":\"$1\"}" >/dev/null
  [ "$2" = 0 ] || ext POST /topup "{\"external_user_id\":\"$1\",\"amount_usd\":$2,\"payment_id\":\"sdk-$1\"}" >/dev/null
  ext POST /token "{\"external_user_id\":\"$1\",\"token_name\":\"sdk\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_key"])'
}
export KEY=$(key_for sdk-user 10) POOR_KEY=$(key_for sdk-poor 0)
# A key allowed one call at a time, for the SDK's own retries on 429.
ext POST /sync '{"external_user_id":"sdk-limited","username":"sdk-limited"}' >/dev/null
ext POST /topup '{"external_user_id":"sdk-limited","amount_usd":1,"payment_id":"sdk-limited"}' >/dev/null
export LIMITED_KEY=$(ext POST /token '{"external_user_id":"sdk-limited","token_name":"sdk","max_concurrency":1}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["access_key"])')
status=0
"$cache/venv/bin/python" "$here/check.py" || status=1
"$cache/venv/bin/python" "$here/check_anthropic.py" || status=1
NODE_PATH="$cache/node/node_modules" node --input-type=module -e "$(sed "s#from 'openai'#from '$cache/node/node_modules/openai/index.mjs'#" "$here/check.mjs")" || status=1
exit $status
