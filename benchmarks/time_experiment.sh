#!/usr/bin/env bash
# Wall time of one whole experiment: the code before the overhead cut (OLD, default 077d9ce), one run after the
# other, against this tree's `--jobs 2`; and whether their results are identical.
#   bash benchmarks/time_experiment.sh EXPERIMENT [experiment arguments...]
#   bash benchmarks/time_experiment.sh markov-order                                    # whole cpu-small grid
#   bash benchmarks/time_experiment.sh markov-order --only '*-s0' train.steps=20 eval.num_images=100  # quick check
# Variants (VARIANTS, default "old-default old-1thread new-jobs"), each into a fresh folder under $OUT:
#   old-default  OLD code, one run after the other, torch's default threads (= cores): today's default command
#   old-1thread  OLD code, one run after the other, one torch thread: the thread count each --jobs 2 worker has
#                on 2 cores, so its results must equal new-jobs bit for bit (results depend on the thread count)
#   new-jobs     this tree, --jobs $JOBS (default 2)
#   new-default  this tree, one run after the other, default threads (must equal old-default bit for bit)
# The feature net behind cfd is trained once first (untimed, into $OUT/cache) and shared by every variant, so cfd
# compares across them. Run it on a quiet machine: the wall times are the measurement.
# Env: OLD, OUT (default /tmp/pv-time), JOBS, VARIANTS, PYTHON (default .venv/bin/python or python3).
set -u
cd "$(dirname "$0")/.."
experiment=${1:?usage: time_experiment.sh EXPERIMENT [experiment arguments...]}
shift
old=${OLD:-077d9ce}
out=${OUT:-/tmp/pv-time}
jobs=${JOBS:-2}
variants=${VARIANTS:-old-default old-1thread new-jobs}
py=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
config=configs/experiments/$experiment.yaml
here=$PWD
rm -rf "$out" && mkdir -p "$out/old"
git archive "$old" src | tar -x -C "$out/old"   # the old package, imported through PYTHONPATH
overrides=()
for arg in "$@"; do [[ $arg == *=* && $arg != -* ]] && overrides+=("$arg"); done
echo "machine: $(nproc) cores; $(uptime); old=$old ($(git rev-parse --short "$old")), new=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+dirty')"

echo "== feature net (untimed, shared): $out/cache"
PYTHONPATH=$here/src $py - "$config" "${overrides[@]}" "eval.cache_dir=$out/cache" <<'PY'
import sys
from pseudovideo.experiments import expand_experiment, load_experiment
from pseudovideo.experiments.scheduler import prepare_feature_nets
runs = expand_experiment(load_experiment(sys.argv[1]), "cpu-small", "/tmp/unused", sys.argv[2:])
prepare_feature_nets([run.config for run in runs], runs[0].config.eval, print)
PY

run_variant() {  # run_variant NAME ARGS...: one timed experiment into $out/NAME
  local name=$1 src=$here/src threads="" extra=()
  shift
  case $name in
    old-*) src=$out/old/src ;;
  esac
  case $name in
    *-1thread) threads=1 ;;
    new-jobs) extra=(--jobs "$jobs") ;;
  esac
  local before; before=$(cut -d' ' -f1-3 /proc/loadavg)
  local start; start=$(date +%s.%N)
  env ${threads:+OMP_NUM_THREADS=$threads} PYTHONPATH="$src" $py -m pseudovideo experiment "$config" \
    --out "$out/$name" "${extra[@]}" "$@" "eval.cache_dir=$out/cache" > "$out/$name.log" 2>&1
  local rc=$? end; end=$(date +%s.%N)
  printf "%-12s exit %s  wall %8.1f s  load before %s after %s\n" "$name" "$rc" "$(awk "BEGIN {print $end - $start}")" \
    "$before" "$(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/times.txt"
}
for variant in $variants; do
  echo "== $variant"
  run_variant "$variant" "$@"
done

echo "== wall times"
cat "$out/times.txt"
$py - "$out/times.txt" <<'PY'
import re, sys
times = {m[1]: float(m[2]) for m in re.finditer(r"^(\S+)\s+exit 0\s+wall\s+([\d.]+)", open(sys.argv[1]).read(), re.M)}
for base in ("old-default", "old-1thread", "new-default"):
    if base in times and "new-jobs" in times:
        print(f"speed-up of new-jobs over {base}: {times[base] / times['new-jobs']:.2f}x")
PY
folder() { ls -d "$out/$1"/*/cpu-small 2>/dev/null | head -1; }
echo "== identical results?"
pairs="old-1thread:new-jobs old-default:new-default"
for pair in $pairs; do
  a=${pair%%:*} b=${pair##*:}
  [ -n "$(folder "$a")" ] && [ -n "$(folder "$b")" ] || continue
  echo "$a vs $b:"
  PYTHONPATH=$here/src $py benchmarks/compare_experiment_runs.py "$(folder "$a")" "$(folder "$b")"
done
