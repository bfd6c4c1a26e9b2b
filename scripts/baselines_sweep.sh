#!/usr/bin/env bash
# Table 1 (and the in-context row of Table 2) on the held-out synthetic split: PIN and the paper's
# baselines queued as DVC experiments of the same pipeline, run one after the other, then shown.
#
#   bash scripts/baselines_sweep.sh                       # the offline default, as committed
#   bash scripts/baselines_sweep.sh -S train.steps=50 -S eval.max_queries=64   # a quick smoke run
#
# Extra arguments go to every `dvc exp run --queue` (the same overrides for every method).
# METHODS and JOBS (parallel experiments; default 1) can be set in the environment.
# Needs the upstream stages (generate .. pretrain_vlm) in the DVC cache: only train and
# evaluate run per experiment. The venv must be active (the stages call `python`).
set -euo pipefail
cd "$(dirname "$0")/.."
# Queued experiments run in temporary copies of the repository; without this an editable install
# would import the checkout's pin/ instead of the copy's (the stages run in the copy's root).
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"

METHODS=${METHODS:-"pin vpt_fusion vpt_vision coop_llm lora_vision incontext"}
for method in $METHODS; do
  dvc exp run --queue -S "method=$method" "$@"
done
dvc exp run --run-all --jobs "${JOBS:-1}"

# The relevant columns only (DVC matches these regexes from the start of the column name): the
# method, its parameter count and its own mIoU row. The full table follows from the JSON.
dvc exp show --no-pager --md --drop '.*' \
  --keep '^(Experiment|Created|params\.yaml:method|trainable_params)$' \
  --keep '(pin|vpt_fusion|vpt_vision|coop_llm|lora_vision|incontext_[0-9]+)\.miou$'
dvc exp show --json > "${TMPDIR:-/tmp}/pin_baselines_exps.json"
python scripts/baselines_table.py "${TMPDIR:-/tmp}/pin_baselines_exps.json"
