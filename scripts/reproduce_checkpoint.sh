#!/usr/bin/env bash
# Rebuilds the shipped checkpoint wrc-dinov2-s14-imgfocus and its fidelity numbers (docs/RESULTS.md).
# Usage: scripts/reproduce_checkpoint.sh SHARED_DATA_DIR WORK_DIR      (CPU: ~7 min caching + ~9 min training)
set -euo pipefail
data="${1:?path to shared/data}"; work="${2:?work folder}"
mkdir -p "$work/val" "$work/train" "$work/pool"
# ImageNet sample: every 20th photo (sorted) is held out for model selection; every 2nd of the rest trains.
i=0; j=0
for f in $(ls "$data/imagenet-sample" | sort); do
  if (( i % 20 == 0 )); then ln -sf "$data/imagenet-sample/$f" "$work/val/$f"
  else (( j % 2 == 0 )) && ln -sf "$data/imagenet-sample/$f" "$work/train/$f"; j=$((j + 1)); fi
  i=$((i + 1))
done
export OMP_WAIT_POLICY=PASSIVE
wrcup train --data "$work/train" --out "$work/run" --steps 700 --batch-size 4 --lr 1e-3 --warmup 50 --crops 4 \
  --residual --losses local,consistency,full --cache-targets "$work/cache" --checkpoint-every 100 \
  --name wrc-dinov2-s14-imgfocus --device cpu
ck="$work/run/wrc-dinov2-s14-imgfocus.safetensors"
for m in bilinear learned; do
  wrcup eval fidelity "$work/val" --method $m --model "$ck" --cache "$work/fcache" --out "$work/val-$m.json"
  wrcup eval fidelity "$data/davis2016-dev/JPEGImages/480p" --every 10 --method $m --model "$ck" \
    --cache "$work/fcache" --out "$work/davis-$m.json"
done
