#!/usr/bin/env bash
# Rebuilds the shipped checkpoint wrc-dinov2-s14-imgfocus and its fidelity numbers (docs/RESULTS.md).
# Usage: scripts/reproduce_checkpoint.sh SHARED_DATA_DIR WORK_DIR      (2 CPU threads: ~14 min caching + ~18 min training)
set -euo pipefail
data="${1:?path to shared/data}"; work="${2:?work folder}"
mkdir -p "$work/val" "$work/train"
# ImageNet sample: every 20th photo (sorted) is held out for model selection; the other 760 train.
i=0
for f in $(ls "$data/imagenet-sample" | sort); do
  if (( i % 20 == 0 )); then ln -sf "$data/imagenet-sample/$f" "$work/val/$f"; else ln -sf "$data/imagenet-sample/$f" "$work/train/$f"; fi
  i=$((i + 1))
done
export OMP_WAIT_POLICY=PASSIVE
wrcup train --data "$work/train" --out "$work/run" --steps 1400 --batch-size 4 --lr 1e-3 --warmup 50 --crops 4 \
  --residual --losses local,consistency,full --cache-targets "$work/cache" --checkpoint-every 100 \
  --name wrc-dinov2-s14-imgfocus --device cpu
ck="$work/run/wrc-dinov2-s14-imgfocus.safetensors"
for m in bilinear learned; do
  wrcup eval fidelity "$work/val" --method $m --model "$ck" --cache "$work/fcache" --out "$work/val-$m.json"
  wrcup eval fidelity "$data/davis2016-dev/JPEGImages/480p" --every 10 --method $m --model "$ck" \
    --cache "$work/fcache" --out "$work/davis-$m.json"
done
