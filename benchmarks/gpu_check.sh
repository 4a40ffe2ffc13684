#!/usr/bin/env bash
# The GPU check, one command on a machine with CUDA (under 10 minutes on one H200):
#   bash benchmarks/gpu_check.sh
# Installs symscale over the machine's own torch (never replacing it), then runs benchmarks/gpu_check.py, which
# writes benchmarks/results/gpu_check.json (and a copy under $OUT when that is set, as on a lent device machine).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, torch.cuda.get_device_name())"
# the machine's torch stays: install symscale and its pure-Python needs without touching torch
python3 -m pip install -q --no-deps -e . >/dev/null
python3 -m pip install -q numpy scipy pyyaml ase ase-db-backends schedulefree matplotlib tqdm rdkit tblite qm9pack pandas e3nn lmdb >/dev/null 2>&1 || true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
timeout 560 python3 benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json "$@"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu_check.json "$OUT/"; fi
