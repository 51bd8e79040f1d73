#!/usr/bin/env bash
# Instructions executed by each pool on each workload of benches/icount.rs,
# counted by valgrind's callgrind (the same count run after run, unlike
# wall-clock time on a noisy machine). Prints the total and the count per
# task (per join for fib) and the ratio to the first peer named.
#
#   benches/icount.sh                 every workload
#   benches/icount.sh spawn keyed     some of them
#   benches/icount.sh sum collect sort stable mandel   the data-parallel loops
#   ICOUNT_FEATURES=tracing benches/icount.sh spawn    with the library built with features
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is required" >&2; exit 1; }
bin=$(benches/icount-bin.sh)

declare -A pools=(
  [spawn]="channel ebbtide ebbtide_nometrics ebbtide_elastic ebbtide_wide rayon threadpool"
  [keyed]="sharded ebbtide"
  [fib]="rayon ebbtide"
  [retry]="spawn spawn_with token fallible retry"
  [group]="ebbtide"
  [sum]="rayon ebbtide"
  [collect]="rayon ebbtide"
  [sort]="rayon ebbtide"
  [stable]="rayon ebbtide"
  [mandel]="rayon ebbtide"
)
declare -A units=([spawn]=1000000 [keyed]=1000000 [fib]=317810 [retry]=1000000 [group]=1000000
  [sum]=100000000 [collect]=10000000 [sort]=10000000 [stable]=10000000 [mandel]=786432)
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(spawn keyed fib)
out=$(mktemp -d)
for w in "${workloads[@]}"; do
  base=""
  for p in ${pools[$w]}; do
    valgrind --tool=callgrind --callgrind-out-file="$out/$w.$p" "$bin" "$w" "$p" >/dev/null 2>"$out/log"
    ir=$(awk '/^summary:/ { print $2 }' "$out/$w.$p")
    [ -n "$base" ] || base=$ir
    awk -v w="$w" -v p="$p" -v ir="$ir" -v base="$base" -v u="${units[$w]}" \
      'BEGIN { printf "%-6s %-18s %12.1f M instructions  %7.1f per unit  %.3f of the first\n", w, p, ir / 1e6, ir / u, ir / base }'
  done
done
rm -rf "$out"
