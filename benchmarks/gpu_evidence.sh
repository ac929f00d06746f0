#!/usr/bin/env bash
# The first GPU evidence in about 10 minutes of one H100 (bf16, torch.compile on CUDA by train.compile: auto): the
# tokenizer pair at 32x32 with its equal-rate controls and the diffusion pair with its copies control, seed 0, through
# `pseudovideo experiment` at the gpu-10min scale of configs/experiments/{tokenizer,diffusion}-pair.yaml: the
# cpu-small models with 8x the batch (128) and more steps, the same tables (results.md, results.csv,
# differences.csv) as cpu-small. Each part runs its runs at once on the GPU (--jobs) under a time limit.
#   bash benchmarks/gpu_evidence.sh                     # tokenizers, then diffusion (<= 2 x 285 s)
#   bash benchmarks/gpu_evidence.sh tokenizers          # one part (or: diffusion, check)
#   bash benchmarks/gpu_evidence.sh check               # benchmarks/gpu_check.sh (~9 min: its own call)
#   TINY=1 bash benchmarks/gpu_evidence.sh tokenizers diffusion check   # CPU, tiny sizes: tests/test_gpu_evidence.py
# Resumable: a call finds the finished runs and skips them, and resumes interrupted ones from their newest checkpoint
# (every 250 / 300 steps), so a part cut by its time limit goes on when the same command is run again; tables are
# written when a part's runs have finished. EXTRA="train.steps=3000" trains the same runs further in a later call.
#
# How many steps fit (estimated; the H100 has not run these sizes): benchmarks/results/h100_bf16.json has the paper
# widths at batch 64, eager, launch-bound (MFU 3-5 %): C-ViViT 49 ms/step, VQVAE 37.5 ms, image UNet 57 ms. The
# gpu-10min models are 3-9x smaller in FLOPs, so their steps are launch-bound too: take <= 50 ms per step per run.
# Runs at once share the GPU; launch-bound runs mostly overlap (each keeps the GPU busy a few % of the time), but
# in the worst case they serialise: tokenizers 5 runs x 1,000 steps x 50 ms = 250 s, diffusion 4 runs x 1,500 steps
# x 40 ms = 240 s; overlapping, about a fifth of that. Compilation (~1 min, the runs at once), the feature net behind
# cfd (trained once per part on the CPU, before the runs) and evaluation (2,000 images) come on top. Hence 1,000
# tokenizer steps and 1,500 diffusion steps, and each part under a hard limit of PART_S (285) seconds, so that the
# two parts cannot overrun 10 minutes; a part cut short resumes on the next call.
#
# Env: OUT (default runs; results under $OUT/gpu_evidence), DATA (CIFAR-10 JPEG folder, default .data/cifar10-jpeg,
# unpacked from shared/data or ../shared/data when absent), PART_S, JOBS (runs at once), PYTHON, EXTRA (overrides).
set -u
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
out=${OUT:-runs}/gpu_evidence
parts=${*:-tokenizers diffusion}
part_s=${PART_S:-285}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$out"
read -r -a extra <<< "${EXTRA:-}"

if [ -n "${TINY:-}" ]; then  # CPU, tiny models on the embedded digits: the whole path in about a minute
  sizes=(train.device=cpu data.dataset=digits data.resolution=8 data.max_images=64 train.steps=2 train.batch_size=8
    train.checkpoint_every=1 train.warmup_steps=1 train.log_every=1 loss.gan_start_step=1 eval.num_images=16
    eval.batch_size=8 eval.feature_net_steps=5 "eval.cache_dir=$out/cache" model.vqvae.base_channels=8
    model.vqvae.codebook_size=16 model.vqvae.codebook_dim=4 model.cvivit.dim=16 model.cvivit.heads=2
    model.cvivit.dim_head=8 model.cvivit.spatial_depth=1 model.cvivit.temporal_depth=1 model.cvivit.codebook_size=16
    model.cvivit.codebook_dim=4 model.unet.base_channels=8 "model.unet.attention_resolutions=[4]"
    model.unet.num_heads=2 diffusion.sample_steps=2)
  jobs=${JOBS:-1}
else
  sizes=(train.device=cuda)
  jobs=${JOBS:-}
  data=${DATA:-.data/cifar10-jpeg}
  if [ ! -d "$data" ]; then
    for tarball in shared/data/cifar10-jpeg.tar.gz ../shared/data/cifar10-jpeg.tar.gz; do
      [ -f "$tarball" ] && mkdir -p .data && tar -xzf "$tarball" -C .data && break
    done
  fi
  [ -d "$data" ] || { echo "no CIFAR-10 folder at $data: unpack cifar10-jpeg.tar.gz there (see README)"; exit 2; }
  sizes+=("data.dataset=folder:$data")
  command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
fi

experiment() {  # experiment PART CONFIG RUNS_AT_ONCE: one pair at the gpu-10min scale, seed 0, under the time limit
  local part=$1 config=$2 at_once=${jobs:-$3} start; start=$(date +%s)
  echo "== $part: $config (--jobs $at_once, limit ${part_s} s)"
  timeout --kill-after=20 "$part_s" $py -m pseudovideo experiment "$config" --scale gpu-10min --only '*-s0' \
    --jobs "$at_once" --out "$out" "${sizes[@]}" "${extra[@]}" > "$out/$part.log" 2>&1
  local rc=$?
  echo "   exit $rc after $(( $(date +%s) - start )) s (log: $out/$part.log)"
  case $rc in
    0) sed -n '/^# Experiment/,/^results:/p' "$out/$part.log" | grep -v '^results:' ;;
    124|137) echo "   stopped at its time limit: run the same command again to resume it" ;;
    *) tail -3 "$out/$part.log" ;;
  esac
}

for part in $parts; do
  case $part in
    tokenizers) experiment tokenizers configs/experiments/tokenizer-pair.yaml 5 ;;
    diffusion) experiment diffusion configs/experiments/diffusion-pair.yaml 4 ;;
    check)
      if [ -n "${TINY:-}" ]; then
        echo "== check: skipped (TINY: benchmarks/gpu_check.sh needs a CUDA device)"
      else
        echo "== check: benchmarks/gpu_check.sh"
        OUT=$out bash benchmarks/gpu_check.sh
      fi ;;
    *) echo "unknown part $part: expected tokenizers, diffusion or check"; exit 2 ;;
  esac
done
echo "tables: $out/tokenizer-pair/gpu-10min/results.md, $out/diffusion-pair/gpu-10min/results.md"
