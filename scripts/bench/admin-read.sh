#!/usr/bin/env bash
# The admin read API on a large log (issue 12): seeds a database with a month of traffic
# (1,000,000 log rows, 1,000 users with their keys, six channels), starts the release
# `tollgate` on it (which applies any migration the database lacks), prints the plan of every
# statement the read endpoints issue (fails if one scans `logs`), then measures p50/p99 of each
# endpoint over HTTP, one request at a time. Uses release binaries:
#   cargo build --release -p tollgate-server --bin tollgate
#   cargo build --release -p tollgate-tests --bin admin-read-bench
#   bash scripts/bench/admin-read.sh                                   # SQLite
#   mysql -uroot -e 'CREATE DATABASE tg_readbench'
#   BENCH_DATABASE_URL=mysql://root@127.0.0.1:3306/tg_readbench bash scripts/bench/admin-read.sh
# BENCH_DATABASE_URL names an empty database (default: a new SQLite file). With BENCH_DIR set
# to the folder of an earlier run (it keeps `manifest.json`, and the SQLite file when
# BENCH_DATABASE_URL is unset), the seed is skipped and the same rows are measured again.
# Settings: BENCH_ROWS (1000000), BENCH_USERS (1000), BENCH_DAYS (30); BENCH_REQUESTS (200 per
# case and round), BENCH_WARMUP (20), BENCH_ROUNDS (3); BENCH_ONLY=usage,model measures only the
# cases whose names contain one of those parts. TOLLGATE_BIN and BENCH_BIN name other binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../target}
tg_bin=${TOLLGATE_BIN:-$target/release/tollgate}
bench_bin=${BENCH_BIN:-$target/release/admin-read-bench}
dir=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$dir"
db=${BENCH_DATABASE_URL:-sqlite://$dir/tollgate.db?mode=rwc}
manifest=$dir/manifest.json
echo "== $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), database ${db%%\?*}, folder $dir"

if [ -s "$manifest" ]; then
  echo "== seeded before: $(tr -d '\n ' <"$manifest")"
else
  echo "== seed"
  "$bench_bin" seed "$db" "$manifest"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
base=http://127.0.0.1:$port
admin_key=admin-$RANDOM$RANDOM
(
  # Only the settings below: none of the caller's TOLLGATE_* variables.
  for v in $(env | sed -n 's/^\(TOLLGATE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
  export TOLLGATE_LISTEN=127.0.0.1:$port TOLLGATE_DATABASE_URL=$db TOLLGATE_ADMIN_KEY=$admin_key
  export TOLLGATE_EXTERNAL_API_KEYS=bench-platform-a,bench-platform-b TOLLGATE_LOG_DIR=$dir/logs
  exec "$tg_bin"
) >"$dir/tollgate.out" 2>&1 &
tollgate_pid=$!
trap 'kill $tollgate_pid 2>/dev/null; wait $tollgate_pid 2>/dev/null || true' EXIT
# Start-up runs the migrations a database seeded by an older build still lacks: allow minutes.
started=$(date +%s.%N)
for _ in $(seq 1 3000); do
  curl -fsS "$base/readyz" >/dev/null 2>&1 && break
  kill -0 $tollgate_pid 2>/dev/null || break
  sleep 0.1
done
curl -fsS "$base/readyz" >/dev/null || { echo "tollgate did not start:"; cat "$dir/tollgate.out"; exit 1; }
echo "== tollgate ready after $(python3 -c "print(round($(date +%s.%N) - $started, 1))") s (migrations included)"

echo "== plans of the statements each endpoint issues"
"$bench_bin" plans "$db" "$manifest"

echo "== latency, one request at a time"
"$bench_bin" measure "$base" "$admin_key" "$manifest"
