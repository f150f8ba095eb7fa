#!/usr/bin/env bash
# Scoring on a GPU: CUDA agrees with CPU, then bench/scoring.py on the base-size model.
# Usage: OUT=results bash bench/gpu_scoring.sh   (python with agrl importable; ~2 minutes on one H100)
set -euo pipefail
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# 1. The same probabilities on CUDA (fp32) as on CPU; bf16 within a loose bound.
python3 - <<'PY'
import tempfile
from agrl.model.score import Scorer
from agrl.core.synth import generate
from agrl.model.tiny import init_model

path = init_model(tempfile.mkdtemp(), size="small")
records = generate(seed=0)["eval_wild"][:96]
cpu = Scorer(path, device="cpu").score(records)
fp32 = Scorer(path, device="cuda", dtype="float32").score(records)
bf16 = Scorer(path, device="cuda").score(records)
def gap(a, b):
    return max(abs(x.probabilities[c] - y.probabilities[c]) for x, y in zip(a, b) for c in x.probabilities)
print(f"cuda fp32 vs cpu: max |dp| = {gap(cpu, fp32):.2e}; cuda bf16 vs cpu: max |dp| = {gap(cpu, bf16):.2e}")
assert gap(cpu, fp32) < 1e-4 and gap(cpu, bf16) < 0.05
PY

# 2. Prefill vs generate-then-parse, and the service under 2,000 requests.
python3 bench/scoring.py --size base --pairs 512 --batch-size 64 --requests 2000 --concurrency 64 --profile \
  --out "$OUT/scoring_gpu_base.json"
