#!/usr/bin/env bash
# `agrl score --ray` on a GPU host (issue 31): bench/score_ray.py with one actor per GPU, in two device calls.
# The GPU host (python3 3.12 with torch, transformers, pyarrow, pandas; no network) lacks Ray and jsonschema,
# and Ray's cp312 wheel (~79 MB) is over what one call carries (64 MiB with the working tree), so it travels
# in two halves, as gpu_stage.sh's GGUF does:
#
#   bash bench/gpu_score_ray.sh prepare   # HERE, with network: .gpu/ray1 (wheel half 1 + the small wheels)
#                                         # and .gpu/ray2 (half 2); .gpu/ is git-ignored
#   device call 1 (~1 min):  run(carry=[".gpu/ray1"], timeout_s=120, command="bash bench/gpu_score_ray.sh stage")
#   device call 2 (~5 min), back to back:
#       run(carry=[".gpu/ray2"], timeout_s=480, command="OUT=$OUT bash bench/gpu_score_ray.sh run")
#       joins and checks the wheel, installs it into /tmp/agrl_site, then bench/score_ray.py on CUDA:
#       single process vs Ray with 1 actor (1 GPU) and 2 actors (half a GPU each) on the base-size model,
#       written to $OUT/score_ray_gpu.json (machine, date, pairs/s, Ray start-up).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: gpu_score_ray.sh prepare|stage|run}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/agrl_out}
SITE=/tmp/agrl_site
CARRY=/tmp/agrl_carry
RAY=ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl
# What the host lacks for ray[data]==2.60.0 (the rest, pyarrow, pandas, fsspec, msgpack, protobuf, is there).
SMALL="jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1"
export PYTHONPATH="$PWD/src:$SITE:${PYTHONPATH:-}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

case "$MODE" in
prepare)
  rm -rf .gpu/ray1 .gpu/ray2 && mkdir -p .gpu/ray1/whl .gpu/ray2 .gpu/tmp
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/tmp ray==2.60.0 $SMALL
  mv .gpu/tmp/*.whl .gpu/ray1/whl/ && mv .gpu/ray1/whl/$RAY .gpu/tmp/
  sha256sum .gpu/tmp/$RAY | cut -d' ' -f1 > .gpu/ray1/ray.sha256
  split -n 2 -d .gpu/tmp/$RAY .gpu/tmp/part-
  mv .gpu/tmp/part-00 .gpu/ray1/ray.whl.part-00 && mv .gpu/tmp/part-01 .gpu/ray2/ray.whl.part-01
  rm -rf .gpu/tmp
  tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
  for call in ray1 ray2; do
    size=$(du -sb .gpu/$call | cut -f1)
    echo "$call carries $((size / 1048576)) MiB + the working tree $((tree / 1048576)) MiB (limit 64)"
    [ $((size + tree)) -lt $((64 * 1048576)) ] || { echo "$call is over 64 MiB"; exit 2; }
  done
  ;;
stage)
  mkdir -p "$CARRY" && cp .gpu/ray1/ray.whl.part-00 .gpu/ray1/ray.sha256 "$CARRY"/
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/ray1/whl/*.whl
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  ls -la "$CARRY"
  ;;
run)
  [ -f "$CARRY/ray.whl.part-00" ] || { echo "no $CARRY/ray.whl.part-00: run the stage call first"; exit 2; }
  mkdir -p "$OUT"
  cat "$CARRY/ray.whl.part-00" .gpu/ray2/ray.whl.part-01 > "$CARRY/$RAY"
  echo "$(cat "$CARRY/ray.sha256")  $CARRY/$RAY" | sha256sum -c -
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$CARRY/$RAY"
  $PY -c "import ray, torch; print('ray', ray.__version__, 'torch', torch.__version__, torch.cuda.device_count(), 'GPU(s)')"
  # Ray's workers start their own python3: the PYTHONPATH above (agrl's src, the carried site) reaches them.
  GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
  $PY bench/score_ray.py --device cuda --size base --pairs ${PAIRS:-20000} --batch-size 128 --rows-per-shard 2000 \
    --single-threads 0 --actors "$GPUS,$((2 * GPUS))" --gpus-per-actor 1,0.5 --cpus "$(nproc)" \
    --out "$OUT/score_ray_gpu.json"
  ;;
*)
  echo "usage: gpu_score_ray.sh prepare|stage|run"; exit 2
  ;;
esac
