"""One decode step over the static batch (`Slots`): the code a CUDA graph captures.

The same layers and projections as the dynamic step (`tunesmith.engine.musicgen.model.layers`), but
every shape is the batch's full size and every position a device tensor: each row writes its
keys and values at its own position with one indexed write per layer, and attends over the
whole window with a mask of the positions it has reached (one attention call per layer for all
requests); the conditional rows attend to their prompts, padded to the buffer and masked to
their lengths; guidance and sampling follow on the device (`tunesmith.engine.cuda.sampling`).
Nothing reads a value back to the host, so the step can be captured and replayed as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from tunesmith.engine.cuda.sampling import guide, sample

if TYPE_CHECKING:
    from tunesmith.engine.cuda.slots import Slots
    from tunesmith.engine.musicgen.model.decoder import FastDecoder

__all__ = ["static_step"]


@torch.inference_mode()
def static_step(decoder: FastDecoder, slots: Slots) -> None:
    """Advance every active slot by one position (free slots run but stay where they are)."""
    count, codebooks = slots.count, decoder.num_codebooks
    heads, head_dim, hidden = decoder.heads, decoder.head_dim, decoder.hidden
    device, t = slots.device, slots.t
    rows = 2 * count
    current = slots.tokens.gather(2, t.view(-1, 1, 1).expand(-1, codebooks, 1)).squeeze(2)
    x = decoder.embeddings[decoder._codebook_index, current].sum(dim=1)  # (B, D)
    if decoder.embed_scale != 1.0:
        x = x * decoder.embed_scale
    x = x + decoder.positions[t]
    x = x.unsqueeze(1).expand(count, 2, hidden).reshape(rows, hidden).contiguous()  # cond, uncond
    row_t = t.unsqueeze(1).expand(count, 2).reshape(rows)
    reached = torch.arange(slots.positions, device=device) <= row_t.unsqueeze(1)
    self_mask = reached.view(rows, 1, 1, slots.positions)
    prompt = torch.arange(slots.prompt_capacity, device=device)
    cross_mask = (prompt < slots.cross_length.unsqueeze(1)).view(count, 1, 1, -1)
    # the indexed write of each row's keys and values: (part, row, head) -> position t
    part = torch.arange(2, device=device).view(2, 1, 1)
    row = torch.arange(rows, device=device).view(1, rows, 1)
    head = torch.arange(heads, device=device).view(1, 1, heads)
    at = row_t.view(1, rows, 1)
    for index, layer in enumerate(decoder.layers):
        qkv = layer.qkv(x)
        query = qkv[:, :hidden].reshape(rows, heads, 1, head_dim)
        kv = qkv[:, hidden:].reshape(rows, 2, heads, head_dim).transpose(0, 1)
        cache = slots.cache[index]  # (2, rows, H, T, hd)
        cache.index_put_((part, row, head, at), kv.to(cache.dtype))
        attended = F.scaled_dot_product_attention(
            query.to(cache.dtype), cache[0], cache[1], attn_mask=self_mask
        )
        x = layer.out(attended.reshape(rows, hidden).to(x.dtype), x).contiguous()
        # only the conditional rows attend to the prompt: the unconditional ones see an
        # all-masked prompt, which adds exactly zero
        pairs = x.view(count, 2, hidden)
        conditional = pairs[:, 0].contiguous()
        cross_query = layer.cross_q(conditional).view(count, heads, 1, head_dim)
        kv_prompt = slots.cross[index]  # (2, B, H, S, hd)
        crossed = F.scaled_dot_product_attention(
            cross_query.to(kv_prompt.dtype), kv_prompt[0], kv_prompt[1], attn_mask=cross_mask
        )
        pairs[:, 0] += layer.cross_out(crossed.reshape(count, hidden).to(x.dtype).contiguous())
        x = layer.fc2(layer.fc1(x), x)
    logits = decoder.lm_heads(x).float().view(count, 2, codebooks, decoder.vocab_size)
    scores = guide(logits, slots.sampling.guidance)
    slots.scores.copy_(scores)
    position = (t + 1).clamp(max=slots.positions - 1)
    at_next = position.view(-1, 1, 1).expand(-1, codebooks, 1)

    def read(buffer: torch.Tensor) -> torch.Tensor:
        return buffer.gather(2, at_next).squeeze(2)

    picked = sample(scores, slots.sampling, position)
    picked = torch.where(slots.teach.view(-1, 1), read(slots.teacher), picked)
    # the delayed codebooks still read a known prompt's frames here
    picked = torch.where(read(slots.known), read(slots.tokens), picked)
    picked = torch.where(read(slots.keep), picked, decoder.pad_token_id)
    slots.tokens.scatter_(2, at_next, picked.unsqueeze(2))
    slots.t.copy_(torch.where(slots.active, position, t))
