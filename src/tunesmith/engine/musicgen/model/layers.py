"""One decoder step over a batch of jobs, as TorchScript modules: each layer, then the heads.

A `Batch` is the in-flight jobs of one step as the scripted step reads them; `Stack` runs every
`Layer` and the LM heads over the batch's embedded rows. Attention and the projections run the
compiled kernels where they are available (`tunesmith.engine.kernels`), else the torch
references; the choice is made once, when the modules are built.
"""

import logging
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import torch

from tunesmith.engine.kernels.reference import attend
from tunesmith.engine.musicgen.model.cross import FoldedCross

__all__ = ["Batch", "Layer", "Stack", "script"]

log = logging.getLogger(__name__)


class Batch(NamedTuple):
    """The in-flight jobs of one step, as the TorchScript step reads them. Per job j:
    ``caches[j]`` is its ``(layers, 2, rows, H, steps + 1, hd)`` self-attention cache, ``ts[j]``
    its position, ``rows[j]`` its row count and ``cross[j]`` its ``(layers, 2, 1, H, S, hd)``
    prompt keys/values; ``stacked`` (when not None) holds every job's prompt keys/values as one
    ``(layers, 2, J, H, S, hd)`` tensor; ``cond`` indexes each job's conditional row;
    ``folded[j]`` its `FoldedCross` or None (then its row goes through the weights). A decoder
    without cross-attention (musicgen-melody) gets empty ``cross`` and ``folded``."""

    caches: list[torch.Tensor]
    ts: list[int]
    rows: list[int]
    cross: list[torch.Tensor]
    stacked: torch.Tensor | None
    cond: torch.Tensor
    folded: list[FoldedCross | None]


class Layer(torch.nn.Module):
    """One decoder layer's step for a batch of jobs (TorchScript-able: see `script`).

    ``x`` is ``(R, D)``: each job's rows, its conditional row first (see `Batch`). The layer
    norms begin the projections after them (qkv, cross_q, fc1: see
    `tunesmith.engine.musicgen.model.projections`); out and fc2 add the residual.

    `cross_norm` None: a layer without cross-attention (musicgen-melody, whose conditioning is
    a prefix of the input), and `projections` holds qkv, out, fc1 and fc2 only."""

    has_cross: Final[bool]
    cross_norm_weight: torch.Tensor
    cross_norm_bias: torch.Tensor

    def __init__(
        self,
        index: int,
        hidden: int,
        cross_norm: list[torch.Tensor] | None,
        projections: Sequence[torch.nn.Module],
        heads: int,
        compiled_attention: bool,
    ) -> None:
        super().__init__()
        self.index = index
        self.compiled_attention = compiled_attention  # tunesmith::self_/decode_attention
        self.heads = heads
        self.hidden = hidden
        self.head_dim = self.hidden // heads
        self.has_cross = cross_norm is not None
        if cross_norm is None:  # the step never reaches cross-attention: stand-ins that script
            cross_norm = [torch.empty(0), torch.empty(0)]
            qkv, out, fc1, fc2 = projections
            projections = [qkv, out, torch.nn.Identity(), torch.nn.Identity(), fc1, fc2]
        # cross-attention's layer norm, for the folded path (cross_q holds it too)
        self.register_buffer("cross_norm_weight", cross_norm[0], persistent=False)
        self.register_buffer("cross_norm_bias", cross_norm[1], persistent=False)
        # fc1 ends in the activation (see `tunesmith.engine.kernels.ACTIVATIONS`)
        self.qkv, self.out, self.cross_q, self.cross_out, self.fc1, self.fc2 = projections

    def forward(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        caches, ts, rows, prompts, stacked, cond, folded = batch
        x = self.out(self._self_attention(self.qkv(x), caches, ts, rows), x)
        if not self.has_cross:
            no_cross: torch.Tensor = self.fc2(self.fc1(x), x)
            return no_cross
        # the conditional rows attend to the prompt (one job: row 0, a view, no copy); the
        # unconditional rows attend to an all-masked prompt, which adds exactly zero
        single = len(caches) == 1
        conditional = x.narrow(0, 0, 1) if single else x.index_select(0, cond)
        crossed = self._prompt_attention(conditional, prompts, stacked, folded)
        if single:
            x.narrow(0, 0, 1).add_(crossed)
        else:
            x.index_add_(0, cond, crossed)
        out: torch.Tensor = self.fc2(self.fc1(x), x)
        return out

    def _self_attention(
        self, qkv: torch.Tensor, caches: list[torch.Tensor], ts: list[int], rows: list[int]
    ) -> torch.Tensor:
        """Each job's rows write their keys/values at its position, then attend over its own
        cache (jobs differ in length and position): with the compiled kernel, one call for the
        whole batch."""
        if self.compiled_attention:
            out: torch.Tensor = torch.ops.tunesmith.self_attention(qkv, caches, ts, self.index)
            return out
        d, heads, head_dim = self.hidden, self.heads, self.head_dim
        outputs: list[torch.Tensor] = []
        row = 0
        for j in range(len(caches)):
            n, t = rows[j], ts[j]
            cache = caches[j][self.index]
            kv = qkv[row : row + n, d:].view(n, 2, heads, head_dim)
            cache.select(3, t).copy_(kv.transpose(0, 1))  # keys and values in one copy
            outputs.append(self._attend(qkv[row : row + n, :d], cache, t + 1))
            row += n
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _cross_attention(
        self, q: torch.Tensor, prompts: list[torch.Tensor], stacked: torch.Tensor | None
    ) -> torch.Tensor:
        if stacked is not None:  # one call for the batch: its prompts share a length
            kv = stacked[self.index]
            return self._attend(q, kv, kv.shape[3])
        outputs: list[torch.Tensor] = []
        for j in range(len(prompts)):
            kv = prompts[j][self.index]
            outputs.append(self._attend(q[j : j + 1], kv, kv.shape[3]))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _prompt_attention(
        self,
        conditional: torch.Tensor,
        prompts: list[torch.Tensor],
        stacked: torch.Tensor | None,
        folded: list[FoldedCross | None],
    ) -> torch.Tensor:
        """Cross-attention of each job's conditional row (``(J, D)``, before the layer norm):
        a job with folded weights through them, always (its result must not depend on its
        batch), the others through the cross-attention weights (computed for every row when any
        job needs them)."""
        rows: list[torch.Tensor] = []
        which: list[int] = []
        for j in range(len(folded)):
            fold = folded[j]
            if fold is not None:
                rows.append(self._folded_attention(conditional[j : j + 1], fold))
                which.append(j)
        if len(rows) == len(folded):
            return rows[0] if len(rows) == 1 else torch.cat(rows)
        attended = self._cross_attention(self.cross_q(conditional), prompts, stacked)
        crossed: torch.Tensor = self.cross_out(attended)
        if len(rows) > 0:
            crossed[which] = torch.cat(rows)
        return crossed

    def _folded_attention(self, conditional: torch.Tensor, fold: FoldedCross) -> torch.Tensor:
        """One conditional row ``(1, D)`` over its prompt through `cross.fold` 's A and B."""
        a, a_scale, b, b_scale = fold
        out: torch.Tensor = torch.ops.tunesmith.folded_attention(
            conditional,
            a,
            a_scale,
            b,
            b_scale,
            self.index,
            self.heads,
            self.cross_norm_weight,
            self.cross_norm_bias,
        )
        return out

    def _attend(self, q: torch.Tensor, kv: torch.Tensor, length: int) -> torch.Tensor:
        """``q`` ``(n, D)`` over the first `length` positions of ``kv`` ``(2, n, H, T, hd)``
        -> ``(n, D)``: the compiled kernel, or torch's where it is unavailable."""
        n, heads, head_dim = q.shape[0], self.heads, self.head_dim
        if self.compiled_attention:
            query = q.view(n, heads, head_dim)
            out: torch.Tensor = torch.ops.tunesmith.decode_attention(query, kv, length)
        else:
            out = attend(q, kv, length, heads)
        return out.reshape(n, self.hidden).to(q.dtype)


class Stack(torch.nn.Module):
    """Every layer, then the LM heads (which begin with the final layer norm): embedded rows
    in, logits out."""

    def __init__(self, layers: list[Layer], heads: torch.nn.Module) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.lm_heads = heads

    def forward(self, x: torch.Tensor, batch: Batch) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, batch)
        logits: torch.Tensor = self.lm_heads(x)
        return logits


def script(module: torch.nn.Module) -> Any:
    """TorchScript `module`: the step runs without Python between its ~60 ops per layer.

    Scripted, the glue around the matmuls costs a fraction of its eager time; `torch.compile`
    compiles for far longer and runs no faster. Where scripting is unavailable the same module
    runs eagerly."""
    try:
        return torch.jit.script(module)
    except Exception as exc:  # pragma: no cover - a torch without TorchScript
        log.warning("TorchScript unavailable (%s); the decoder runs eagerly", exc)
        return module
