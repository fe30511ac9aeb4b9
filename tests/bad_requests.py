"""Request bodies every tier refuses with 422 naming the field: the local API, the SageMaker
container and the Lambda function all validate with `tunesmith.schema.parse_generate_request`."""

from __future__ import annotations

from typing import Any

from tunesmith.schema import MAX_PROMPT_CHARS

__all__ = ["BAD_BODIES", "MALFORMED_BODIES"]

# (JSON body, the one field the error names)
BAD_BODIES: list[tuple[dict[str, Any], str]] = [
    ({"duration": 5}, "prompt"),
    ({"prompt": "", "duration": 5}, "prompt"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1), "duration": 5}, "prompt"),
    ({"prompt": 42, "duration": 5}, "prompt"),
    ({"prompt": "a", "duration": 0}, "duration"),
    ({"prompt": "a", "duration": 3601}, "duration"),
    ({"prompt": "a", "duration": "ten"}, "duration"),
    ({"prompt": "a", "duration": "10"}, "duration"),
    ({"prompt": "a", "duration": [10]}, "duration"),
    ({"prompt": "a", "seed": -5}, "seed"),
    ({"prompt": "a", "temperature": 0}, "temperature"),
    ({"prompt": "a", "top_k": 100000}, "top_k"),
    ({"prompt": "a", "top_p": 2}, "top_p"),
    ({"prompt": "a", "guidance_scale": "high"}, "guidance_scale"),
    ({"prompt": "a", "format": "aac"}, "format"),
    ({"prompt": "a", "normalization": "x"}, "normalization"),
    ({"prompt": "a", "loudness_lufs": -80}, "loudness_lufs"),
    ({"prompt": "a", "loudness_lufs": 0}, "loudness_lufs"),
    ({"prompt": "a", "duraton": 5}, "duraton"),
]

# Raw bodies that are not a valid JSON object (the error names "body", or "duration")
MALFORMED_BODIES: list[bytes] = [
    b'{"prompt": "a", "duration": NaN}',
    b'{"prompt": "a", "duration": Infinity}',
    b"not json at all",
    b"[1, 2, 3]",
    b"",
]
