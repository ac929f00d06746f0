#!/usr/bin/env bash
# One short GPU check (at most ~9 minutes, usually less, on one H100/H200): images/s, MFU and pseudo-video builder share of every
# family's training step at the paper sizes (preset gpu: 32x32, the shipped CIFAR-10 widths), batch 128, bf16,
# eager vs torch.compile, plus the video UNet's cheaper temporal settings and channels-last for the UNets.
#   bash benchmarks/gpu_check.sh            # writes $OUT/gpu_check (or benchmarks/results/gpu_check) *.json + *.md
# Each step prints its table; a step that fails or times out is reported and the script goes on.
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
out=${OUT:-benchmarks/results}/gpu_check
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
common="--device cuda --dtype bf16 --preset gpu --batch 128 --warmup 3 --iters 5 --repeats 3 --sample-steps 5"
step() {  # step NAME SECONDS ARGS...: one bench_models.py invocation under a time limit
  local name=$1 limit=$2; shift 2
  echo "== $name"
  timeout "$limit" $py benchmarks/bench_models.py $common "$@" --out "$out/$name.json" > "$out/$name.md" 2> "$out/$name.err"
  echo "   exit $? ($(date +%T))"; sed -n '/^| model/,/^$/p' "$out/$name.md"
}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader
step eager 120 --models cvivit,video_unet,unet,vqvae
step compiled_tokenizers 150 --compile --models cvivit,vqvae
step compiled_unets_cuda_graphs 150 --compile --compile-mode reduce-overhead --models video_unet,unet
step video_unet_per_level_conv 45 --models video_unet \
  --our-override model.unet.temporal_layers=per_level --our-override model.unet.temporal_mixer=conv
step unets_channels_last 60 --channels-last --models video_unet,unet
echo "results in $out"
