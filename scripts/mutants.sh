#!/usr/bin/env bash
# Mutation testing of the money and rule code of `domain` (docs/testing.md): cargo-mutants
# changes quota.rs, pricing.rs, billing.rs, token.rs, validation.rs, ratelimit.rs (the sliding
# window of the rate limits) and `route` in channel.rs one mutant at a time (a `<` made `<=`,
# a body replaced by a default…) and runs the domain crate's tests against each; a mutant the
# tests do not notice is "missed". Prints caught/missed/unviable/timeouts and exits non-zero
# when fewer than 95% of the viable mutants (caught + missed + timeouts) are caught.
#
#   bash scripts/mutants.sh              # always runs (installs cargo-mutants once)
#   bash scripts/mutants.sh --if-changed # skips when the files above and the domain tests are
#                                        # byte-identical to those of the last passing run
#
# Works in a copy of the tree with its own target directory, so it never disturbs other builds.
set -euo pipefail
cd "$(dirname "$0")/.."

MUTANTS_VERSION=27.1.0
THRESHOLD=${MUTANTS_THRESHOLD:-95}
cache=${MUTANTS_CACHE:-$HOME/.cache/tollgate-mutants}
files=(quota pricing billing token validation ratelimit)

# What the result depends on: the mutated files, the domain tests outside them, this script.
inputs() {
  printf '%s\n' "${files[@]/#/crates/domain/src/}" | sed 's/$/.rs/'
  echo crates/domain/src/channel.rs
  find crates/domain/tests -name '*.rs' 2>/dev/null | sort
  echo crates/domain/Cargo.toml
  echo scripts/mutants.sh
}
hash=$(inputs | xargs sha256sum | sha256sum | cut -d' ' -f1)
mkdir -p "$cache"
if [ "${1:-}" = "--if-changed" ] && [ "$(cat "$cache/passed.sha256" 2>/dev/null)" = "$hash" ]; then
  echo "mutants: unchanged since the last passing run ($(cat "$cache/summary" 2>/dev/null)); skipped"
  exit 0
fi

if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $MUTANTS_VERSION" ]; then
  echo "installing cargo-mutants $MUTANTS_VERSION"
  CARGO_TARGET_DIR=$cache/install cargo install --locked --quiet "cargo-mutants@$MUTANTS_VERSION"
fi

args=(-p tollgate-domain --jobs 1 --timeout 120 --no-shuffle --output "$cache")
for f in "${files[@]}" channel; do args+=(--file "crates/domain/src/$f.rs"); done
# Every mutant of the six files, and of channel.rs only those in `route`.
args+=(--re "crates/domain/src/($(IFS='|'; echo "${files[*]}"))\\.rs:")
args+=(--re 'crates/domain/src/channel\.rs:.* route( |$)')

# cargo-mutants exits 2 for missed mutants and 3 for timeouts (counted below); anything else
# non-zero (the unmutated tree fails, a bad option) is an error of its own.
status=0
CARGO_TARGET_DIR=$cache/target cargo mutants "${args[@]}" || status=$?
if [ "$status" -ne 0 ] && [ "$status" -ne 2 ] && [ "$status" -ne 3 ]; then
  echo "mutants: cargo-mutants failed (exit $status)" >&2
  exit "$status"
fi

out=$cache/mutants.out
count() { if [ -f "$out/$1.txt" ]; then grep -c . "$out/$1.txt" || true; else echo 0; fi; }
caught=$(count caught) missed=$(count missed) unviable=$(count unviable) timeouts=$(count timeout)
viable=$((caught + missed + timeouts))
if [ "$viable" -eq 0 ]; then
  echo "mutants: no viable mutant was tested" >&2
  exit 1
fi
percent=$(awk -v c="$caught" -v v="$viable" 'BEGIN { printf "%.1f", 100 * c / v }')
summary="caught $caught / missed $missed / unviable $unviable / timeouts $timeouts: $percent% of $viable viable mutants caught"
echo "mutants: $summary"
if [ "$missed" -gt 0 ] || [ "$timeouts" -gt 0 ]; then
  echo "not caught:"
  cat "$out/missed.txt" "$out/timeout.txt" 2>/dev/null | sed 's/^/  /'
fi
if awk -v c="$caught" -v v="$viable" -v t="$THRESHOLD" 'BEGIN { exit !(100 * c < t * v) }'; then
  echo "mutants: below $THRESHOLD%" >&2
  exit 1
fi
echo "$summary" >"$cache/summary"
echo "$hash" >"$cache/passed.sha256"
