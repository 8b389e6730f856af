#!/usr/bin/env bash
# The main job on the embedded default: set up, train on MovieLens-100K, show the metrics table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/deftrec train --dataset ml-100k --name ml-100k --force
.venv/bin/deftrec eval runs/ml-100k
