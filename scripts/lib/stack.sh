# Sourced by scripts that need a running Tollgate and the mock provider: starts both on free
# loopback ports with a fresh SQLite database (or $STACK_DATABASE_URL, which should name an
# empty database; $STACK_REDIS_URL adds Redis), exports BASE, ADMIN_KEY, EXT_KEY and MOCK_URL,
# and stops both on exit. Binaries: $TOLLGATE_BIN (default target/debug/tollgate) and
# $MOCK_BIN (default target/debug/mock-provider); build them with
# `cargo build -p tollgate-server -p tollgate-tests --bins`.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# Read before the server's environment is cleaned of every TOLLGATE_* variable.
tg_bin=${TOLLGATE_BIN:-$root/target/debug/tollgate}
mock_bin=${MOCK_BIN:-$root/target/debug/mock-provider}
stack_dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export BASE=http://127.0.0.1:$port
export ADMIN_KEY=admin-$RANDOM$RANDOM
export EXT_KEY=platform-$RANDOM$RANDOM
"$mock_bin" >"$stack_dir/mock.out" 2>&1 &
mock_pid=$!
(
  for v in $(env | sed -n 's/^\(TOLLGATE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
  export TOLLGATE_LISTEN=127.0.0.1:$port TOLLGATE_DATABASE_URL="${STACK_DATABASE_URL:-sqlite://$stack_dir/tollgate.db?mode=rwc}"
  export TOLLGATE_ADMIN_KEY=$ADMIN_KEY TOLLGATE_EXTERNAL_API_KEYS=$EXT_KEY TOLLGATE_LOG_DIR=$stack_dir/logs
  [ -z "${STACK_REDIS_URL:-}" ] || export TOLLGATE_REDIS_URL=$STACK_REDIS_URL
  cd "$stack_dir" && exec "$tg_bin"
) >"$stack_dir/tollgate.out" 2>&1 &
tollgate_pid=$!
trap 'kill $tollgate_pid $mock_pid 2>/dev/null; wait $tollgate_pid $mock_pid 2>/dev/null || true; rm -rf "$stack_dir"' EXIT
for _ in $(seq 1 100); do
  [ -s "$stack_dir/mock.out" ] && curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$BASE/healthz" >/dev/null || { echo "tollgate did not start:"; cat "$stack_dir/tollgate.out"; exit 1; }
export MOCK_URL=$(head -n1 "$stack_dir/mock.out")
