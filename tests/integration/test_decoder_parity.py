"""tunesmith's decode loop against transformers `generate` on the same (tiny, random) weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tunesmith.benchmark.reference import compare_scores, engine_scores, reference_scores
from tunesmith.engine.kernels import build
from tunesmith.engine.loader import LoadedModel, load_model
from tunesmith.engine.musicgen.model.decoder import DecodeJob, FastDecoder
from tunesmith.engine.musicgen.model.projections import (
    FbgemmInt8Projection,
    Int4Projection,
    Int8Projection,
    Precision,
    TorchInt4Projection,
)

PROMPT = "80s pop track with bassy drums and synth"
# fewer T5 tokens (5) than the tiny model has dimensions per head (8): its cross-attention runs
# folded into its keys and values (engine.model.cross), where PROMPT's (26) reads the weights
SHORT_PROMPT = "piano"


def prompt_tokens(loaded: LoadedModel, prompt: str) -> int:
    return int(loaded.processor(text=[prompt], return_tensors="pt")["input_ids"].shape[1])


@pytest.fixture(scope="module")
def loaded(tiny_model_dir: Path) -> LoadedModel:
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.mark.parametrize(
    ("prompt", "guidance_scale"), [(PROMPT, 3.0), (PROMPT, 1.0), (SHORT_PROMPT, 3.0)]
)
def test_fp32_greedy_codes_and_logits_match_transformers(
    loaded: LoadedModel, prompt: str, guidance_scale: float
) -> None:
    frames = 60
    steps = frames + loaded.num_codebooks - 1
    reference = reference_scores(loaded.model, loaded.processor, prompt, steps, guidance_scale)
    decoder = FastDecoder(loaded.model, "fp32", loaded.device)
    # the compiled kernels are what run wherever a C compiler is
    assert all(layer.compiled_attention for layer in decoder.layers) or not shutil.which("cc")
    ours, tokens = engine_scores(decoder, loaded.processor, prompt, frames, guidance_scale)
    result = compare_scores(reference, ours)
    assert result.steps == steps
    assert result.codes_equal, result
    # equal up to float rounding: summation order differs, nothing else
    assert result.max_abs_diff <= 1e-5 * max(1.0, result.scale), result
    # and the codes really vary (a constant sequence would match trivially)
    assert len(torch.unique(tokens[0, 1 : frames + 1])) > 1


@pytest.mark.parametrize("precision", ["fp32", "int8", "int4"])
def test_a_short_prompt_folds_cross_attention_into_its_keys_and_values(
    loaded: LoadedModel, precision: Precision
) -> None:
    from tunesmith.engine.musicgen.model.sampling import SamplingParams

    decoder = FastDecoder(loaded.model, precision, loaded.device)
    if not decoder.fold_cross:
        pytest.skip("folding runs with the compiled kernels (no C compiler here)")
    assert prompt_tokens(loaded, SHORT_PROMPT) < decoder.head_dim <= prompt_tokens(loaded, PROMPT)

    def start(prompt: str) -> DecodeJob:
        inputs = loaded.processor(text=[prompt], return_tensors="pt")
        sampling = SamplingParams(greedy=True)
        return decoder.start(inputs["input_ids"], inputs["attention_mask"], 30, sampling, 0)

    assert start(PROMPT).folded is None
    folded, unfolded = start(SHORT_PROMPT), start(SHORT_PROMPT)
    assert folded.folded is not None
    unfolded.folded = None  # the same request through the cross-attention weights
    folded.scores, unfolded.scores = [], []
    for _ in range(10):
        decoder.step([folded])
        unfolded.teacher = folded.tokens  # the same codes fed to both
        decoder.step([unfolded])
    ours, theirs = torch.stack(folded.scores), torch.stack(unfolded.scores)
    assert not torch.equal(ours, theirs)  # another computation, and the same result:
    scale = float(theirs.abs().max())
    # float rounding; int8 rounds A and B; int4 rounds A and B to int8 from its 4-bit weights,
    # where the unfolded path rounds the activations to int8 per group as well
    tolerance = {"fp32": 1e-5, "int8": 0.02, "int4": 0.05}[precision]
    assert float((ours - theirs).abs().max()) <= tolerance * scale
    if precision == "fp32":
        assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_fp32_decoder_shares_the_models_weights(loaded: LoadedModel) -> None:
    decoder = FastDecoder(loaded.model, "fp32", loaded.device)
    layer = loaded.model.decoder.model.decoder.layers[0]
    fused = decoder.layers[0].qkv.weight
    assert fused is not None
    assert layer.self_attn.q_proj.weight.data_ptr() == fused.data_ptr()  # a view, no copy


Yardstick = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def yardstick(loaded: LoadedModel) -> Yardstick:
    """fp32's scores and codes for PROMPT (40 frames), and its scores for another prompt fed the
    same codes: how much a prompt moves the logits, to measure a quantized decoder's drift by."""
    exact = FastDecoder(loaded.model, "fp32", loaded.device)
    scores, tokens = engine_scores(exact, loaded.processor, PROMPT, 40, 3.0)
    other, _ = engine_scores(exact, loaded.processor, "ambient drone", 40, 3.0, teacher=tokens)
    return scores, tokens, other


@pytest.mark.parametrize("kernel", [Int8Projection, FbgemmInt8Projection])
def test_int8_stays_close_to_fp32_on_teacher_forced_steps(
    loaded: LoadedModel, yardstick: Yardstick, kernel: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = 40
    exact = FastDecoder(loaded.model, "fp32", loaded.device)
    scores, tokens, other = yardstick
    if kernel is FbgemmInt8Projection:  # what a machine without a C compiler runs
        monkeypatch.setattr(build, "library", lambda: None)
    quantized = FastDecoder(loaded.model, "int8", loaded.device)
    assert isinstance(quantized.layers[0].fc1, kernel)
    assert quantized.weight_bytes * 4 == pytest.approx(exact.weight_bytes, rel=0.01)
    forced, _ = engine_scores(quantized, loaded.processor, PROMPT, frames, 3.0, teacher=tokens)
    assert not torch.equal(scores, forced)  # it really is a different computation

    def moved(a: torch.Tensor) -> float:
        return float((a - scores).norm() / scores.norm())

    # quantization noise is a small fraction of what the prompt itself changes
    assert moved(forced) < 0.25 * moved(other), (moved(forced), moved(other))
    assert (
        compare_scores(scores, forced).top1_agreement > compare_scores(scores, other).top1_agreement
    )


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "reference"])
def test_int4_stays_near_fp32_on_teacher_forced_steps(
    loaded: LoadedModel, yardstick: Yardstick, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores, tokens, other = yardstick
    if not compiled:  # what a machine without a C compiler runs: the torch reference
        monkeypatch.setattr(build, "library", lambda: None)

    def drift(decoder: FastDecoder) -> tuple[float, float]:
        """How far its teacher-forced logits move from fp32's, against how far the prompt
        moves them; and its top-1 agreement with fp32."""
        forced, _ = engine_scores(decoder, loaded.processor, PROMPT, 40, 3.0, teacher=tokens)
        assert not torch.equal(scores, forced)  # it really is a different computation
        moved = float((forced - scores).norm() / (other - scores).norm())
        return moved, compare_scores(scores, forced).top1_agreement

    quantized = FastDecoder(loaded.model, "int4", loaded.device)
    fc1 = quantized.layers[0].fc1
    assert isinstance(fc1, Int4Projection if compiled else TorchInt4Projection)
    # the LM heads stay int8 (rounding them costs the most for the fewest bytes)
    assert isinstance(quantized.lm_heads, Int8Projection if compiled else FbgemmInt8Projection)
    assert fc1.nbytes * 16 == fc1.dense().numel() * 9  # 4.5 bits a weight (no padding here)
    # Seen (tiny random model, 4.5 bits a weight): moved 0.27, top-1 0.65 (int8: 0.02, 0.99;
    # the other prompt: 1, 0.03). Scales half again too large move it 0.61, top-1 0.31 (a
    # quarter: 0.44, 0.47); a wrong layout, > 1 and < 0.02.
    moved, top1 = drift(quantized)
    assert moved < 0.4 and top1 > 0.55, (moved, top1)
    for layer in quantized.layers:
        for module in layer.modules():
            if isinstance(module, Int4Projection):
                module.scale.mul_(1.5)
    moved, top1 = drift(quantized)
    assert moved > 0.4 and top1 < 0.55, (moved, top1)


def test_stereo_layout_matches_transformers_and_gives_two_channels(tmp_path: Path) -> None:
    from tunesmith.engine import GenerationParams, MusicGenEngine
    from tunesmith.testing.random_model import save_random_musicgen

    path = save_random_musicgen(tmp_path / "stereo", preset="tiny-stereo")
    stereo = load_model(str(path), device="cpu")
    assert (stereo.num_codebooks, stereo.audio_channels) == (8, 2)
    frames = 30
    steps = frames + 3  # pairs of codebooks share a delay: 4 delays for 8 codebooks
    reference = reference_scores(stereo.model, stereo.processor, PROMPT, steps, 3.0)
    decoder = FastDecoder(stereo.model, "fp32", stereo.device)
    ours, _ = engine_scores(decoder, stereo.processor, PROMPT, frames, 3.0)
    result = compare_scores(reference, ours)
    assert result.codes_equal and result.steps == steps, result
    engine = MusicGenEngine(str(path), "cpu")
    engine.setup()
    track = engine.generate(GenerationParams("calm piano", 1.0, seed=3))
    engine.close()
    assert track.samples.shape == (32000, 2)
    assert not (track.samples[:, 0] == track.samples[:, 1]).all()  # two different channels


def test_the_step_runs_as_torchscript_and_matches_its_eager_self(loaded: LoadedModel) -> None:
    from tunesmith.engine.musicgen.model.layers import Stack
    from tunesmith.engine.musicgen.model.sampling import SamplingParams

    decoder = FastDecoder(loaded.model, "int8", loaded.device)
    scripted = decoder._stack
    assert isinstance(scripted, torch.jit.ScriptModule)  # an eager fallback would be slow
    eager = Stack(decoder.layers, decoder.lm_heads)
    inputs = loaded.processor(text=[PROMPT], padding=True, return_tensors="pt")
    runs = []
    for stack in (scripted, eager):
        decoder._stack = stack
        job = decoder.start(
            inputs["input_ids"], inputs["attention_mask"], 20, SamplingParams(), seed=5
        )
        while not job.done:
            decoder.step([job])
        runs.append(job.tokens)
    assert torch.equal(runs[0], runs[1])
