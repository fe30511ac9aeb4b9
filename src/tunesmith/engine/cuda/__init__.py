"""The decode step for CUDA: a static batch whose every step is one CUDA graph replay.

On a GPU the dynamic step (`tunesmith.engine.musicgen.model.decoder`) is bound by kernel launches: a
few hundred small kernels per step, each waiting on the host. Here the caches, codes, masks,
positions and sampling parameters of every request slot live in buffers allocated once
(`slots`), the step reads positions from the device and never back (`step`), sampling draws
from a counter-based hash instead of generator state (`sampling`), and the scheduler's step
decoder seats requests in slots and replays the captured graph (`stepper`).
"""

from tunesmith.engine.cuda.stepper import StaticStepper

__all__ = ["StaticStepper"]
