"""Procedural 64x64 pictures of one coloured shape on a plain background, with their prompts.

Grammar::

    a {size} {colour} {shape} in the {position} on a {background} background

with the shape's colour different from the background's. Everything is drawn from a seeded
``numpy`` generator, so a given seed always gives the same pictures. Shapes are anti-aliased by
4x4 supersampling; their position, size and colours get a small random jitter.

900 attribute combinations exist; a fixed, seeded list of :data:`N_HELDOUT` of them is held out of
training (:func:`heldout_specs`) and used to measure how well the model generalises.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import astuple, dataclass

import numpy as np

IMAGE_SIZE = 64
SIZES = ("small", "large")
COLORS = ("red", "green", "blue", "yellow", "white", "black")
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
ATTRIBUTES = ("color", "shape", "position", "size", "background")
ATTRIBUTE_VALUES = {
    "color": COLORS,
    "shape": SHAPES,
    "position": POSITIONS,
    "size": SIZES,
    "background": COLORS,
}

RGB = {
    "red": (215, 35, 35),
    "green": (35, 170, 55),
    "blue": (35, 65, 215),
    "yellow": (235, 210, 35),
    "white": (240, 240, 240),
    "black": (18, 18, 18),
}
# Centre of the shape, in pixels of a 64x64 picture.
CENTERS = {
    "center": (32.0, 32.0),
    "top left": (16.0, 16.0),
    "top right": (48.0, 16.0),
    "bottom left": (16.0, 48.0),
    "bottom right": (48.0, 48.0),
}
# Half extent of the shape, in pixels.
HALF_EXTENT = {"small": 6.0, "large": 12.0}

HELDOUT_SEED = 20240
N_HELDOUT = 60
SUPERSAMPLE = 4

_PROMPT_RE = re.compile(
    r"^a (?P<size>small|large) (?P<color>\w+) (?P<shape>circle|square|triangle) in the "
    r"(?P<position>center|top left|top right|bottom left|bottom right) on an? (?P<background>\w+) background$"
)


@dataclass(frozen=True, order=True)
class Spec:
    """The attributes of one picture."""

    size: str
    color: str
    shape: str
    position: str
    background: str

    def __post_init__(self) -> None:
        for name in ATTRIBUTES:
            if getattr(self, name) not in ATTRIBUTE_VALUES[name]:
                raise ValueError(f"unknown {name}: {getattr(self, name)!r}")
        if self.color == self.background:
            raise ValueError("the shape's colour must differ from the background's")

    @property
    def prompt(self) -> str:
        return (
            f"a {self.size} {self.color} {self.shape} in the {self.position} "
            f"on a {self.background} background"
        )

    def label(self) -> dict[str, int]:
        """Class index of every attribute."""
        return {name: ATTRIBUTE_VALUES[name].index(getattr(self, name)) for name in ATTRIBUTES}


def parse_prompt(prompt: str) -> Spec:
    """The :class:`Spec` a prompt of the grammar describes (ValueError otherwise)."""
    m = _PROMPT_RE.match(prompt.strip().lower())
    if m is None:
        raise ValueError(f"prompt does not follow the grammar: {prompt!r}")
    return Spec(**m.groupdict())


def all_specs() -> list[Spec]:
    """Every valid attribute combination (900), in a fixed order."""
    return [
        Spec(size, color, shape, position, background)
        for size, color, shape, position, background in itertools.product(
            SIZES, COLORS, SHAPES, POSITIONS, COLORS
        )
        if color != background
    ]


def heldout_specs() -> list[Spec]:
    """The fixed held-out combinations, never shown in training."""
    specs = all_specs()
    order = np.random.default_rng(HELDOUT_SEED).permutation(len(specs))
    return sorted(specs[i] for i in order[:N_HELDOUT])


def train_specs() -> list[Spec]:
    held = set(heldout_specs())
    return [s for s in all_specs() if s not in held]


def _coverage(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape (supersampled)."""
    n = size * SUPERSAMPLE
    t = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE
    x, y = t[None, :], t[:, None]
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= r * r
    elif shape == "square":
        h = r * 0.88  # about the same area as the circle
        inside = (np.abs(x - cx) <= h) & (np.abs(y - cy) <= h)
    elif shape == "triangle":
        top, bottom = cy - r, cy + r
        inside = (y >= top) & (y <= bottom) & (np.abs(x - cx) <= (y - top) * 0.5 * 1.1)
    else:
        raise ValueError(shape)
    inside = inside.astype(np.float32)
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def render(spec: Spec, rng: np.random.Generator | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw one picture, uint8 [size, size, 3]. With ``rng=None`` there is no jitter."""
    scale = size / IMAGE_SIZE
    cx, cy = CENTERS[spec.position]
    r = HALF_EXTENT[spec.size]
    fg = np.array(RGB[spec.color], dtype=np.float32)
    bg = np.array(RGB[spec.background], dtype=np.float32)
    if rng is not None:
        cx += rng.uniform(-3, 3)
        cy += rng.uniform(-3, 3)
        r *= rng.uniform(0.88, 1.12)
        fg = fg + rng.uniform(-15, 15, 3)
        bg = bg + rng.uniform(-15, 15, 3)
    cov = _coverage(spec.shape, cx * scale, cy * scale, r * scale, size)[..., None]
    img = bg * (1 - cov) + fg * cov
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_dataset(
    specs: list[Spec], per_spec: int, seed: int
) -> tuple[np.ndarray, list[Spec]]:
    """``per_spec`` jittered pictures of every spec: (uint8 [N, 64, 64, 3], specs in the same order)."""
    rng = np.random.default_rng(seed)
    out_specs = [s for s in specs for _ in range(per_spec)]
    images = np.stack([render(s, rng) for s in out_specs])
    return images, out_specs


def random_specs(n: int, seed: int, pool: list[Spec] | None = None) -> list[Spec]:
    """``n`` specs drawn (with replacement) from ``pool`` (all combinations by default)."""
    pool = all_specs() if pool is None else pool
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.integers(0, len(pool), n)]


def spec_tuple(spec: Spec) -> tuple[str, ...]:
    return astuple(spec)
