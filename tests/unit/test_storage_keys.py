"""Object keys: the shape `new_key` produces and what `KEY_PATTERN` admits."""

from __future__ import annotations

import pytest

from tunesmith.storage import KEY_PATTERN, new_key

HEX = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("prefix", "extension"),
    [("music-output/", "wav"), ("", "mp3"), ("a/b.c/d_e/", "flac"), ("tracks/", "ogg")],
)
def test_new_key_shape(prefix: str, extension: str) -> None:
    key = new_key(prefix, extension)
    assert key.startswith(prefix)
    name = key[len(prefix) :]
    stem, dot, ext = name.partition(".")
    assert dot == "." and ext == extension
    assert len(stem) == 32 and set(stem) <= set("0123456789abcdef")
    assert KEY_PATTERN.fullmatch(key)


def test_new_keys_are_unique() -> None:
    keys = {new_key("music-output/", "wav") for _ in range(20_000)}
    assert len(keys) == 20_000


def test_new_keys_are_not_sequential() -> None:
    # uuid4: two consecutive keys share no long common prefix (they are not time-ordered).
    a, b = (new_key("", "wav") for _ in range(2))
    common = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))
    assert common < 8


@pytest.mark.parametrize(
    "key",
    [f"{HEX}.wav", f"music-output/{HEX}.wav", f"a/b/c/{HEX}.flac", f"x.y-z_1/{HEX}.mp3"],
)
def test_pattern_accepts(key: str) -> None:
    assert KEY_PATTERN.fullmatch(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        f"/{HEX}.wav",  # absolute
        f"/etc/{HEX}.wav",
        f"music-output//{HEX}.wav",  # empty segment
        f"music-output\\{HEX}.wav",  # backslash
        f"%2e%2e/{HEX}.wav",  # percent-encoded
        f"music output/{HEX}.wav",  # space
        f"{HEX.upper()}.wav",  # upper-case hex
        f"{HEX[:-1]}.wav",  # 31 hex digits
        f"{HEX}0.wav",  # 33 hex digits
        f"{HEX}",  # no extension
        f"{HEX}.w",  # extension too short
        f"{HEX}.wavefm",  # extension too long
        f"{HEX}.WAV",
        f"{HEX}.wav?x=1",
        f"{HEX}.wav/",
        f"{HEX}.wav\n",  # fullmatch refuses a trailing newline (plain `$` would admit it)
        f"m\u00fcsic/{HEX}.wav",  # non-ASCII
    ],
)
def test_pattern_rejects(key: str) -> None:
    assert not KEY_PATTERN.fullmatch(key)


def test_pattern_refuses_dot_segments() -> None:
    for key in (f"../{HEX}.wav", f"./{HEX}.wav", f"a/../{HEX}.wav", f".hidden/{HEX}.wav"):
        assert not KEY_PATTERN.fullmatch(key), key
    assert KEY_PATTERN.fullmatch(f"music-output/v1.2/{HEX}.wav")
