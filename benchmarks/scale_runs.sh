#!/usr/bin/env bash
# The GPU-scale comparisons of the closing notes: image model vs video counterpart on CIFAR-10 32x32,
# trained concurrently on one GPU (so images/s per run are shared-GPU figures; see bench_models.py
# for standalone throughput).  Usage: benchmarks/scale_runs.sh CIFAR_FOLDER OUT_DIR [STEPS]
set -u
data=$1; out=$2; steps=${3:-2000}
py=${PYTHON:-python3}
common="data.dataset=folder:$data data.resolution=32 out_dir=$out train.device=${DEVICE:-cuda} train.progress=false ${EXTRA:-}
 train.steps=$steps train.batch_size=64 train.warmup_steps=100 train.checkpoint_every=$steps train.image_every=$steps
 train.log_every=50 train.lr=5e-4 train.ema_decay=0.999 eval.metrics=[psnr,ssim,swd,lpips,fid,kid]"
cvivit="model.cvivit.dim=192 model.cvivit.spatial_depth=3 model.cvivit.temporal_depth=3 model.cvivit.heads=6"
unet="model.unet.base_channels=64 model.unet.channel_mult=[1,2,2] model.unet.num_res_blocks=2
 model.unet.attention_resolutions=[16] diffusion.sample_steps=50"
run() { name=$1; shift; $py -m pseudovideo train "$@" $common name=$name > "$out/$name.log" 2>&1; echo "$name exit $?"; }
mkdir -p "$out"
run vqvae -c configs/cifar10_vqvae.yaml model.vqvae.base_channels=80 eval.num_images=2000 &
run cvivit_T4 -c configs/cifar10_cvivit.yaml $cvivit pseudo_video.num_frames=4 eval.num_images=2000 &
run cvivit_T8 -c configs/cifar10_cvivit.yaml $cvivit pseudo_video.num_frames=8 eval.num_images=2000 &
run ddpm -c configs/cifar10_ddpm.yaml $unet eval.num_images=1000 &
run video_T4_first -c configs/cifar10_video_diffusion.yaml $unet pseudo_video.construction=first_order eval.num_images=1000 &
run video_T4_higher -c configs/cifar10_video_diffusion.yaml $unet pseudo_video.construction=higher_order eval.num_images=1000 &
wait
# One JSON of every run's evaluation (metrics, protocol, training summary) and a comparison table.
$py - "$out" <<'PY'
import json, sys
from pathlib import Path
from pseudovideo.demo import compare_runs
out = Path(sys.argv[1])
results = [json.loads(p.read_text()) for p in sorted(out.glob("*/eval.json"))]
(out / "summary.json").write_text(json.dumps(results, indent=1))
print(compare_runs(results))
PY
