#!/usr/bin/env bash
# Builds benches/icount.rs (with the library features in ICOUNT_FEATURES)
# and prints the path of its binary; shared by icount.sh and wall.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(cargo bench --bench icount --no-run --features "${ICOUNT_FEATURES:-}" --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "icount" and m.get("executable"):
        print(m["executable"])')
[ -x "$bin" ] || { echo "could not build benches/icount.rs" >&2; exit 1; }
echo "$bin"
