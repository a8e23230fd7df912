#!/usr/bin/env bash
# GPU readiness in one prepared run (<= 5 min on any CUDA GPU); passes (skips) cleanly without one.
# Writes benchmarks/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
timeout 300 python benchmarks/gpu_check.py
