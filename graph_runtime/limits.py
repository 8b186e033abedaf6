"""What one prompt may cost, in one place: every limit a node or the server enforces on work a small request
can ask for, refused before anything large is allocated.

Each limit has a default here and can be changed with an environment variable ``GRAPH_RUNTIME_LIMIT_<NAME>``
(e.g. ``GRAPH_RUNTIME_LIMIT_MAX_IMAGE_PIXELS=200000000``), read when the process starts; ``/system_stats``
reports the values in force (``limits``). A refusal names the node, the input and the limit.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields

ENV_PREFIX = "GRAPH_RUNTIME_LIMIT_"


@dataclass
class Limits:
    # StringFormat: the width or precision in one replacement field ({a:>300000000} would allocate 286 MiB),
    # and the length of the text one node builds.
    max_format_width: int = 10_000
    max_string_chars: int = 1_000_000
    # LoadImage and /view previews: decoded size of one frame, frames read from an animated file, and all
    # frames together (a 66 KB animated PNG can hold 200 frames of 4000x4000).
    max_image_pixels: int = 64_000_000
    max_image_frames: int = 256
    max_image_total_pixels: int = 128_000_000
    # EmptyLatent & co.: image pixels of one latent batch (width x height x batch), before the zeros are made.
    max_latent_pixels: int = 2**26
    # Sampler & co.: network evaluations x latent pixels (CFG counts twice), per device kind, before sampling
    # starts. A 512x512 SD1.5 image at 30 steps with CFG is 245,760; 8192x8192 at 1 step is 2,097,152.
    max_sampling_work_cpu: int = 2_000_000
    max_sampling_work_gpu: int = 400_000_000
    # Sampler & co.: conditioning entries (ConditioningCombine, areas, masks) both sides together; each is one
    # more network evaluation per step, counted in the sampling work too.
    max_conditioning_entries: int = 64
    # List outputs (OUTPUT_IS_LIST): items one node may return, so a node fed the list runs at most that often.
    max_list_items: int = 10_000
    # ImageUpscaleWithModel: output pixels of one batch (width x height x batch after the model's scale), before
    # the output is allocated (a 4x model on 2048x2048 is 67,108,864). Each network call sees one tile.
    max_upscale_pixels: int = 2**26

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        environ = os.environ if environ is None else environ
        limits = cls()
        for f in fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            try:
                value = int(raw.replace("_", ""))
            except ValueError:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: expected a whole number") from None
            if value < 1:
                raise ValueError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: must be at least 1")
            setattr(limits, f.name, value)
        return limits


LIMITS = Limits.from_env()
