#!/usr/bin/env bash
# HOPE ablations of docs/results.md: the recall config (configs/recall.yaml) at a short budget, one config switch
# per run; validation loss from hope-train, recall from hope-track-long.
# Run as: bash scripts/ablations.sh DATA OUT_DIR [STEPS]
set -euo pipefail
data=$1; out=$2; steps=${3:-150}
mkdir -p "$out"
declare -A switches=(
  [full]=""
  [no_writes]="--set mem_write=0"
  [no_bank]="--set memory_capacity=0"
  [cms_mlp]="--set cms=mlp"
  [mlp_memory]="--set memory_kind=mlp"
  [plain_titans]="--set self_modifying=false"
)
for name in full no_writes no_bank cms_mlp mlp_memory plain_titans; do
  # shellcheck disable=SC2086
  hope-train --config configs/recall.yaml --data "$data" --steps "$steps" --out "$out/$name/ckpt.pt" ${switches[$name]} \
    > "$out/$name.train.json" 2> "$out/$name.train.log"
  hope-track-long --ckpt "$out/$name/ckpt.pt" --gaps 64,256 --trials 32 --out "$out/$name.recall.csv" > /dev/null 2>&1
  echo "$name $(cat "$out/$name.train.json") $(tail -n +2 "$out/$name.recall.csv" | cut -d, -f1,2 | tr '\n' ' ')"
done
