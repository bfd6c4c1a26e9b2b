#!/usr/bin/env bash
# The one GPU session's script (issues 6 and 9), run as prepared on one H100:
#   1. the mini VLM's pretraining recipes, three in parallel (scripts/build_mini_vlm.py on a
#      pack made by `build_mini_vlm.py pack`): each returns as a tar of its model folder;
#   2. bench/train_step.py: PIN train step / eval throughput for mini, OpenFlamingo-3B and
#      BLIP-2 OPT-2.7B built from configs with random weights.
# Needs: lab/pretrain_pack.pt, and .whl/ holding the wheels the GPU image lacks (pydantic,
# open_clip, open_flamingo, ...). Writes into $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=20
nvidia-smi -L; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
COMMON="-S batch_size=256 -S vision_steps=3000 -S vision_lr=0.004 -S lm_steps=8000 -S lm_batch_size=256 -S lm_lr=0.002"
MIX='text_mix={caption: 0.2, exists: 0.35, count: 0.15, slot: 0.3}'
run() {  # name, extra -S args
  local name=$1; shift
  timeout 330 python3 scripts/build_mini_vlm.py train --pack lab/pretrain_pack.pt --out /tmp/v/$name/mini_vlm \
    $COMMON -S "$MIX" "$@" --device cuda --workers 4 > /tmp/v_$name.log 2>&1
  echo "[$name] exit $?" >> /tmp/v_$name.log
  tar -C /tmp/v/$name -cf $OUT/$name.tar mini_vlm mini_vlm.metrics.json 2>>/tmp/v_$name.log
}
mkdir -p /tmp/v
t0=$(date +%s)
run origin -S slot=origin &
run anywhere -S slot=anywhere &
run anywhere_x1 -S slot=anywhere -S xattn_every=1 &
wait
echo "pretraining wall: $(( $(date +%s) - t0 )) s"
for f in /tmp/v_*.log; do echo "=== $f"; grep -v "step/s\|it/s\|img/s" $f | tail -60; done > $OUT/variants.log
tail -5 $OUT/variants.log
timeout 200 python3 bench/train_step.py --out $OUT/train_step.json > $OUT/bench.log 2>&1
echo "bench exit $?"; tail -12 $OUT/bench.log
