#!/usr/bin/env bash
# AGRL on one GPU, offline: build the ~90M-parameter base model locally, train GRPO, AGRL-immediate and
# AGRL-deferred a few bf16 steps each (same seed, data, steps) and print step time + completion tokens/s.
# The GPU host has torch, transformers and accelerate; TRL, datasets (and what they need beyond those)
# come as wheels in .whl/; agrl runs from src/. About 3-4 minutes on one H100.
# Usage: bash bench/gpu_check.sh
# CPU smoke run (deps already importable): SKIP_WHEELS=1 SIZE=tiny STEPS=2 WARMUP=1 BATCH=8 LEN=16 bash bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
SIZE=${SIZE:-base}
STEPS=${STEPS:-6}
WARMUP=${WARMUP:-2}
BATCH=${BATCH:-64}
LEN=${LEN:-128}
BF16=${BF16:---bf16}

if [ "${SKIP_WHEELS:-0}" != 1 ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
mkdir -p "$OUT"

python3 - <<'PY'
import torch, transformers, trl, datasets, accelerate
print(f"torch {torch.__version__} transformers {transformers.__version__} trl {trl.__version__} "
      f"datasets {datasets.__version__} accelerate {accelerate.__version__}")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)")
assert trl.__version__ == "1.16.0", "agrl subclasses TRL internals: it needs trl==1.16.0"
PY
if [ -n "$BF16" ] && ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  BF16=""  # bf16 training is for the GPU; the CPU smoke run stays in fp32
fi

# G=8 rollouts per prompt, BATCH rows per step (BATCH/8 groups), LEN completion tokens at most.
time python3 bench/step_time.py --size "$SIZE" $BF16 --batch "$BATCH" --num-generations 8 \
  --max-completion-length "$LEN" --steps "$STEPS" --warmup "$WARMUP" --rounds 1 \
  --out "$OUT/step_time_gpu_${SIZE}.json"
