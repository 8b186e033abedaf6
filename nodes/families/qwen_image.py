"""Qwen-Image: an MMDiT over 16-channel latents packed in 2x2 patches, trained by rectified flow, conditioned
on Qwen2.5-VL's last hidden states of the prompt in its system-prompt template; true classifier-free
guidance (two network passes) with the result rescaled to the conditional prediction's norm per patch.

Each as ``QwenImagePipeline`` does it:

* text -- the prompt in the pipeline's chat template (a system turn asking for a detailed image
  description), the template's first 34 tokens dropped, the last layer's states of the real tokens
  (at most 1024);
* network -- latents [B, 16, H, W] packed into [B, H/2 * W/2, 64] and unpacked after; the timestep
  ``sigma``; the positive and negative prompts run as separate passes (each with its own length), positive
  first, so a guided batch splits by pass;
* guidance -- ``uncond + cfg * (cond - uncond)`` scaled, patch by patch, to the norm of ``cond`` (the
  pipeline's true_cfg_scale is cfg);
* VAE -- a causal 3-D VAE (one frame here) with per-channel latent mean and std: :class:`FrameVAE` gives it
  the 2-D interface the latent nodes use, so diffusion-space latents are ``(z - mean) / std``;
* schedule -- the pipeline's sigmas ``linspace(1, 1/steps, steps)``.

The released scheduler shifts by image size (``use_dynamic_shifting``): a Scheduler given the latent sizes
it as the pipeline does; ModelSamplingAuraFlow (ComfyUI's way) sets a fixed shift instead. ComfyUI's KSampler
guides Qwen-Image with plain CFG (its CFGNorm node adds the rescale); here every sampler uses the pipeline's rescaled guidance.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, LatentFormat, Parts, repeat_to

#: ComfyUI's Wan 2.1 latent preview factors (Qwen-Image's VAE is Wan's): rows the 16 channels, columns R, G, B
WAN_RGB = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)
WAN_BIAS = (-0.1835, -0.0868, -0.3360)
MAX_TOKENS = 1024
TEMPLATE = ("<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
            "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
            "<|im_start|>assistant\n")
#: tokens of the template before the prompt, which the pipeline drops from the states
TEMPLATE_TOKENS = 34
POSITIVE, NEGATIVE = 0, 1


def pack(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H/2 * W/2, C * 4]: 2x2 patches as tokens, the pipeline's layout."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = x.shape
    return x.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


class FrameVAE(torch.nn.Module):
    """Qwen-Image's 3-D VAE seen as a 2-D one (one frame) working in diffusion space: ``decode(z)`` takes
    ``(latents - mean) / std`` and ``encode(x).latent_dist.mode()`` gives it, so the latent nodes apply no
    scaling of their own (factor 1, shift 0)."""

    def __init__(self, vae: Any):
        super().__init__()
        self.inner = vae
        cfg = vae.config
        levels = len(cfg.temperal_downsample) + 1
        self.config = SimpleNamespace(latent_channels=cfg.z_dim, scaling_factor=1.0, shift_factor=0.0,
                                      block_out_channels=(cfg.base_dim,) * levels, inner=cfg)
        self.register_buffer("mean", torch.tensor(cfg.latents_mean).view(1, cfg.z_dim, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.latents_std).view(1, cfg.z_dim, 1, 1, 1), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.inner.parameters()).dtype

    def decode(self, z: torch.Tensor) -> SimpleNamespace:
        z = z.unsqueeze(2).to(self.dtype)
        z = z / (1.0 / self.std).to(z.device, z.dtype) + self.mean.to(z.device, z.dtype)  # the pipeline's order
        return SimpleNamespace(sample=self.inner.decode(z, return_dict=False)[0][:, :, 0])

    def encode(self, x: torch.Tensor) -> SimpleNamespace:
        dist = self.inner.encode(x.unsqueeze(2)).latent_dist
        mean, std = self.mean.to(x.device, x.dtype), self.std.to(x.device, x.dtype)
        mode = (dist.mode() - mean) / std
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: mode[:, :, 0]))


class QwenImage(Family):
    name = "qwen_image"
    label = "Qwen-Image"
    pipelines = ("QwenImagePipeline",)
    network_part = "transformer"
    encoder_slots = (("qwen25vl", "tokenizer", "text_encoder"),)
    latent = LatentFormat(16, 8, WAN_RGB, WAN_BIAS, packing=2)
    default_scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                         "shift": 1.0, "use_dynamic_shifting": False}
    matched_lengths = False
    comfy_multiplier = 1.0
    sigmas_for_flow_solvers = True

    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "QwenImageTransformer2DModel"

    def network_file_mismatch(self, shapes: Any, config: Any) -> str:
        """A Qwen-Image MMDiT under diffusers' own names (ComfyUI's ``qwen_image_*.safetensors``) whose widths
        and depth are the config's."""
        if "txt_norm.weight" not in shapes or "img_in.weight" not in shapes:
            return "not a Qwen-Image MMDiT (no img_in / txt_norm)"
        blocks = len({k.split(".")[1] for k in shapes if k.startswith("transformer_blocks.")})
        if blocks != config["num_layers"]:
            return f"{blocks} transformer blocks, the config has {config['num_layers']}"
        dim, head = config["num_attention_heads"] * config["attention_head_dim"], config["attention_head_dim"]
        for key, want in (("img_in.weight", (dim, config["in_channels"])),
                          ("txt_in.weight", (dim, config["joint_attention_dim"])),
                          ("transformer_blocks.0.attn.norm_q.weight", (head,))):
            if tuple(shapes.get(key, ())) != want:
                return f"{key} is {shapes.get(key)}, the config wants {want}"
        return ""

    def load_folder(self, folder, dtype):
        parts: Parts = super().load_folder(folder, dtype)
        parts.vae = FrameVAE(parts.vae)
        return parts

    # ---- text ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, clip: Any, text: str, ctx: Any = None, **options: Any):
        """As ``QwenImagePipeline.encode_prompt``: the last hidden states of the prompt's own tokens."""
        from ..types import Conditioning

        enc = self.encoder(clip, "qwen25vl")
        tok = enc.tokenizer
        prompt = TEMPLATE.format(text)
        limit = MAX_TOKENS + TEMPLATE_TOKENS
        inputs = tok(prompt, max_length=limit, padding=True, truncation=True, return_tensors="pt")
        dropped = max(0, len(tok(prompt).input_ids) - limit)
        if dropped and ctx is not None:
            ctx.warn(f"the prompt is {dropped} tokens longer than Qwen-Image's text window of {MAX_TOKENS} "
                     "tokens; those tokens were dropped, as QwenImagePipeline drops them")
        mask = inputs.attention_mask.to(clip.device)
        hidden = enc.model(input_ids=inputs.input_ids.to(clip.device), attention_mask=mask,
                           output_hidden_states=True).hidden_states[-1]
        embeds = hidden[0][mask[0].bool()][TEMPLATE_TOKENS:].unsqueeze(0)[:, :MAX_TOKENS]
        return Conditioning(embeds, text, extra={"dropped_tokens": dropped, "tokens": int(embeds.shape[1])})

    # ---- denoiser -----------------------------------------------------------------------------------
    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        """The prompt states padded to the text window, each row's token count and its pass (positive
        first, then negative, as the pipeline runs them), repeated for the latent batch."""
        n = int(cond.extra.get("tokens", cond.embeds.shape[1]))
        states = cond.embeds[:, :n]
        width = int(model.network.config.joint_attention_dim)
        if states.shape[-1] != width:
            raise NodeError(f"{what}: text states {states.shape[-1]} wide; this Qwen-Image network takes {width}")
        padded = torch.nn.functional.pad(states, (0, 0, 0, MAX_TOKENS - n))
        rows = states.shape[0]
        lengths = torch.full((rows,), n, dtype=torch.long, device=states.device)
        passes = torch.full((rows,), NEGATIVE if what == "negative" else POSITIVE, dtype=torch.long,
                            device=states.device)
        b = latent_shape[0]
        return {"txt": repeat_to(padded, b, what), "txt_lengths": repeat_to(lengths, b, what),
                "txt_pass": repeat_to(passes, b, what)}

    def network(self, model: Any):
        transformer = model.network

        def call(x: torch.Tensor, t: torch.Tensor, txt: torch.Tensor, txt_lengths: torch.Tensor,
                 txt_pass: torch.Tensor, return_dict: bool = False) -> torch.Tensor:
            h, w = x.shape[-2:]
            out = torch.empty_like(x)
            passes = txt_pass.tolist()
            for which in (POSITIVE, NEGATIVE):
                rows = [i for i, p in enumerate(passes) if p == which]
                if not rows:
                    continue
                n = int(txt_lengths[rows[0]])
                timestep = t.expand(len(rows)).to(x.dtype)
                pred = transformer(hidden_states=pack(x[rows]), timestep=timestep / 1000,
                                   encoder_hidden_states=txt[rows, :n], encoder_hidden_states_mask=None,
                                   img_shapes=[[(1, h // 2, w // 2)]] * len(rows), return_dict=False)[0]
                out[rows] = unpack(pred, h, w)
            return out

        return call

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        h, w = cond.shape[-2:]
        pos, neg = pack(cond), pack(uncond)
        comb = neg + cfg * (pos - neg)
        comb = comb * (torch.norm(pos, dim=-1, keepdim=True) / torch.norm(comb, dim=-1, keepdim=True))
        return unpack(comb, h, w)

    def pipeline_sigmas(self, steps: int) -> list[float]:
        import numpy as np

        return np.linspace(1.0, 1 / steps, steps).tolist()
