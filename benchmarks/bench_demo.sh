#!/usr/bin/env bash
# Wall time of the README's main job (`thqa demo`, default size) on this machine; writes results/demo_cpu.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp -d)/demo"
start=$(date +%s)
/usr/bin/time -v thqa demo --out "$out" "$@" 2> "$out.time.log" || { tail -n 40 "$out.time.log"; exit 1; }
end=$(date +%s)
mkdir -p "$here/results"
{
  echo "date: $(date -u +%FT%TZ)  host: $(uname -srm)  cpus: $(nproc)"
  echo "wall_s: $((end - start))"
  grep -E "Maximum resident|Elapsed" "$out.time.log"
  cat "$out/metrics.json"
} > "$here/results/demo_cpu.txt"
cat "$here/results/demo_cpu.txt"
