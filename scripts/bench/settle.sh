#!/usr/bin/env bash
# The settlement batch on its own (tests/src/bin/settle-bench.rs): what settling one call
# costs the database path — this process and, on MariaDB, its server — without HTTP, the relay
# or a load generator, so that a change to the batch's statements can be compared in seconds
# on a noisy machine. A fresh database per backend; the bench is pinned to one core.
#
#   cargo build --release -p tollgate-tests --bins
#   bash scripts/bench/settle.sh
#
# Settings: BENCH_DATABASES ("sqlite mysql"), BENCH_CPU (0), BENCH_ROUNDS (1), and the
# bench's own BENCH_USERS (1000), BENCH_BATCH (256), BENCH_BATCHES (300), BENCH_SQL. MariaDB
# rows use root on 127.0.0.1:3306 (the mysql client creates and drops the database).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=${SETTLE_BENCH_BIN:-$target/release/settle-bench}
databases=${BENCH_DATABASES:-"sqlite mysql"}
cpu=${BENCH_CPU:-0}
rounds=${BENCH_ROUNDS:-1}
[ -x "$bin" ] || { echo "settle: build first: cargo build --release -p tollgate-tests --bins" >&2; exit 1; }
echo "settle-bench at $(git -C "$root" rev-parse --short HEAD), $(date -u +%Y-%m-%dT%H:%MZ), cpu $cpu"
for _ in $(seq "$rounds"); do
  for db in $databases; do
    case $db in
      sqlite)
        work=$(mktemp -d)
        taskset -c "$cpu" "$bin" "sqlite://$work/settle.db?mode=rwc"
        rm -rf "$work"
        ;;
      mysql)
        name=tollgate_settle_bench
        mysql -h127.0.0.1 -uroot -e "DROP DATABASE IF EXISTS $name; CREATE DATABASE $name"
        taskset -c "$cpu" "$bin" "mysql://root@127.0.0.1:3306/$name"
        mysql -h127.0.0.1 -uroot -e "DROP DATABASE $name"
        ;;
      *) echo "settle: unknown database $db" >&2; exit 1 ;;
    esac
  done
done
