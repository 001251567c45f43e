#!/usr/bin/env bash
# The offline comparison table of docs/RESULTS.md: every task on the real data in shared/data, for the backbone's
# grid (none), bilinear and each given checkpoint, in one resumable `wrcup eval compare` run.
# Usage: scripts/compare_offline.sh SHARED_DATA_DIR OPENCV_DATA_DIR OUT.json CHECKPOINT...
#   OPENCV_DATA_DIR holds graf1.png, graf3.png, H1to3p.xml (Debian opencv-doc, see .ci/run).
# Finished results are kept in OUT.parts/: run it again (or with more checkpoints) and only what is missing runs.
# WRCUP_METHODS=learned evaluates the checkpoints only (default: none,bilinear,learned).
set -euo pipefail
data="${1:?path to shared/data}"; opencv="${2:?folder with graf1.png, graf3.png, H1to3p.xml}"
out="${3:?output JSON}"; shift 3
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
wrcup eval compare --tasks fidelity,davis,seg-probe,discovery,correspondence --methods "${WRCUP_METHODS:-none,bilinear,learned}" \
  --models "$@" --out "$out" --cache "${WRCUP_FEATURE_CACHE:-$(dirname "$out")/feature-cache}" \
  --fidelity-images "$data/davis2016-dev/JPEGImages/480p" --fidelity-every 10 \
  --davis-root "$data/davis2016-dev" --davis-size 448 \
  --seg-probe-dataset camvid --seg-probe-root "$data/camvid" --seg-probe-size 448 \
  --discovery-dataset davis-first-frames --discovery-root "$data/davis2016-dev" --discovery-size 448 \
  --correspondence-dataset homography --correspondence-root "$opencv" --correspondence-size 448
