"""musicgen-melody's conditioning: a prefix of the decoder's input instead of cross-attention.

As transformers' `MusicgenMelodyForConditionalGeneration` builds its ``encoder_hidden_states``:
the chroma ``(T, 12)`` through ``audio_enc_to_dec_proj``, cycled (or cut) to ``chroma_length``
frames, then the text encoder's states through ``enc_to_dec_proj`` (where the widths differ).
The decoder reads them as its first positions, under the causal mask, before the start token.
The null conditioning of classifier-free guidance is the chroma of bin 0 alone and zeros for
the text (as many positions as the prompt's). No melody: the null chroma for both rows.

A track longer than one window follows the melody as audiocraft's demo does
(`MusicGen._generate_tokens`): each window is conditioned on the 30 s of melody from the time
the window starts, cycled where the melody is shorter. A one-window track takes the melody as
given, as transformers' `generate` does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from tunesmith.engine.melody.chroma import (
    chroma_features,
    melody_stretch,
    melody_wave,
    wave_chroma,
)
from tunesmith.engine.musicgen.model import Conditioning
from tunesmith.engine.musicgen.model.prompt import encode_prompt

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tunesmith.engine.loader import LoadedModel
    from tunesmith.engine.musicgen.model import FastDecoder
    from tunesmith.engine.parts import WindowConditioning

__all__ = ["MelodyConditioner"]


class MelodyConditioner:
    """The chroma-and-text prefix of a loaded musicgen-melody's tracks (`engine.parts.
    Conditioner`), for `FastDecoder.open`."""

    def __init__(self, decoder: FastDecoder, loaded: LoadedModel) -> None:
        self.decoder = decoder
        self.model: Any = loaded.model
        config = self.model.config
        self.chroma_length = int(config.chroma_length)
        self.num_chroma = int(config.num_chroma)
        self.extractor = loaded.processor.feature_extractor
        self.frame_rate = loaded.frame_rate

    @torch.inference_mode()
    def track(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        melody: npt.NDArray[np.float32] | None,
        sample_rate: int,
        windowed: bool,
    ) -> WindowConditioning:
        """Each window's prefix: the text encoded once, the melody's chroma per window where the
        track takes several (see the module)."""
        text = self.text(input_ids, attention_mask)
        if melody is None or not windowed:
            chroma = None
            if melody is not None:
                chroma = chroma_features(melody, sample_rate, self.extractor)
            fixed = Conditioning(prefix=self.prefix(text, chroma))
            return lambda start: fixed
        wave = melody_wave(melody, sample_rate, self.extractor)  # resampled once per track

        @torch.inference_mode()
        def window(start: int) -> Conditioning:
            stretch = melody_stretch(wave, start / self.frame_rate, self.extractor)
            return Conditioning(prefix=self.prefix(text, wave_chroma(stretch, self.extractor)))

        return window

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The prompt's text states ``(S, D)``, float32, projected to the decoder's width."""
        device = self.decoder.device
        ids, mask = input_ids.to(device), attention_mask.to(device)
        states = encode_prompt(self.model, ids, mask, torch.float32)
        self.decoder.drop_text_pages()
        return states

    def prefix(self, text: torch.Tensor, chroma: torch.Tensor | None) -> torch.Tensor:
        """``(2, chroma_length + S, D)``: [chroma, text] for the conditional row, then the null
        conditioning; `chroma` ``(1, T, 12)`` (None: no melody, the null chroma)."""
        null = torch.zeros(1, 1, self.num_chroma, device=text.device)
        null[..., 0] = 1
        given = null if chroma is None else chroma.to(text.device, torch.float32)
        conditional = torch.cat([self._spread(given), text])
        unconditional = torch.cat([self._spread(null), torch.zeros_like(text)])
        return torch.stack([conditional, unconditional])

    def _spread(self, chroma: torch.Tensor) -> torch.Tensor:
        """``(1, T, 12)`` chroma -> ``(chroma_length, D)``: projected, then cycled or cut."""
        states = chroma
        if self.num_chroma != self.decoder.hidden:
            states = self.model.audio_enc_to_dec_proj(states)
        if states.shape[1] < self.chroma_length:
            states = states.repeat(1, math.ceil(self.chroma_length / states.shape[1]), 1)
        projected: torch.Tensor = states[0, : self.chroma_length]
        return projected
