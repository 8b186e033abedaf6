"""Z-Image (Turbo and base): a single-stream DiT (S3-DiT) over the Flux VAE's 16-channel latents, trained by
rectified flow, conditioned on Qwen3's second-to-last hidden states of the prompt in its chat template.

What differs from the other flow families, each as ``ZImagePipeline`` does it:

* text -- the prompt as one user turn of Qwen3's chat template (generation prompt added, thinking left
  on), padded to 512 tokens, and only the real tokens' states kept: each prompt has its own length, so
  positive and negative are not evened out (:attr:`matched_lengths`) but padded for batching and cut back
  to their own tokens in the network call;
* network -- it takes a list of [C, 1, H, W] latents, the timestep ``1 - sigma`` and a list of caption
  states, and predicts ``x0 - noise`` (the negated velocity);
* guidance -- ``cond + (cfg - 1) * (cond - uncond)`` (the pipeline's ``guidance_scale`` is ``cfg - 1``, so
  Turbo's ``guidance_scale=0`` is cfg 1);
* schedule -- the pipeline's own sigmas ``linspace(1, 1/steps, steps)`` (shifted by the scheduler) where the
  scheduler takes custom sigmas; ComfyUI's "simple" schedule gives the same spacing.

Turbo and base share the architecture (identical tensor shapes); they differ in steps and guidance only.
In ComfyUI the network takes the noise level itself as its timestep (multiplier 1, set with
ModelSamplingAuraFlow); here the network call converts from the flow timestep ``sigma * 1000``.
"""

from __future__ import annotations

from typing import Any

import torch

from graph_runtime import NodeError

from .base import Family, LatentFormat, repeat_to

#: ComfyUI's Flux latent preview factors (rows: the 16 channels; columns: R, G, B) and bias (Z-Image uses the
#: Flux VAE)
FLUX_RGB = (
    (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
)
FLUX_BIAS = (-0.0329, -0.0718, -0.0851)
#: the pipeline's max_sequence_length: the chat-formatted prompt is padded (and truncated) to this many tokens
MAX_TOKENS = 512
#: one user turn of Qwen3's chat template with the assistant's turn opened (what the template renders for
#: add_generation_prompt with thinking on), for a tokenizer that brings no chat template of its own
CHAT_TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


class ZImage(Family):
    name = "z_image"
    label = "Z-Image"
    pipelines = ("ZImagePipeline",)
    network_part = "transformer"
    encoder_slots = (("qwen3", "tokenizer", "text_encoder"),)
    latent = LatentFormat(16, 8, FLUX_RGB, FLUX_BIAS)
    default_scheduler = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
                         "use_dynamic_shifting": False, "shift": 3.0}
    matched_lengths = False
    comfy_multiplier = 1.0
    sigmas_for_flow_solvers = True

    # ---- recognise ----------------------------------------------------------------------------------
    def matches_network_config(self, config: Any) -> bool:
        return config.get("_class_name") == "ZImageTransformer2DModel"

    def network_file_mismatch(self, shapes: Any, config: Any) -> str:
        """An S3-DiT in the original layout (fused ``attention.qkv``; with or without
        ``model.diffusion_model.``) whose widths and depths are the config's."""
        inner = {k.removeprefix("model.diffusion_model."): v for k, v in shapes.items()}
        if "cap_embedder.1.weight" not in inner or not any(".attention.qkv." in k for k in inner):
            return "not a Z-Image S3-DiT (no cap_embedder / fused attention.qkv)"
        dim, patch = config["dim"], config["all_patch_size"][0] * config["all_f_patch_size"][0]
        for prefix, want in (("layers.", config["n_layers"]), ("noise_refiner.", config["n_refiner_layers"]),
                             ("context_refiner.", config["n_refiner_layers"])):
            have = len({k.split(".")[1] for k in inner if k.startswith(prefix)})
            if have != want:
                return f"{have} blocks in {prefix}*, the config has {want}"
        checks = (("x_embedder.weight", (dim, patch * config["all_patch_size"][0] * config["in_channels"])),
                  ("cap_embedder.1.weight", (dim, config["cap_feat_dim"])),
                  ("layers.0.attention.qkv.weight", (3 * dim, dim)),
                  ("layers.0.attention.q_norm.weight", (dim // config["n_heads"],)))
        for key, want in checks:
            if tuple(inner.get(key, ())) != want:
                return f"{key} is {inner.get(key)}, the config wants {want}"
        return ""

    # ---- text ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, clip: Any, text: str, ctx: Any = None, **options: Any):
        """As ``ZImagePipeline.encode_prompt``: Qwen3's states at the second-to-last layer (CLIPSetLastLayer
        -n takes n layers further back) of the chat-formatted prompt, real tokens only ([1, tokens, width])."""
        from ..types import Conditioning

        enc = self.encoder(clip, "qwen3")
        model_type = getattr(enc.model.config, "model_type", "")
        if model_type != "qwen3":
            raise NodeError(f"clip: a Z-Image CLIP needs a Qwen3 text encoder; this one is {model_type or 'unknown'}")
        tok = enc.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True, enable_thinking=True)
        else:
            prompt = CHAT_TEMPLATE.format(text)
        inputs = tok(prompt, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        dropped = max(0, len(tok(prompt).input_ids) - MAX_TOKENS)
        if dropped and ctx is not None:
            ctx.warn(f"the prompt is {dropped} tokens longer than Z-Image's text window of {MAX_TOKENS} tokens "
                     "(chat template included); those tokens were dropped, as ZImagePipeline drops them")
        layer = -2 if clip.last_layer is None else clip.last_layer - 1
        n_layers = int(enc.model.config.num_hidden_layers)
        if -layer > n_layers + 1:
            raise NodeError(f"clip: CLIPSetLastLayer {clip.last_layer} reaches past the text encoder's "
                            f"{n_layers} layers")
        mask = inputs.attention_mask.to(clip.device).bool()
        hidden = enc.model(input_ids=inputs.input_ids.to(clip.device), attention_mask=mask,
                           output_hidden_states=True).hidden_states[layer]
        embeds = hidden[0][mask[0]].unsqueeze(0)
        return Conditioning(embeds, text, extra={"dropped_tokens": dropped, "tokens": int(embeds.shape[1])})

    # ---- denoiser -----------------------------------------------------------------------------------
    def network_inputs(self, model: Any, cond: Any, latent_shape: tuple[int, ...], what: str) -> dict:
        """The caption states padded to the text window (so positive and negative batch for guidance) and
        each row's own token count, repeated for the latent batch."""
        n = int(cond.extra.get("tokens", cond.embeds.shape[1]))
        states = cond.embeds[:, :n]
        if n > MAX_TOKENS:
            raise NodeError(f"{what}: {n} caption tokens, more than Z-Image's {MAX_TOKENS}")
        width = int(model.network.config.cap_feat_dim)
        if states.shape[-1] != width:
            raise NodeError(f"{what}: text states {states.shape[-1]} wide; this Z-Image network takes "
                            f"{width} (a Qwen3 of its size)")
        padded = torch.nn.functional.pad(states, (0, 0, 0, MAX_TOKENS - n))
        lengths = torch.full((states.shape[0],), n, dtype=torch.long, device=states.device)
        b = latent_shape[0]
        return {"cap_feats": repeat_to(padded, b, what), "cap_lengths": repeat_to(lengths, b, what)}

    def network(self, model: Any):
        transformer = model.network

        def call(x: torch.Tensor, t: torch.Tensor, cap_feats: torch.Tensor, cap_lengths: torch.Tensor,
                 return_dict: bool = False) -> torch.Tensor:
            timestep = (1000 - t.expand(x.shape[0])) / 1000
            captions = [cap_feats[i, :n] for i, n in enumerate(cap_lengths.tolist())]
            out = transformer(list(x.unsqueeze(2).unbind(0)), timestep, captions, return_dict=False)[0]
            return -torch.stack([o.float() for o in out]).squeeze(2)

        return call

    def guide(self, uncond: torch.Tensor, cond: torch.Tensor, cfg: float) -> torch.Tensor:
        return cond + (cfg - 1) * (cond - uncond)

    # ---- model sampling -----------------------------------------------------------------------------
    def pipeline_sigmas(self, steps: int) -> list[float]:
        return torch.linspace(1.0, 1 / steps, steps).tolist()
