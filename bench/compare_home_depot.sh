#!/usr/bin/env bash
# "Is this judge worth deploying?" on Home Depot, as a new user would ask it (issue 27): import with a
# query-disjoint 30% test split -> the README's SFT of the shipped base judge on the first 1,000 train
# pairs -> bm25 and tfidf baselines on the same pairs -> ONE `agrl compare` on the first 1,000 held-out
# pairs (prefill scores, no generation). Each step's wall time and the load average around it go to
# WORK/timings.tsv; the table to bench/results/compare_home_depot.{md,json,png} (+ _timings.tsv).
#
#   HD_CSV=../shared/data/home_depot/home_depot.csv.gz bench/compare_home_depot.sh runs/hd_cmp   # minutes, 2 cores
set -euo pipefail
W=${1:-runs/hd_cmp}
HD_CSV=${HD_CSV:-../shared/data/home_depot/home_depot.csv.gz}
AGRL=${AGRL:-agrl}
TRAIN_PAIRS=${TRAIN_PAIRS:-1000}
TEST_PAIRS=${TEST_PAIRS:-1000}
mkdir -p "$W"
TIMES=$W/timings.tsv
printf "step\twall_s\tload_before\tload_after\tstarted_utc\n" > "$TIMES"

step() {  # step NAME COMMAND...: run it, append its wall time and the 1-minute load average before and after
  local name=$1; shift
  local began load0 t0 t1
  began=$(date -u +%FT%TZ); load0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date +%s.%N)
  echo "== $name: $*" >&2
  "$@"
  t1=$(date +%s.%N)
  printf "%s\t%.1f\t%s\t%s\t%s\n" "$name" "$(echo "$t1 - $t0" | bc)" "$load0" "$(cut -d' ' -f1 /proc/loadavg)" "$began" >> "$TIMES"
}

step import $AGRL data import home-depot --input "$HD_CSV" --out "$W/hd" --validation 0 --test 0.3 --force
step train $AGRL train sft --set model=src/agrl/judges/tiny-base --set train_file="$W/hd/train.jsonl" \
    --set scheme=three_level --set max_train_records="$TRAIN_PAIRS" --set output_dir="$W/judge" \
    --set num_train_epochs=3 --set learning_rate=5e-4 --set sft_label_weight=10
for kind in bm25 tfidf; do
  step "baseline fit $kind" $AGRL baseline fit --kind $kind --train "$W/hd/train.jsonl" --limit "$TRAIN_PAIRS" \
      --out "$W/$kind.joblib" --force
done
step compare $AGRL compare "trained judge=$W/judge" "bm25=$W/bm25.joblib" "tfidf=$W/tfidf.joblib" \
    --data "$W/hd/test.jsonl" --limit "$TEST_PAIRS" --prior "$W/hd/train.jsonl" --out "$W/compare" --force
mkdir -p bench/results
for ext in md json png; do cp "$W/compare/compare.$ext" "bench/results/compare_home_depot.$ext"; done
cp "$TIMES" bench/results/compare_home_depot_timings.tsv
cat "$TIMES"
