#!/usr/bin/env bash
# Rebuild models/tiny-shapes-sd from scratch on a CPU (about two hours on two cores).
# Usage: models/shapes/reproduce.sh path/to/open_clip_torch-*.whl   (or bpe_simple_vocab_16e6.txt.gz)
# Each stage trains for a time budget, so step counts (and results) depend on the machine's speed.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=. HF_HUB_OFFLINE=1
WORK=build/tiny-shapes
python -m models.shapes.build_tokenizer --source "$1"
python -m models.shapes.train_vae --minutes "${VAE_MINUTES:-20}" --crop-fraction 0.85
# UNet + text encoder on one core; once the latents are encoded, the decoder trains on the other.
python -m models.shapes.train --minutes "${UNET_MINUTES:-64}" &
UNET=$!
while [ ! -f "$WORK/latents.pt" ]; do sleep 5; done
python -m models.shapes.finetune_decoder --minutes "${DECODER_MINUTES:-62}"
wait "$UNET"
# then more UNet steps on the freed cores: resume the checkpoint with a larger budget
python -m models.shapes.train --minutes "${UNET_TOTAL_MINUTES:-95}"
python -m models.shapes.export
python -m models.shapes.classifier --minutes "${CLASSIFIER_MINUTES:-4}"
python -m models.shapes.evaluate --scheduler dpmpp_2m --steps 20 --cfg 6 --seeds 0 1 2 3
