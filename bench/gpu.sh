#!/usr/bin/env bash
# GPU benchmarks of the train step, in one script of at most 8 minutes on one H100/H200:
#
#   1. python -m bench.gpu_mfu: MFU in bfloat16 of BERT-large MLM at 512 tokens, GPT-2
#      medium at 1024, a GPT-2 XL-width decoder at 1024 and 2048 and T5-base (512/114),
#      each with every attention implementation (model.attention_impl = xla, cudnn),
#      timed interleaved; a table and gpu_mfu.json.
#   2. python -m bench.attention_check: cuDNN flash attention against the XLA reference
#      on packed rows (outputs and gradients equal to rounding, and their times); a table
#      and attention_check.json.
#
#   bash bench/gpu.sh [--smoke] [--out DIR]
#
# --smoke runs both on CPU at tiny shapes in seconds (tests/bench/test_gpu_mfu.py):
# the same code paths, cuDNN reported unavailable. Outputs go to DIR (default
# /tmp/plm-flax-gpu-bench). The path imports no TensorFlow, Grain or ml_collections: a
# bare JAX GPU install (jax[cuda12], flax, optax) and this checkout are enough. Exits
# non-zero when a case failed (out of memory, ...) or attention outputs disagree.
set -euo pipefail

cd "$(dirname "$0")/.."
smoke=()
out="${TMPDIR:-/tmp}/plm-flax-gpu-bench"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=(--smoke); shift ;;
    --out) out="$2"; shift 2 ;;
    *) echo "usage: bash bench/gpu.sh [--smoke] [--out DIR]" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if [[ ${#smoke[@]} -eq 0 ]]; then
  backend=$("$python" -c 'import jax; print(jax.default_backend())')
  if [[ "$backend" != gpu ]]; then
    echo "bench/gpu.sh: JAX runs on '$backend', not a GPU; use --smoke on a CPU." >&2
    exit 2
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi -L
  # 8-minute budget: the sweep stops starting cases after 300 s (each takes under a
  # minute), then is cut at 390 s; the attention check takes under a minute.
  sweep=(timeout 390 "$python" -m bench.gpu_mfu --budget_s 300)
  check=(timeout 60 "$python" -m bench.attention_check)
else
  # Tiny programs: compiling costs more than running, so LLVM skips its optimizations.
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
  sweep=("$python" -m bench.gpu_mfu --smoke)
  check=("$python" -m bench.attention_check --smoke --impl xla)
fi

status=0
echo "== MFU per attention implementation (bench/gpu_mfu.py) =="
"${sweep[@]}" --json "$out/gpu_mfu.json" || status=$?
echo "== Packed rows: fused attention vs the XLA reference (bench/attention_check.py) =="
"${check[@]}" --json "$out/attention_check.json" || status=$?
echo "== Results in $out (exit status $status) =="
exit "$status"
