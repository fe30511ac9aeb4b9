"""multipart/form-data parsing: what every tier reads out of a form."""

import pytest

from tunesmith.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from tunesmith.uploads import parse_form, parse_generate_form

BOUNDARY = "b0undary"
TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(*parts: tuple[str, bytes, str | None]) -> bytes:
    out = b""
    for name, data, filename in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def test_fields_and_files_are_read_byte_exact() -> None:
    audio = bytes(range(256)) * 4 + b"\r\n--b0und"  # binary, with CRLF and a boundary prefix
    form = parse_form(
        body(("prompt", "piano ☔".encode(), None), ("input_audio", audio, "a.wav")), TYPE
    )
    assert form.fields == {"prompt": "piano ☔"}
    assert form.files == {"input_audio": audio}


def test_form_values_are_converted_to_the_fields_types() -> None:
    raw = body(("prompt", b"x", None), ("duration", b"12.5", None), ("seed", b"7", None))
    request, files = parse_generate_form(raw, TYPE, max_duration=300, max_upload_bytes=1024)
    assert (request.duration, request.seed, files) == (12.5, 7, {})


def test_an_empty_optional_field_is_not_given() -> None:
    # an HTML form sends every input, filled or not; a form cannot say null
    raw = body(("prompt", b"x", None), ("seed", b"", None), ("continuation_end", b" ", None))
    request, _ = parse_generate_form(raw, TYPE, max_duration=300, max_upload_bytes=1024)
    assert (request.seed, request.continuation_end, request.duration) == (None, None, 10.0)
    with pytest.raises(InvalidRequest) as refused:  # the prompt is required all the same
        parse_generate_form(body(("prompt", b"", None)), TYPE, max_duration=300, max_upload_bytes=1)
    assert [f.field for f in refused.value.fields] == ["prompt"]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (body(("prompt", b"x", None), ("prompt", b"y", None)), "prompt"),
        (body(("prompt", b"\xff\xfe", None)), "prompt"),
        (body(("prompt", b"x", None), ("seed", b"1.5", None)), "seed"),
        (body(("prompt", b"x", None), ("input_audio", b"", "a.wav")), "input_audio"),
        (b"--b0undary\r\nno headers here", "body"),
    ],
)
def test_bad_forms_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_generate_form(raw, TYPE, max_duration=300, max_upload_bytes=1024)
    assert [f.field for f in caught.value.fields] == [field]


def test_upload_over_the_cap_is_a_413_naming_it() -> None:
    raw = body(("prompt", b"x", None), ("melody", b"\x00" * 2048, "m.wav"))
    with pytest.raises(PayloadTooLarge) as caught:
        parse_generate_form(raw, TYPE, max_duration=300, max_upload_bytes=1024)
    assert caught.value.status == 413 and caught.value.fields[0].field == "melody"


def test_a_form_without_a_boundary_is_refused() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_form(b"", "multipart/form-data")
