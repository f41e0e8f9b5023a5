#!/usr/bin/env bash
# One prepared check of a GPU machine: the device-aware tests on the GPU, MinkUNet34C speed and memory in
# float32 and bfloat16, `cmcr pretrain` of the published PPKT and CMCR recipes on a synthetic world, and
# the projected GPU-hours per nuScenes epoch. Prints ONE JSON line (last line of stdout); progress on
# stderr. At most ~8 minutes on one H100; nothing is downloaded.
#
#   benchmarks/device_check.sh                      # CUDA
#   benchmarks/device_check.sh --profile prof/      # + torch.profiler trace and where the GPU time goes
#   benchmarks/device_check.sh --device cpu         # tiny sizes on the CPU (CI keeps the script working)
#
# Options: see `benchmarks/device_check.sh --help` (benchmarks/device_check.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$root/benchmarks/device_check.py" "$@"
