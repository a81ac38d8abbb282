"""multipart/related bodies (RFC 2387), as DICOMweb sends and answers them: parts of application/dicom files,
frames or JSON. Starlette reads only multipart/form-data, so the parts are cut here."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import Invalid

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_TYPE = re.compile(r'type="?([^";]+)"?', re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    content_type: str
    body: bytes


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart/related Content-Type; Invalid when it is not one."""
    if not content_type.lower().startswith("multipart/related"):
        raise Invalid(f"expected multipart/related; type=\"application/dicom\", got {content_type or 'nothing'!r}")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise Invalid("multipart/related without a boundary parameter")
    return match.group(1)


def root_type(content_type: str) -> str:
    """The `type` parameter of a multipart/related Content-Type ("" when absent)."""
    match = _TYPE.search(content_type)
    return match.group(1).lower() if match else ""


def split(body: bytes, boundary: str) -> list[Part]:
    """The parts of a multipart body, each with its own Content-Type (the root type's when a part has none)."""
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, separator, content = chunk.partition(b"\r\n\r\n")
        if not separator:
            head, separator, content = chunk.partition(b"\n\n")
        if not separator:
            raise Invalid("a multipart part without a blank line after its headers")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        content_type = ""
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                content_type = value.strip()
        parts.append(Part(content_type=content_type, body=content))
    if not parts:
        raise Invalid("the multipart body holds no part (is the boundary right?)")
    return parts


def join(parts: Iterable[Part]) -> tuple[bytes, str]:
    """A multipart/related body of `parts` and its boundary."""
    boundary = f"lumen-{secrets.token_hex(12)}"
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: {part.content_type}\r\n\r\n".encode("latin-1")
        out += part.body
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode("latin-1")
    return bytes(out), boundary
