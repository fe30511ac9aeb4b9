"""Prompt encoding: the text encoder once per request, then each layer's cross-attention keys
and values over the prompt (what every later step of that request attends to)."""

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["encode_prompt", "prompt_keys_values"]


def encode_prompt(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """One tokenized prompt through `model`'s text encoder (and its projection to the decoder's
    width, where the two differ): ``(S, D)`` in `dtype`, the padding left out."""
    encoded = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
    if getattr(model, "enc_to_dec_proj", None) is not None and (
        model.text_encoder.config.hidden_size != model.decoder.config.hidden_size
    ):
        encoded = model.enc_to_dec_proj(encoded)
    keep = attention_mask[0].bool()
    prompt: torch.Tensor = encoded[0, keep].to(dtype)
    return prompt


def prompt_keys_values(
    encoded: torch.Tensor,
    projections: list[tuple[Callable[[torch.Tensor], torch.Tensor], ...]],
    heads: int,
) -> torch.Tensor:
    """Each layer's cross-attention keys and values over `encoded` ``(S, D)``, through its
    ``k_proj`` and ``v_proj`` (a pair of functions per layer): ``(layers, 2, 1, H, S, hd)``."""
    shape = (1, -1, heads, encoded.shape[1] // heads)
    return torch.stack(
        [
            torch.stack([project(encoded).view(shape).transpose(1, 2) for project in pair])
            for pair in projections
        ]
    )
