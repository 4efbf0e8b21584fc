#!/usr/bin/env bash
# Train and evaluate on THQA-NTIRE (videos from the data set's authors; labels as published).
# Needs the pretrained backbones: $THQA_SWIN_WEIGHTS / $THQA_SLOWFAST_WEIGHTS, or the hub caches.
set -euo pipefail
DATA=${DATA:-THQA-NTIRE}          # folder with train/ val/ test/ videos
LABELS=${LABELS:-../shared/thqa-ntire}
CACHE=${CACHE:-cache}

thqa extract "$LABELS/thqa_ntire_train.csv" --video-root "$DATA/train" --cache-dir "$CACHE" --workers 4
thqa extract "$LABELS/thqa_ntire_val.csv" --video-root "$DATA/val" --cache-dir "$CACHE" --workers 4
# the official val split shares one source portrait with train (see thqa.data.thqa_ntire_group);
# for a leak-free validation, hold out whole portraits of the train split instead: --val-fraction 0.15
thqa train "$LABELS/thqa_ntire_train.csv" --video-root "$DATA/train" --val "$LABELS/thqa_ntire_val.csv" \
    --val-video-root "$DATA/val" --cache-dir "$CACHE" --out runs/frozen --epochs 50
thqa evaluate --checkpoint runs/frozen/best.safetensors "$LABELS/thqa_ntire_val.csv" --video-root "$DATA/val" \
    --cache-dir "$CACHE" --plot runs/frozen/val.png --output runs/frozen/val_predictions.csv
