#!/usr/bin/env bash
# Validates the OpenAPI document the built binary serves at GET /openapi.json with
# openapi-spec-validator (PyPI, pinned, installed once into a venv under
# ~/.cache/tollgate-openapi), and checks that it is OpenAPI 3.1 and describes the external,
# admin and relay APIs. Build the binaries first:
# cargo build -p tollgate-server -p tollgate-tests --bins
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${TOLLGATE_OPENAPI_CACHE:-$HOME/.cache/tollgate-openapi}
VALIDATOR=openapi-spec-validator==0.9.0
mkdir -p "$cache"
if [ ! -x "$cache/venv/bin/python" ] || ! "$cache/venv/bin/pip" show openapi-spec-validator 2>/dev/null | grep -q "^Version: ${VALIDATOR#*==}$"; then
  python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install -q "$VALIDATOR"
fi
source "$here/lib/stack.sh"
doc="$stack_dir/openapi.json"
type=$(curl -fsS -o "$doc" -w '%{content_type}' "$BASE/openapi.json")
case "$type" in application/json*) ;; *) echo "GET /openapi.json: Content-Type $type" >&2; exit 1 ;; esac
"$cache/venv/bin/openapi-spec-validator" --schema 3.1 "$doc"
"$cache/venv/bin/python" - "$doc" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
assert doc["openapi"] == "3.1.0", doc["openapi"]
ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item if m in
       ("get", "put", "post", "delete", "patch", "head", "options", "trace")}
for want in [("POST", "/api/user/external/sync"), ("GET", "/api/admin/users"),
             ("POST", "/v1/chat/completions"), ("POST", "/v1/messages"), ("GET", "/healthz")]:
    assert want in ops, f"{want} missing"
schemas = doc["components"]["schemas"]
for name in ("ErrorEnvelope", "OpenAiErrorBody", "AnthropicErrorBody"):
    assert name in schemas, f"{name} missing"
print(f"openapi.json: OpenAPI {doc['openapi']}, {len(doc['paths'])} paths, {len(ops)} operations, "
      f"{len(schemas)} schemas, {len(doc['components']['securitySchemes'])} security schemes")
PY
