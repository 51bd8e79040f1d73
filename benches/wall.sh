#!/usr/bin/env bash
# Wall-clock time of each pool on a workload of benches/icount.rs, runs
# alternated (pool A, B, C, A, B, C, …) so that a noisy machine's drift hits
# every pool alike. Prints each run's time per task (per join for fib), the
# medians, and each median's ratio to the fastest peer's.
#
#   benches/wall.sh spawn [RUNS]     (RUNS defaults to 7 per pool)
#   benches/wall.sh keyed 9
#   ICOUNT_POOLS="ebbtide channel" benches/wall.sh spawn
#
# Each run is one process: build the pool, run the workload, wait for it,
# exit. The time includes starting the pool's threads (well under 1 % of a
# 1M-task run).
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:?usage: benches/wall.sh WORKLOAD [RUNS]}
runs=${2:-7}
bin=$(benches/icount-bin.sh)
declare -A pools=(
  [spawn]="ebbtide ebbtide_nometrics ebbtide_elastic ebbtide_wide channel rayon threadpool"
  [keyed]="ebbtide sharded"
  [fib]="ebbtide rayon"
)
declare -A units=([spawn]=1000000 [keyed]=1000000 [fib]=317810)
list=${ICOUNT_POOLS:-${pools[$workload]:?no pools for $workload}}
out=$(mktemp)
for i in $(seq 1 "$runs"); do
  for p in $list; do
    t0=$(date +%s%N)
    "$bin" "$workload" "$p" >/dev/null
    t1=$(date +%s%N)
    echo "$p $(( t1 - t0 ))" >>"$out"
  done
done
python3 - "$out" "${units[$workload]}" "$workload" <<'EOF'
import sys, statistics
path, units, workload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runs = {}
for line in open(path):
    p, ns = line.split()
    runs.setdefault(p, []).append(int(ns) / units)
med = {p: statistics.median(v) for p, v in runs.items()}
peers = [p for p in med if not p.startswith("ebbtide")]
fastest = min(peers, key=med.get) if peers else None
for p, v in runs.items():
    ratio = f"  {med[p] / med[fastest]:.2f}x {fastest}" if fastest else ""
    print(f"{workload:6} {p:18} median {med[p]:7.1f} ns  runs " +
          " ".join(f"{x:.0f}" for x in v) + ratio)
EOF
rm -f "$out"
