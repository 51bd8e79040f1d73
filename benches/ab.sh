#!/usr/bin/env bash
# Interleaved A/B of ebbtide's own entries in the spawn, fork-join and keyed
# benchmarks: an older revision against the working tree, run alternately
# (A B A B …) so that drift of a noisy machine hits both alike; prints each
# run's estimate and the medians with their ratio.
#
#   benches/ab.sh REV [RUNS]     (RUNS defaults to 5 per side)
#
# The old revision is checked out with `git worktree` under target/ab/ and
# built there with its own target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: benches/ab.sh REV [RUNS]}
runs=${2:-5}
old=target/ab/$(git rev-parse --short "$rev")
if [ ! -d "$old" ]; then
  git worktree add --detach -f "$old" "$rev" >/dev/null
fi
benches=(spawn forkjoin keyed)
for side in "$old" .; do
  (cd "$side" && cargo bench --no-run "${benches[@]/#/--bench=}" >/dev/null 2>&1)
done
out=$(mktemp)
for i in $(seq 1 "$runs"); do
  for side in "$old" .; do
    label=$([ "$side" = . ] && echo new || echo old)
    for b in "${benches[@]}"; do
      # Only ebbtide's entries: the peers do not change between A and B.
      (cd "$side" && cargo bench --bench "$b" -- 'ebbtide' 2>/dev/null) |
        awk -v side="$label" -v run="$i" '
          /^[a-z0-9_]+\/[a-z0-9_]+\/[0-9]+/ { id = $1 }
          # The estimate; the later "change: time: [… %]" line of criterion is
          # skipped (its unit is a percentage).
          /time:/ && !/%/ {
            sub(/.*time: *\[/, ""); split($0, v, " ");
            x = v[3]; u = v[4];
            if (u == "s") x *= 1e3; else if (u == "µs" || u == "us") x /= 1e3; else if (u == "ns") x /= 1e6;
            printf "%s %s %s %.4f\n", id, side, run, x
          }' | tee -a "$out"
    done
  done
done
echo
echo "median of $runs runs each (ms per iteration), new ÷ old:"
sort -k1,1 -k2,2 "$out" | awk '
  { key = $1 " " $2; vals[key] = vals[key] " " $4; ids[$1] = 1 }
  function median(s,   a, n, i, j, t) {
    n = split(s, a, " ");
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  END {
    for (id in ids) {
      o = median(vals[id " old"]); n = median(vals[id " new"]);
      printf "%-50s old %10.3f  new %10.3f  ratio %.3f\n", id, o, n, n / o
    }
  }' | sort
rm -f "$out"
