#!/usr/bin/env bash
# The whole job on a built-in synthetic example, on the CPU, in a few minutes:
#   synth (videos + interaction log) -> Beam ingest (dataset version) -> inspect -> train VideoRec (tiny) -> test metrics
# Everything lands in ./example (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export PATH="$PWD/.venv/bin:$PATH"
out="${EXAMPLE_DIR:-example}"

echo "==> 1/4 synth: 300 users, 120 micro-videos with a planted content signal and a few planted faults"
videorec synth --out "$out/raw" --overwrite --users 300 --items 120 --seed 1 \
  --missing-videos 2 --truncated-videos 2 --no-video-stream 1 --bad-rows 3

echo "==> 2/4 ingest: Beam DirectRunner -> $out/dataset"
rm -rf "$out/dataset"
videorec ingest --interactions "$out/raw/pairs.csv" --videos "$out/raw/videos" --titles "$out/raw/titles.csv" \
  --output "$out/dataset" --frame-size 64

echo "==> 3/4 inspect: checksums, counts, every shard opens"
videorec inspect "$out/dataset"

echo "==> 4/4 train: tiny 3D-CNN video encoder + SASRec, end to end, then full-ranking test metrics"
videorec train --data "$out/dataset" --preset tiny --encoder tiny --output "$out/run" --no-resume
