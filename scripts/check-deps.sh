#!/usr/bin/env bash
# Architecture invariants on the dependency graph (see ARCHITECTURE.md), checked with
# `cargo tree -i`: a forbidden crate must be absent from a crate's normal dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
forbid() {
  local crate=$1; shift
  for dep in "$@"; do
    local out
    # "nothing to print": the crate is in the graph only through dev-dependencies (tests).
    if out=$(cargo tree -p "$crate" -e normal -i "$dep" 2>&1) && ! grep -q "nothing to print" <<<"$out"; then
      echo "dependency rule broken: $crate depends on $dep:"
      echo "$out" | head -n 20
      status=1
    elif ! grep -q -e "did not match any packages" -e "nothing to print" <<<"$out"; then
      echo "cargo tree failed for $crate/$dep:"; echo "$out"; status=1
    fi
  done
}

# domain is pure: no runtime, database, HTTP or cache crates.
forbid tollgate-domain tokio sea-orm sqlx actix-web hyper reqwest redis deadpool-redis mio
# storage and relay know nothing of the HTTP server framework.
forbid tollgate-storage actix-web hyper reqwest
forbid tollgate-relay actix-web sea-orm sqlx
# migration is schema only.
forbid tollgate-migration actix-web tollgate-domain

[ $status -eq 0 ] && echo "dependency rules hold"
exit $status
