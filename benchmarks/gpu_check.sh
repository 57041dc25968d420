#!/usr/bin/env bash
# GPU check for a machine with a CUDA GPU, under 8 minutes: training images/s of yolov4_nano, yolov4_small and the
# paper model at 640 px (bf16-mixed), paper-model inference FPS at 608 px (batch 1 and 32) next to the paper's
# 62 FPS on a V100, and the peer's figures when --peer-python is given. benchmarks/gpu_check.py has the details.
#
#   bash benchmarks/gpu_check.sh --data /data/coco128/annotations/instances_train2017.json \
#       [--peer-python /venv-peer/bin/python --peer-data /data/coco128_yolo/data.yaml]
#   bash benchmarks/gpu_check.sh --dry-run      # CPU, toy sizes: checks that every path runs (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
exec timeout 470 "$PY" benchmarks/gpu_check.py "$@"
