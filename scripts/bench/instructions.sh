#!/usr/bin/env bash
# Instructions a relayed call costs Tollgate, counted by valgrind's callgrind — the same for the
# same binary and load whatever the machine's neighbours do, where calls/s and CPU time move by
# ±15% on a shared machine. Two side-by-side JSON rows (BENCH_SHORT and BENCH_LONG seconds,
# 4 and 10) with Tollgate under callgrind; the difference of their instruction counts over the
# difference of their answered calls leaves start-up and shutdown out. Under callgrind Tollgate
# answers a few hundred calls a second, so its settlement batches are small (tens of calls):
# compare builds with this, not with the batch sizes of a full-speed run (scripts/bench/settle.sh
# counts a batch of 256 the same way).
#
#   cargo build --release -p tollgate-server -p tollgate-tests --bins
#   bash scripts/bench/instructions.sh            # TOLLGATE_BIN, BENCH_USERS (1), BENCH_DATABASES (sqlite)
#
# Prints the instructions a call and keeps each row's callgrind file (BENCH_OUT, /tmp/tollgate-
# instructions) for `callgrind_annotate --inclusive=yes`. Needs valgrind (Debian) and what
# side-by-side.sh needs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v valgrind >/dev/null || { echo "instructions: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
out=${BENCH_OUT:-/tmp/tollgate-instructions}
short=${BENCH_SHORT:-4}
long=${BENCH_LONG:-10}
db=${BENCH_DATABASES:-sqlite}
mkdir -p "$out"
declare -A calls instr
for s in "$short" "$long"; do
  rm -f "$out/row-$s.out"
  # oha stays off the PATH (no fixed-rate rows); mariadbd is not pinned (callgrind is the cost).
  PATH=$(echo "$PATH" | tr ':' '\n' | grep -v '\.cargo/bin' | paste -sd:) \
  BENCH_WRAP="valgrind --tool=callgrind --callgrind-out-file=$out/row-$s.out" BENCH_SECONDS=$s \
  BENCH_USERS=${BENCH_USERS:-1} BENCH_MODES=json BENCH_DATABASES=$db BENCH_OPEN_STREAMS=0 \
  BENCH_PIN_MARIADB=0 bash "$here/side-by-side.sh" >"$out/row-$s.log" 2>&1
  calls[$s]=$(sed -n 's/.*json: [0-9.]* µs of CPU a call (\([0-9]*\) calls).*/\1/p' "$out/row-$s.log" | head -n1)
  instr[$s]=$(callgrind_annotate "$out/row-$s.out" | sed -n 's/^ *\([0-9,]*\) (100.0%) *PROGRAM TOTALS.*/\1/p' | tr -d ,)
  [ -n "${calls[$s]}" ] && [ -n "${instr[$s]}" ] || { echo "instructions: the ${s}s row failed: $out/row-$s.log" >&2; exit 1; }
done
echo "instructions at $(git -C "$here/../.." rev-parse --short HEAD), $db, ${BENCH_USERS:-1} user(s): calls ${calls[$short]} / ${calls[$long]}, instructions ${instr[$short]} / ${instr[$long]}"
echo "$(( (instr[$long] - instr[$short]) / (calls[$long] - calls[$short]) )) instructions a call"
