#!/usr/bin/env bash
# The GPU photo path's figures, in one call of the device tool (its machines have torch,
# torchvision, transformers, Pillow and scikit-image, not PyAV). Prepare here, once:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl 'av>=14'
# then run `bash bench/gpu_photo.sh` there with `.whl` carried. Ordered by value: the photo path
# against the naive path and the model alone (eager fp16), then the same compiled.
set -euo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m bench.photo_bench --model small --photos 1024 \
    --json "$OUT/photo_gpu.json" 2>&1 | tee "$OUT/photo_gpu.log"
python3 -m bench.photo_bench --model small --photos 1024 --compile --naive-seconds 3 \
    --json "$OUT/photo_gpu_compiled.json" 2>&1 | tee "$OUT/photo_gpu_compiled.log"
