#!/usr/bin/env bash
# docs/RESULTS.md section 8 ("Trained long enough"): the long evidence runs of issue 21, as run.
#
#   bash benchmarks/evidence_long.sh a   # stream a: 8.1 (1,000 images), 8.2 (label noise)
#   bash benchmarks/evidence_long.sh b   # stream b: 8.1 (2,000 images), the bf16 / float32 check, 8.3 (methods)
#   bash benchmarks/evidence_long.sh c   # stream c: 8.1 (5,000 images), section 3 (CutMix on the cifar10-90 preset)
#   bash benchmarks/evidence_long.sh d   # stream d: 8.2 (20% and 80% noise on 2,000 images), 8.1 (5,000 images,
#                                        # 200 epochs)
#
# The two streams were run side by side, one torch thread each, under nice, on the 2-core machine
# (each `mixlab compare` resumes where it stopped: run the same line again after an interruption).
# Environment: MIXLAB (the command, default `mixlab`), DATA (CIFAR-10: the JPEG tarball or its
# folder, default ../shared/datasets/cifar10-jpg.tar.gz), OUT (run folders, default runs/long).
set -euo pipefail
MIXLAB=${MIXLAB:-mixlab}
DATA=${DATA:-../shared/datasets/cifar10-jpg.tar.gz}
OUT=${OUT:-runs/long}
mkdir -p "$OUT"

# airbench-cpu (widths 32/64/64) with airbench's recipe scaled to batch 128 (lr 1.5 * 128 / 1024), no label
# smoothing (so plain training can memorise: training loss -> 0), crop-and-flip, bfloat16 autocast, the
# verdict on the whole 10,000-image test set; epochs before the last scored on a fixed test subset.
COMMON=(--dataset cifar10 --data-dir "$DATA" --model airbench-cpu --batch-size 128 --lr 0.1875 --optimizer sgd
        --momentum 0.85 --weight-decay 1.33e-3 --schedule onecycle --augment crop-flip --autocast bf16
        --seeds 0,1,2 --threads 1 --quiet)

timed() {  # timed FOLDER COMMAND ARGS...: one `mixlab COMMAND` into $OUT/FOLDER, resumed if it holds an unfinished run
  local out="$OUT/$1" cmd=$2; shift 2
  local resume=()
  [ -f "$out/config.json" ] && resume=(--resume)
  echo "== $(date -u +%FT%TZ) $out (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  /usr/bin/time -f "== wall %e s, user %U s, sys %S s" nice -n 10 "$MIXLAB" "$cmd" "$@" --out "$out" "${resume[@]}"
}

run() {  # run FOLDER ARGS...: one compare with the common options
  local folder=$1; shift
  timed "$folder" compare "${COMMON[@]}" "$@"
}

case "${1:-}" in
  a)
    # 8.1 clean subsets, budgets from 10 epochs to plain training's memorising phase
    run clean-1k --train-size 1000 --epochs 10,30,100 --eval-subset 500 --mix mixup,cutmix --alpha 0.2,1
    # 8.2 label noise, one long budget (the one where plain training memorises clean 1,000 images: 8.1), 50% of
    # the labels wrong; every epoch scored on the same fixed 1,000 test images (--test-size), so best and last
    # are comparable
    run noise-1k-0.5 --train-size 1000 --label-noise 0.5 --epochs 100 --test-size 1000 --mix mixup --alpha 8,32
    ;;
  b)
    run clean-2k --train-size 2000 --epochs 10,30,100 --eval-subset 500 --mix mixup,cutmix --alpha 0.2,1
    # bfloat16 against float32: plain training at 30 epochs on 1,000 images, three seeds, float32 (the bf16
    # figures are clean-1k's baseline at 30 epochs: the same seeds, initial weights and data order)
    echo "== $(date -u +%FT%TZ) fp32-1k-e30 (load: $(cut -d' ' -f1-3 /proc/loadavg))"
    nice -n 10 "$MIXLAB" train "${COMMON[@]}" --autocast off --train-size 1000 --epochs 30 --eval-subset 500 \
      --mix none --out "$OUT/fp32-1k-e30" --overwrite
    # 8.3 which method, at the budget where plain training has converged (8.1: 100 epochs on 1,000 images); MixUp
    # and CutMix at that budget are 8.1's clean-1k (the same baseline runs: same seeds, weights, data order)
    run methods-1k --train-size 1000 --epochs 100 --eval-subset 500 --alpha 1 --mix fmix,gridmix,resizemix,tokenmix
    ;;
  c)
    run clean-5k --train-size 5000 --epochs 10,30,100 --eval-subset 500 --mix mixup,cutmix --alpha 0.2,1
    # section 3: the CutMix arm on the cifar10-90 preset, seed 0, one thread (the stream shares the machine), as a
    # single-arm `mixlab train`; its baseline is the preset's baseline run (`mixlab compare --preset cifar10-90
    # --mix mixup,cutmix --alpha 1 --threads 2`: same seed, initial weights and data order), paired on the test
    # images by: python benchmarks/results_tables.py runs C90:baseline "$OUT/c90-cutmix:cutmix"
    timed c90-cutmix train --preset cifar10-90 --data-dir "$DATA" --mix cutmix --alpha 1 --threads 1 --quiet
    ;;
  d)
    # 8.2 on 2,000 images (plain training memorises clean 2,000 images by 100 epochs: 8.1), 20% and 80% noise
    run noise-2k-0.2 --train-size 2000 --label-noise 0.2 --epochs 100 --test-size 1000 --mix mixup --alpha 8,32
    run noise-2k-0.8 --train-size 2000 --label-noise 0.8 --epochs 100 --test-size 1000 --mix mixup --alpha 8,32
    # 8.1: plain training on 5,000 images has not memorised at 100 epochs (training loss 0.21): plain training and
    # mixup at alpha 1 at 200 epochs
    run clean-5k-e200 --train-size 5000 --epochs 200 --eval-subset 500 --mix mixup --alpha 1
    ;;
  *)
    echo "usage: $0 a|b|c|d" >&2
    exit 2
    ;;
esac
