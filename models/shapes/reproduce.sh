#!/usr/bin/env bash
# Rebuild models/tiny-shapes-sd from scratch on a CPU (about 90 minutes on two cores).
# Usage: models/shapes/reproduce.sh path/to/open_clip_torch-*.whl   (or bpe_simple_vocab_16e6.txt.gz)
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=. HF_HUB_OFFLINE=1
python -m models.shapes.build_tokenizer --source "$1"
python -m models.shapes.train_vae --minutes "${VAE_MINUTES:-20}"
python -m models.shapes.train --minutes "${UNET_MINUTES:-64}"
python -m models.shapes.classifier --minutes "${CLASSIFIER_MINUTES:-3}"
python -m models.shapes.evaluate --scheduler dpmpp_2m --steps 20 --cfg 6 --seeds 0 1 2 3
