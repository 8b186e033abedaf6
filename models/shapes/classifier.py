"""A small CNN that reads the attributes of a procedural picture back: the judge of prompt adherence.

    python -m models.shapes.classifier --minutes 4

Trained on jittered procedural pictures of all 900 combinations, with blur, noise and slight colour
shifts so that it also reads generated pictures (which are never quite as crisp). The weights are
stored in ``models/shapes/classifier.safetensors`` (float16) with their accuracy on clean pictures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .common import log, setup_threads
from .data import ATTRIBUTE_VALUES, ATTRIBUTES, make_dataset, random_specs

WEIGHTS = Path(__file__).resolve().parent / "classifier.safetensors"
ACCURACY = Path(__file__).resolve().parent / "classifier_accuracy.json"
HEADS = {name: len(values) for name, values in ATTRIBUTE_VALUES.items()}


class ShapeClassifier(nn.Module):
    """Four conv stages (64 -> 4 pixels), a flattened feature (keeps where things are) and one head per attribute."""

    def __init__(self) -> None:
        super().__init__()
        chans = (3, 32, 48, 64, 96)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(96 * 4 * 4, 128), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({name: nn.Linear(128, n) for name, n in HEADS.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: float [B, 3, 64, 64] in 0..1. Returns logits per attribute."""
        h = self.fc(self.features(x * 2 - 1))
        return {name: head(h) for name, head in self.heads.items()}


def to_input(images) -> torch.Tensor:
    """uint8 [B,H,W,3] numpy, float [B,H,W,3] in 0..1, or a list of PIL images -> float [B,3,64,64] in 0..1."""
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
    x = torch.as_tensor(images)
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    x = x.permute(0, 3, 1, 2)
    if x.shape[-1] != 64 or x.shape[-2] != 64:
        x = F.interpolate(x, size=(64, 64), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1)


def labels_of(specs) -> dict[str, torch.Tensor]:
    return {name: torch.tensor([s.label()[name] for s in specs]) for name in ATTRIBUTES}


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    # blur 60% of the batch with a random-width gaussian
    sigma = torch.rand(b, generator=gen) * 1.6
    blur = torch.rand(b, generator=gen) < 0.6
    if blur.any():
        k = torch.arange(-3, 4, dtype=torch.float32)
        w = torch.exp(-(k[None] ** 2) / (2 * sigma[blur, None].clamp(min=0.3) ** 2))
        w = w / w.sum(1, keepdim=True)
        xb = x[blur]
        n = xb.shape[0]
        xb = xb.reshape(1, n * 3, 64, 64)
        wk = w.repeat_interleave(3, 0)
        xb = F.conv2d(F.pad(xb, (3, 3, 0, 0), mode="replicate"), wk[:, None, None, :], groups=n * 3)
        xb = F.conv2d(F.pad(xb, (0, 0, 3, 3), mode="replicate"), wk[:, None, :, None], groups=n * 3)
        x = x.clone()
        x[blur] = xb.reshape(n, 3, 64, 64)
    x = x + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.12
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.04
    return x.clamp(0, 1)


def accuracy(model: ShapeClassifier, x: torch.Tensor, labels: dict[str, torch.Tensor]) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        preds = {k: [] for k in ATTRIBUTES}
        for i in range(0, len(x), 256):
            out = model(x[i : i + 256])
            for k in ATTRIBUTES:
                preds[k].append(out[k].argmax(1))
    hits = {k: torch.cat(preds[k]) == labels[k] for k in ATTRIBUTES}
    acc = {k: v.float().mean().item() for k, v in hits.items()}
    acc["all"] = torch.stack(list(hits.values())).all(0).float().mean().item()
    return acc


def load_classifier(path: Path = WEIGHTS) -> ShapeClassifier:
    model = ShapeClassifier()
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"classifier weights do not match: missing {missing}, unexpected {unexpected}")
    return model.eval()


def clean_eval_set(n: int = 2000, seed: int = 777):
    specs = random_specs(n, seed)
    images, _ = make_dataset(specs, 1, seed=seed + 1)
    return to_input(images), labels_of(specs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-train", type=int, default=24000)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)
    specs = random_specs(args.n_train, seed=123)
    images, _ = make_dataset(specs, 1, seed=124)
    x_all, y_all = to_input(images), labels_of(specs)
    x_val, y_val = clean_eval_set()
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(5)
    start, step = time.time(), 0
    budget = args.minutes * 60
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        for g in opt.param_groups:
            g["lr"] = 2e-3 * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * frac)))
        model.train()
        idx = torch.randint(0, len(x_all), (64,), generator=gen)
        out = model(augment(x_all[idx], gen))
        loss = sum(F.cross_entropy(out[k], y_all[k][idx]) for k in ATTRIBUTES)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 200 == 0:
            log(f"step {step} loss {loss.item():.4f}")
    acc = accuracy(model, x_val, y_val)
    log(f"{step} steps; clean accuracy {acc}")
    save_file({k: v.half() for k, v in model.state_dict().items() if v.is_floating_point()}, str(args.out))
    if args.out == WEIGHTS:
        ACCURACY.write_text(json.dumps({"steps": step, "clean_accuracy_2000": acc}, indent=2) + "\n")


if __name__ == "__main__":
    main()
