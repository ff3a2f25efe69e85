#!/usr/bin/env bash
# Instructions a settled call costs, counted by valgrind's callgrind — the same for the same
# statements whatever the machine's neighbours do, where CPU time a call (scripts/bench/settle.sh)
# moves by ±20% on a shared machine. `settle-bench` writes BENCH_SHORT and then BENCH_LONG
# batches (40 and 80, each with a tenth more as its warm-up) to a fresh database; the difference
# of the two runs' instructions over the difference of their calls leaves the set-up (users,
# leases, migrations) out.
# - sqlite: settle-bench itself runs under callgrind (SeaORM, sqlx and SQLite in one process).
# - mysql: a throw-away `mariadbd` (its own data folder, port and socket; the machine's server
#   is not touched) runs under callgrind, its counters zeroed before each run and dumped after:
#   the server's instructions a call. Its timer-driven threads add a little that is not the
#   calls' (a second's idle work is ~1% of a run): compare builds, not single figures.
#
#   cargo build --release -p tollgate-tests --bins
#   bash scripts/bench/settle-instructions.sh   # BENCH_DATABASES ("sqlite mysql"), BENCH_USERS (1), BENCH_BATCH (256), SETTLE_BENCH_BIN
#
# Needs valgrind; for mysql the MariaDB server (Debian `mariadb-server`: `mariadbd`,
# `mariadb-install-db`) and the mysql client. Keeps the callgrind files in BENCH_OUT
# (/tmp/tollgate-settle-instructions) for `callgrind_annotate --inclusive=yes`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${SETTLE_BENCH_BIN:-$target/release/settle-bench}
out=${BENCH_OUT:-/tmp/tollgate-settle-instructions}
databases=${BENCH_DATABASES:-"sqlite mysql"}
short=${BENCH_SHORT:-40}
long=${BENCH_LONG:-80}
users=${BENCH_USERS:-1}
batch=${BENCH_BATCH:-256}
for tool in valgrind callgrind_control python3; do
  command -v "$tool" >/dev/null || { echo "settle-instructions: $tool is missing" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "settle-instructions: build first: cargo build --release -p tollgate-tests --bins" >&2; exit 1; }
mkdir -p "$out"
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Prints "instructions calls" of one run of $1 batches; the callgrind file is $out/$2-$1.out.
run_sqlite() {
  rm -rf "$work/sqlite" && mkdir -p "$work/sqlite"
  BENCH_USERS=$users BENCH_BATCH=$batch BENCH_BATCHES=$1 valgrind --tool=callgrind \
    --callgrind-out-file="$out/$2-$1.out" "$bin" "sqlite://$work/sqlite/t.db?mode=rwc" \
    >"$out/$2-$1.txt" 2>&1
  echo "$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$out/$2-$1.out") $(( ($1 + $1 / 10) * batch ))"
}

start_mariadb() {
  for tool in mariadbd mariadb-install-db mysql; do
    command -v "$tool" >/dev/null || { echo "settle-instructions: $tool is missing" >&2; exit 1; }
  done
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mariadb-install-db --no-defaults --datadir="$work/data" --user="$(id -un)" >"$work/install.log" 2>&1
  valgrind --tool=callgrind --callgrind-out-file="$out/mariadbd.out" \
    mariadbd --no-defaults --datadir="$work/data" --socket="$work/sock" --port="$port" \
    --bind-address=127.0.0.1 --skip-grant-tables --user="$(id -un)" \
    --innodb-use-native-aio=0 --innodb-buffer-pool-size-max=128M >"$work/server.log" 2>&1 &
  # (io_uring, InnoDB's default, never completes under valgrind, which cannot map the
  # buffer pool's default 8 TB of address space either.)
  server=$!
  for _ in $(seq 120); do sql "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
  sql "SELECT 1" >/dev/null || { echo "settle-instructions: mariadbd did not start:" >&2; tail -5 "$work/server.log" >&2; exit 1; }
}
sql() { mysql -h127.0.0.1 -P"$port" -uroot -e "$1"; }

run_mysql() {
  sql "DROP DATABASE IF EXISTS bench; CREATE DATABASE bench"
  callgrind_control -z "$server" >/dev/null
  BENCH_USERS=$users BENCH_BATCH=$batch BENCH_BATCHES=$1 \
    "$bin" "mysql://root@127.0.0.1:$port/bench" >"$out/$2-$1.txt"
  rm -f "$out"/mariadbd.out.*
  callgrind_control -d "$server" >/dev/null
  mv "$(ls -t "$out"/mariadbd.out.* | head -1)" "$out/$2-$1.out"
  echo "$(sed -n 's/^summary: \([0-9]*\).*/\1/p' "$out/$2-$1.out") $(( ($1 + $1 / 10) * batch ))"
}

echo "settle-instructions at $(git -C "$root" rev-parse --short HEAD), $users user(s), batches of $batch"
for db in $databases; do
  case $db in
    sqlite) what="settle-bench's" ;;
    mysql) what="mariadbd's"; [ -n "$server" ] || start_mariadb ;;
    *) echo "settle-instructions: unknown database $db" >&2; exit 1 ;;
  esac
  read -r i1 c1 < <("run_$db" "$short" "$db")
  read -r i2 c2 < <("run_$db" "$long" "$db")
  echo "$db: $what instructions $i1 / $i2 for $c1 / $c2 calls: $(( (i2 - i1) / (c2 - c1) )) a settled call"
done
