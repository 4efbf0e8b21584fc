#!/bin/bash
# Prepares what benchmarks/gpu_run.sh carries to the GPU machine (Python 3.12, no network there):
#   .whl/         wheels of the packages that machine lacks (about 39 MB; the carry limit is 64 MiB)
#   .benchmedia/  the 512x512 talking heads of ../shared/media (about 11 MB)
# Both folders are ignored by git (.gitignore, .git/info/exclude). Run from the repository root; then
#   run(command="bash benchmarks/gpu_run.sh .benchmedia", carry=[".whl", ".benchmedia"], timeout_s=420)
# and delete .benchmedia afterwards (the media must not be copied into the project).
set -euo pipefail
PY=${PYTHON:-python3}
mkdir -p .whl
plat=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64)
$PY -m pip download -q --no-deps --only-binary=:all: "${plat[@]}" -d .whl \
    av==18.1.0 librosa==0.11.0 spafe==0.3.3 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 \
    decorator==5.3.1 platformdirs==4.14.8 yacs==0.1.8 termcolor==3.3.0 parameterized==0.9.0 cffi==2.1.1 \
    pycparser==3.12 networkx==3.6.1
# pure-Python packages published as sdists only: build their wheels here
$PY -m pip wheel -q --no-deps --no-build-isolation -w .whl pytorchvideo==0.1.5 fvcore==0.1.5.post20221221 iopath==0.1.10
grep -qx '/.benchmedia/' .git/info/exclude 2>/dev/null || echo '/.benchmedia/' >> .git/info/exclude
mkdir -p .benchmedia
media=${MEDIA:-../shared/media}
$PY - "$media" <<'EOF'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from bench_throughput import pick_sources
for p in pick_sources(Path(sys.argv[1]), 512):
    shutil.copy2(p, Path(".benchmedia") / p.name)
EOF
du -sh .whl .benchmedia
