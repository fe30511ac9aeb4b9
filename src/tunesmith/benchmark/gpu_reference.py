"""``scripts/gpu-check``'s transformers side: the fp32 reference every check is held to, its own
half-precision decoders teacher-forced (the noise floor of half precision), and its speed."""

from __future__ import annotations

import copy
import math
import time
from typing import Any

from tunesmith.benchmark.gpu_state import GUIDANCE, PROMPT, GpuState, say

__all__ = ["ReferenceRuns"]


class ReferenceRuns(GpuState):
    """The steps that run transformers."""

    def run_reference(self) -> None:
        from tunesmith.benchmark.reference import compare_scores, reference_scores
        from tunesmith.engine.loader import load_model

        torch = self.torch
        start = time.perf_counter()
        loaded = load_model(self.model_dir, self.args.device)
        self.load_seconds = time.perf_counter() - start
        model, self.processor = loaded.model, loaded.processor
        self.reference_model = model
        stereo = loaded.audio_channels == 2
        delays = [k // 2 if stereo else k for k in range(loaded.num_codebooks)]
        self.frames = math.ceil(self.args.duration * loaded.frame_rate)
        self.steps = self.frames + max(delays)
        self.figures |= {"steps": self.steps, "frames": self.frames}
        reference_scores(model, self.processor, PROMPT, 4, GUIDANCE)  # warm-up
        start = self.now()
        scores = reference_scores(model, self.processor, PROMPT, self.steps, GUIDANCE)
        seconds = self.now() - start
        if not bool(torch.isfinite(scores).all()):
            raise RuntimeError("transformers' own fp32 scores are not finite: nothing to compare")
        self.reference = scores
        self.ms_step["transformers fp32"] = 1000 * seconds / self.steps
        # the reference's own greedy codes, as the engine's tokens hold them: (K, steps + 1),
        # the padding token where the delay pattern holds a codebook back
        pad = int(model.decoder.config.pad_token_id)
        positions = torch.arange(self.steps + 1)[None, :]
        delay = torch.tensor(delays)[:, None]
        keep = (positions > delay) & (positions <= delay + self.frames)
        codes = torch.cat([torch.full((len(delays), 1), pad), scores.argmax(-1).T], dim=1)
        self.teacher = torch.where(keep, codes, pad)
        # the teacher-forced forward, checked against generate at fp32 before it serves as
        # the half-precision noise floor
        forced = compare_scores(scores, self.forced_scores(model, torch.float32))
        self.figures["reference"] = {
            "load_seconds": self.load_seconds,
            "greedy_seconds": seconds,
            "ms_per_step": self.ms_step["transformers fp32"],
            "forced_forward_vs_generate": forced.as_dict(),
        }
        say(
            f"transformers fp32 reference: {self.steps} steps greedy in {seconds:.1f} s "
            f"({self.ms_step['transformers fp32']:.1f} ms/step); its teacher-forced forward "
            f"matches its generate to {forced.max_abs_diff / forced.scale:.1e} x scale"
        )

    def forced_scores(self, model: Any, dtype: Any) -> Any:
        """transformers' decoder (in `dtype`; text encoder fp32, as the engine runs it) over the
        teacher codes in one forward pass: guided scores ``(steps, K, V)``, as `generate` would
        score them (the unconditional row sees a zero, fully masked prompt, as in generate)."""
        torch = self.torch
        inputs = self.processor(text=[PROMPT], padding=True, return_tensors="pt")
        ids, mask = inputs["input_ids"].to(self.device), inputs["attention_mask"].to(self.device)
        codes = self.teacher[:, : self.steps].to(self.device)
        with torch.inference_mode():
            encoded = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            encoded = encoded.to(dtype)
            out = model(
                encoder_outputs=(torch.cat([encoded, torch.zeros_like(encoded)]),),
                attention_mask=torch.cat([mask, torch.zeros_like(mask)]),
                decoder_input_ids=torch.cat([codes, codes]),
            )
        logits = out.logits.float().view(2, codes.shape[0], self.steps, -1)
        guided = logits[1] + (logits[0] - logits[1]) * GUIDANCE
        return guided.transpose(0, 1).cpu()

    def half_copy(self, dtype: Any, whole: bool) -> Any:
        """A copy of the reference model with its decoder (or, `whole`, everything) in `dtype`."""
        model = copy.deepcopy(self.reference_model)
        if whole:
            return model.to(dtype)
        model.decoder.to(dtype)
        if getattr(model, "enc_to_dec_proj", None) is not None:
            model.enc_to_dec_proj.to(dtype)
        return model

    def baseline(self, name: str) -> None:
        from tunesmith.benchmark.reference import compare_scores

        dtype = {"fp16": self.torch.float16, "bf16": self.torch.bfloat16}[name]
        model = self.half_copy(dtype, whole=False)
        result = compare_scores(self.reference, self.forced_scores(model, dtype))
        del model
        self.free_memory()
        self.baselines[name] = result
        say(
            f"transformers {name} decoder, teacher-forced: top-1 agreement "
            f"{result.top1_agreement:.2%}, max |logit diff| "
            f"{result.max_abs_diff / result.scale:.1e} x scale"
        )

    def transformers_speed(self, name: str) -> None:
        torch = self.torch
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[name]
        model = self.reference_model if name == "fp32" else self.half_copy(dtype, whole=True)
        inputs = self.processor(text=[f"{PROMPT}, take 0"], padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        sampling = {"do_sample": True, "top_k": 250, "guidance_scale": GUIDANCE}
        with torch.inference_mode():
            if name != "fp32":  # warm-up (the fp32 model warmed up with the reference)
                model.generate(**inputs, **sampling, max_new_tokens=4)
            torch.manual_seed(0)
            start = self.now()
            audio = model.generate(**inputs, **sampling, max_new_tokens=self.steps)
            seconds = self.now() - start
        finite = bool(torch.isfinite(audio).all())
        audio_seconds = audio.shape[-1] / self.reference_model.config.audio_encoder.sampling_rate
        if name != "fp32":
            del model
            self.free_memory()
        result = {
            "requests": 1,
            "steps": self.steps,
            "seconds": seconds,
            "steps_per_second": self.steps / seconds,
            "ms_per_step": 1000 * seconds / self.steps,
            "request_steps_per_second": self.steps / seconds,
            "end_to_end_request_steps_per_second": self.steps / seconds,
            "realtime": audio_seconds / seconds,
            "audio_finite": finite,
        }
        self.ms_step[f"transformers {name}"] = result["ms_per_step"]
        self.speed[f"transformers {name} x1"] = result
        self.relate()
        say(
            f"transformers {name}, 1 request sampled: {result['steps_per_second']:.1f} steps/s "
            f"({result['ms_per_step']:.1f} ms/step, its EnCodec decode included)"
        )
