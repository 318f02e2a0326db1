#!/usr/bin/env bash
# The full kernel sweep on one GPU in one run: table (markdown), JSON and chart under $OUT.
#
#   OUT=/tmp/out bash bench/run_gpu_suite.sh                # full sweep, stops starting rows after $MINUTES
#   SWEEP=quick MINUTES=4 OUT=/tmp/out bash bench/run_gpu_suite.sh
#   PYTEST=1 OUT=/tmp/out bash bench/run_gpu_suite.sh       # also the pytest-benchmark suite (quick sweep)
#
# Rows not started before the deadline are recorded as "skipped: time budget spent", so the outputs always exist.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench-results}"
SWEEP="${SWEEP:-full}"
MINUTES="${MINUTES:-7}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
python - <<'PY'
import torch, triton
print(f"torch {torch.__version__} | CUDA {torch.version.cuda} | cuDNN {torch.backends.cudnn.version()} | triton {triton.__version__}")
PY
python -m minference.bench.cli kernels --sweep "$SWEEP" --out "$OUT" --max-minutes "$MINUTES" \
    --target-seconds 0.5 --no-progress ${EXTRA_ARGS:-}
if [ "${PYTEST:-0}" = "1" ]; then
    MINFERENCE_BENCH_SWEEP=quick python -m pytest bench/test_kernel_speed.py -m bench -q -p no:cacheprovider \
        --benchmark-autosave --benchmark-storage="file://$OUT/benchmarks" --benchmark-json="$OUT/pytest-benchmark.json" \
        --benchmark-columns=median,min,max,rounds
fi
ls -la "$OUT"
