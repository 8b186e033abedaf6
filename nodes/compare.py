"""CompareSchedulers: one prompt and seed rendered with several schedulers and step counts, as one labelled
grid image plus a table of timings (Markdown and CSV) in the output folder."""

from __future__ import annotations

import csv
import io
import time
from typing import TYPE_CHECKING, Any

from graph_runtime import Hidden, Link, Node, NodeError, NodeInputs, NodeResult, Output, Widget

from .images import save_images
from .latents import decode
from .sampling import SEED_MAX, _check_model, latent_samples, make_schedule, run_sampler

if TYPE_CHECKING:  # numpy, torch, PIL and the schedulers load when the node runs, not when it is declared
    import numpy as np
    import torch
    from PIL import Image

MIN_TILE = 128
MAX_CELLS = 400


def parse_list(text: str, what: str) -> list[str]:
    items = [p.strip() for p in (text or "").replace("\n", ",").split(",") if p.strip()]
    if not items:
        raise NodeError(f"{what}: give a comma-separated list")
    return items


def parse_schedulers(text: str) -> list[str]:
    from schedulers import registry

    names = parse_list(text, "schedulers")
    for n in names:
        if n not in registry.REGISTRY:
            raise NodeError(f"schedulers: unknown scheduler {n!r}; known: {', '.join(registry.names())}")
    return names


def parse_steps(text: str) -> list[int]:
    out = []
    for p in parse_list(text, "steps"):
        try:
            v = int(p)
        except ValueError:
            raise NodeError(f"steps: {p!r} is not a whole number") from None
        if not 1 <= v <= 1000:
            raise NodeError(f"steps: {v} is outside 1..1000")
        out.append(v)
    return out


def draw_grid(tiles: list[list[np.ndarray]], rows: list[str], cols: list[str],
              notes: list[list[str]] | None = None) -> Image.Image:
    """Tiles (uint8 [H, W, 3]) in a grid with row labels on the left, column labels on top and an optional
    note under each tile; PIL's default font."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    h, w = tiles[0][0].shape[:2]
    scale = max(1, -(-MIN_TILE // max(1, min(h, w))))
    th, tw = h * scale, w * scale
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(probe.textlength(r, font=font)) for r in rows) + 12
    line = 14
    top, note_h, pad = line + 8, (line + 4 if notes else 0), 4
    grid = Image.new("RGB", (label_w + len(cols) * (tw + pad) + pad, top + len(rows) * (th + note_h + pad) + pad),
                     "white")
    d = ImageDraw.Draw(grid)
    for j, c in enumerate(cols):
        d.text((label_w + j * (tw + pad) + pad, 4), c, fill="black", font=font)
    for i, r in enumerate(rows):
        y = top + i * (th + note_h + pad)
        d.text((4, y + th // 2 - line // 2), r, fill="black", font=font)
        for j, tile in enumerate(tiles[i]):
            x = label_w + j * (tw + pad) + pad
            img = Image.fromarray(tile)
            if scale > 1:
                img = img.resize((tw, th), Image.Resampling.NEAREST)
            grid.paste(img, (x, y))
            if notes:
                d.text((x, y + th + 2), notes[i][j], fill="black", font=font)
    return grid


def timings_markdown(rows: list[dict]) -> str:
    out = ["| scheduler | label | steps | seconds |", "|---|---|---:|---:|"]
    out += [f"| {r['scheduler']} | {r['label']} | {r['steps']} | {r['seconds']:.3f} |" for r in rows]
    return "\n".join(out) + "\n"


def timings_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["scheduler", "label", "steps", "seconds"], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "seconds": f"{r['seconds']:.4f}"})
    return buf.getvalue()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize(device)


class CompareSchedulers(Node):
    """Render one prompt and seed with a list of schedulers and step counts: a labelled grid image (rows:
    schedulers, columns: steps) and a timing table (.md and .csv next to the grid in the output folder)."""

    CATEGORY = "sampling"
    DISPLAY_NAME = "Compare Schedulers"
    OUTPUT_NODE = True

    class Inputs(NodeInputs):
        model: Any = Link("MODEL")
        positive: Any = Link("CONDITIONING")
        negative: Any = Link("CONDITIONING", optional=True)
        latent: Any = Link("LATENT")
        vae: Any = Link("VAE")
        schedulers: str = Widget("euler,dpmpp_2m,unipc", tooltip="comma-separated scheduler names")
        steps: str = Widget("10,20", tooltip="comma-separated step counts")
        seed: int = Widget(0, ge=0, le=SEED_MAX)
        cfg: float = Widget(7.5, ge=0.0, le=100.0, step=0.1, round=0.01)
        filename_prefix: str = Widget("compare/schedulers")
        prompt: Any = Hidden("PROMPT")
        extra_pnginfo: Any = Hidden("EXTRA_PNGINFO")

    OUTPUTS = (Output("IMAGE", "grid"),)

    def execute(self, inputs: Any, ctx: Any) -> NodeResult:
        import numpy as np
        import torch

        from schedulers import registry

        model = _check_model(inputs.model)
        names = parse_schedulers(inputs.schedulers)
        step_list = parse_steps(inputs.steps)
        if len(names) * len(step_list) > MAX_CELLS:
            raise NodeError(f"schedulers x steps: {len(names) * len(step_list)} images is more than {MAX_CELLS}")
        samples = latent_samples(inputs.latent, model)
        first = {"samples": samples[:1]}  # one image per cell
        total = len(names) * sum(step_list)
        done = 0
        tiles, notes, rows = [], [], []
        for name in names:
            row_tiles, row_notes = [], []
            for steps in step_list:
                schedule = make_schedule(model, name, steps, latent_shape=tuple(samples.shape))

                def progress(i, n, base=done):
                    ctx.progress(base + i, total)

                _sync(model.device)
                t0 = time.perf_counter()
                res = run_sampler(ctx, model, inputs.positive, inputs.negative, first, schedule, inputs.seed,
                                  inputs.cfg, progress=progress)
                image = decode(inputs.vae, {"samples": res.samples}, ctx)[0]
                seconds = time.perf_counter() - t0
                done += steps
                row_tiles.append((image.clamp(0, 1).numpy() * 255).round().astype(np.uint8))
                row_notes.append(f"{seconds:.2f} s")
                rows.append({"scheduler": name, "label": registry.get(name).label, "steps": steps,
                             "seconds": seconds})
            tiles.append(row_tiles)
            notes.append(row_notes)
        grid = draw_grid(tiles, [registry.get(n).label for n in names], [f"{s} steps" for s in step_list], notes)
        grid_t = torch.from_numpy(np.asarray(grid, dtype=np.float32) / 255.0)[None]
        saved = save_images(grid_t, ctx.paths.output, inputs.filename_prefix, kind="output", prompt=inputs.prompt,
                            extra_pnginfo=inputs.extra_pnginfo)
        stem = ctx.paths.output.resolve() / saved[0]["subfolder"] / saved[0]["filename"].removesuffix(".png")
        md, table = stem.with_suffix(".md"), timings_markdown(rows)
        md.write_text(table)
        stem.with_suffix(".csv").write_text(timings_csv(rows))
        return NodeResult(outputs=(grid_t,), ui={"images": saved, "text": [table],
                                                 "tables": [{"markdown": md.name, "csv": md.with_suffix(".csv").name}]})
