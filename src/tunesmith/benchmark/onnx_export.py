"""MusicGen's decoder as ONNX graphs, in the shape optimum exports it for ONNX Runtime.

optimum's own exporter pins transformers < 4.58, so the graphs are exported here with
`torch.onnx.export` from the loaded transformers modules (their weights and their
Linear/LayerNorm/activation modules, around the same eager attention math):

- ``prompt.onnx``: text ids and mask -> T5 -> ``enc_to_dec_proj`` -> masked -> every layer's
  cross-attention keys/values for the conditional row and the (all-zero) unconditional row,
  optimum's ``present.{i}.encoder.*``;
- ``step.onnx``: ``input_ids`` ``(rows * K, 1)``, ``encoder_attention_mask``,
  ``past_key_values.{i}.decoder.*`` (length 0 at the first step) and
  ``past_key_values.{i}.encoder.*`` -> ``logits`` and ``present.{i}.decoder.*``, optimum's
  ``decoder_with_past``;
- ``step-int8.onnx``: that through `quantize_dynamic` with its defaults, as transformers.js
  made the ``*_quantized`` files MusicGPT loads: int8 weights, one scale per tensor (not per
  channel), activations quantized to uint8 at run time.

Exports are cached under the bench cache directory, keyed by the checkpoint (path, size and
mtime of its files), torch, onnxruntime and `FORMAT`, and reused.
``python -m tunesmith.benchmark.onnx_export MODEL`` makes one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["FORMAT", "cache_path", "export", "main"]

FORMAT = 1  # bump when the graphs change, so older exports are never reused
_OPSET = 17


def cache_path(model: str, cache: Path | None = None) -> Path:
    """The export directory for checkpoint `model` under `cache` (default the bench cache)."""
    import onnxruntime

    from tunesmith.testing.random_model import cache_dir

    source = Path(model).expanduser().resolve()
    files = sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in source.iterdir() if f.is_file()
    )
    key = json.dumps([str(source), files, torch.__version__, onnxruntime.__version__, FORMAT])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return (cache or cache_dir()) / f"onnx-{source.name}-{digest}"


class _Prompt(torch.nn.Module):
    """T5, the projection and the mask, then each layer's cross-attention keys/values."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text_encoder = model.text_encoder
        self.project = model.enc_to_dec_proj if _projects(model) else torch.nn.Identity()
        self.layers = model.decoder.model.decoder.layers
        self.heads = model.decoder.config.num_attention_heads

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        hidden = self.project(hidden) * attention_mask[..., None].to(hidden.dtype)
        # the unconditional row: transformers feeds zeros for it (its mask is all zeros)
        hidden = torch.cat([hidden, torch.zeros_like(hidden)])
        out = []
        for layer in self.layers:
            attn = layer.encoder_attn
            out += [
                _heads(attn.k_proj(hidden), self.heads),
                _heads(attn.v_proj(hidden), self.heads),
            ]
        return out


def _projects(model: Any) -> bool:
    decoder = model.decoder.config
    text = model.text_encoder.config.hidden_size
    return bool(text != decoder.hidden_size and decoder.cross_attention_hidden_size is None)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, T, D)`` -> ``(B, heads, T, D / heads)``."""
    return x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def _attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    scores = torch.matmul(q, k.transpose(2, 3)) * scale
    if mask is not None:
        scores = scores + mask
    out = torch.matmul(torch.softmax(scores, dim=-1), v)  # (B, H, 1, Dh)
    return out.transpose(1, 2).reshape(q.shape[0], 1, -1)


class _Step(torch.nn.Module):
    """One decoder step with past keys/values: transformers' eager math, one position."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        causal = model.decoder
        self.decoder = causal.model.decoder
        self.heads_out = causal.lm_heads
        self.codebooks = causal.config.num_codebooks
        self.heads = causal.config.num_attention_heads

    def forward(
        self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor, *past: torch.Tensor
    ) -> list[torch.Tensor]:
        decoder = self.decoder
        codes = input_ids.reshape(-1, self.codebooks)  # (rows, K)
        x = sum(embed(codes[:, k]) for k, embed in enumerate(decoder.embed_tokens))
        assert isinstance(x, torch.Tensor)
        position = past[0].shape[2]  # the past's length: traced as a Shape, so it stays dynamic
        x = (x + decoder.embed_positions.weights[position])[:, None, :]  # (rows, 1, D)
        lowest = torch.finfo(x.dtype).min
        cross_mask = (1.0 - encoder_attention_mask[:, None, None, :].to(x.dtype)) * lowest
        presents = []
        for i, layer in enumerate(decoder.layers):
            self_k, self_v, cross_k, cross_v = past[4 * i : 4 * i + 4]
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([self_k, _heads(attn.k_proj(h), self.heads)], dim=2)
            v = torch.cat([self_v, _heads(attn.v_proj(h), self.heads)], dim=2)
            presents += [k, v]
            x = x + attn.out_proj(
                _attend(_heads(attn.q_proj(h), self.heads), k, v, None, attn.scaling)
            )
            cross = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            q = _heads(cross.q_proj(h), self.heads)
            x = x + cross.out_proj(_attend(q, cross_k, cross_v, cross_mask, cross.scaling))
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        x = decoder.layer_norm(x)
        logits = torch.stack([head(x) for head in self.heads_out], dim=1)  # (rows, K, 1, V)
        return [logits.reshape(-1, 1, logits.shape[-1]), *presents]


def _past_names(layers: int) -> list[str]:
    names = []
    for i in range(layers):
        names += [f"past_key_values.{i}.decoder.key", f"past_key_values.{i}.decoder.value"]
        names += [f"past_key_values.{i}.encoder.key", f"past_key_values.{i}.encoder.value"]
    return names


def _export_into(model_dir: str, out: Path) -> Path:
    """Export prompt.onnx, step.onnx and step-int8.onnx of `model_dir` into `out`."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import MusicgenForConditionalGeneration

    model: Any = MusicgenForConditionalGeneration.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    config = model.decoder.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    out.mkdir(parents=True, exist_ok=True)
    ids = torch.tensor([[5, 6, 7, 1]])
    mask = torch.ones_like(ids)
    encoder_kv = [f"present.{i}.encoder.{kv}" for i in range(layers) for kv in ("key", "value")]
    with torch.no_grad():
        torch.onnx.export(
            _Prompt(model),
            (ids, mask),
            str(out / "prompt.onnx"),
            dynamo=False,
            opset_version=_OPSET,
            input_names=["input_ids", "attention_mask"],
            output_names=encoder_kv,
            dynamic_axes={
                "input_ids": {1: "text"},
                "attention_mask": {1: "text"},
                **{name: {2: "text"} for name in encoder_kv},
            },
        )
        rows, text, past_len = 2, 4, 3
        past = []
        for _ in range(layers):
            past += [torch.randn(rows, heads, past_len, head_dim) for _ in range(2)]
            past += [torch.randn(rows, heads, text, head_dim) for _ in range(2)]
        step_ids = torch.zeros(rows * config.num_codebooks, 1, dtype=torch.long)
        step_mask = torch.ones(rows, text, dtype=torch.long)
        past_names = _past_names(layers)
        present = [f"present.{i}.decoder.{kv}" for i in range(layers) for kv in ("key", "value")]
        axes: dict[str, dict[int, str]] = {
            "input_ids": {0: "rows_by_codebooks"},
            "encoder_attention_mask": {0: "rows", 1: "text"},
            "logits": {0: "rows_by_codebooks"},
        }
        for name in past_names:
            axes[name] = {0: "rows", 2: "past" if ".decoder." in name else "text"}
        for name in present:
            axes[name] = {0: "rows", 2: "past_plus_one"}
        torch.onnx.export(
            _Step(model),
            (step_ids, step_mask, *past),
            str(out / "step.onnx"),
            dynamo=False,
            opset_version=_OPSET,
            input_names=["input_ids", "encoder_attention_mask", *past_names],
            output_names=["logits", *present],
            dynamic_axes=axes,
        )
    # quantize_dynamic's defaults, spelled out: what transformers.js's *_quantized files use
    quantize_dynamic(
        out / "step.onnx",
        out / "step-int8.onnx",
        weight_type=QuantType.QInt8,
        per_channel=False,
        reduce_range=False,
    )
    manifest = {
        "layers": layers,
        "heads": heads,
        "head_dim": head_dim,
        "num_codebooks": config.num_codebooks,
        "audio_channels": int(getattr(config, "audio_channels", 1)),
        "pad_token_id": config.pad_token_id,
        # transformers' fallback when the generation config names no start token
        "decoder_start_token_id": _first_set(
            model.generation_config.decoder_start_token_id,
            model.generation_config.bos_token_id,
            config.bos_token_id,
        ),
        "frame_rate": model.config.audio_encoder.frame_rate,
        "source": str(model_dir),
    }
    (out / "config.json").write_text(json.dumps(manifest, indent=1))
    return out


def _first_set(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def export(model_dir: str, cache: Path | None = None) -> tuple[Path, bool]:
    """The export of `model_dir` (made once, then reused): ``(directory, exported_now)``."""
    from tunesmith.testing.random_model import cached_checkpoint

    return cached_checkpoint(cache_path(model_dir, cache), lambda at: _export_into(model_dir, at))


def main(argv: list[str] | None = None) -> int:
    """``python -m tunesmith.benchmark.onnx_export MODEL [--cache-dir DIR]``: export once."""
    import argparse

    parser = argparse.ArgumentParser(description="Export a MusicGen checkpoint for ONNX Runtime")
    parser.add_argument("model", help="checkpoint directory")
    parser.add_argument("--cache-dir", type=Path, help="default: the bench cache directory")
    args = parser.parse_args(argv)
    directory, exported_now = export(args.model, args.cache_dir)
    print(json.dumps({"export_dir": str(directory), "exported_now": exported_now}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
