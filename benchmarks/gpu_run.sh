#!/bin/bash
# The device run of issue 5: install the carried wheels, check the stack, run bench_throughput.py on 200 files and
# `thqa score` on the same files. Run from the repository root on the GPU machine, with `.whl` (wheels for Python 3.12:
# av, librosa, spafe, pytorchvideo, fvcore, iopath, yacs, termcolor, parameterized, soundfile, soxr, audioread,
# pooch, decorator, platformdirs, cffi, pycparser, networkx; see benchmarks/README.md) and MEDIA (512x512 talking
# heads, e.g. copies of ../shared/media/*512*.mp4 in an ignored folder) carried along. Writes $OUT/throughput_gpu.json
# and $OUT/prepare_gpu_host.json (CPU seconds per file of prepare() on that machine's cores), then
# $OUT/precision_gpu.json (issue 11: fp32 against bf16-autocast features and MOS on the same files, on the GPU).
set -o pipefail
MEDIA=${1:-.benchmedia}
python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD THQA_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
ulimit -n 65536 2>/dev/null
nproc; free -g | head -2; df -h /dev/shm | tail -1
python3 -c "import torch, torchvision, timm, av, librosa, spafe, pytorchvideo, numpy; print('torch', torch.__version__, 'timm', timm.__version__, 'av', av.__version__, 'librosa', librosa.__version__, torch.cuda.get_device_name(0))" || exit 4
(cd benchmarks && timeout 60 python3 bench_prepare.py --media "../$MEDIA" --repeats 1 --json "$OUT/prepare_gpu_host.json" | tee "$OUT/prepare.txt")
(cd benchmarks && timeout 300 python3 bench_throughput.py --media "../$MEDIA" --n 200 --device cuda --forward-seconds 10 --work /tmp/tp --json "$OUT/throughput_gpu.json" 2>&1 | grep -v "no audio stream" | tee "$OUT/log.txt")
t0=$(date +%s.%N)
timeout 120 python3 -m thqa.cli --quiet score /tmp/tp/files/*.mp4 --random-init --device cuda -o /tmp/scores.csv 2>&1 | grep -v "no audio stream"
t1=$(date +%s.%N)
python3 -c "import sys; print(f'thqa score: 200 files in {float(sys.argv[2]) - float(sys.argv[1]):.1f} s wall (start-up included)')" "$t0" "$t1" | tee -a "$OUT/log.txt"
(cd benchmarks && timeout 150 python3 bench_precision.py --media "../$MEDIA" --device cuda --n 20 --json "$OUT/precision_gpu.json" 2>&1 | tail -25 | tee "$OUT/precision.txt")
