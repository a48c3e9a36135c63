"""Deterministic, checksummed bulk text, so a test can prove a large reply arrived intact.

The block announces its own length and sha256 in a header line; a reader recomputes both over the
payload. The payload is printable ASCII in 64-byte lines so the CLI's JSON output stays one-to-one
with the bytes produced (no escapes beyond `\\n`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

BEGIN = "SIZED-BLOCK"
END = "END-SIZED-BLOCK"
LINE_BYTES = 64

_HEADER_RE = re.compile(rf"{BEGIN} bytes=(\d+) sha256=([0-9a-f]{{64}})\n")


@lru_cache(maxsize=8)
def payload(size: int) -> str:
    """`size` bytes of ASCII: lines of a line number and hex digits, each 64 bytes with its newline."""
    lines = []
    total = 0
    number = 0
    while total < size:
        digest = hashlib.sha256(number.to_bytes(8, "big")).hexdigest()
        line = f"{number:08d} {(digest * 2)[: LINE_BYTES - 10]}\n"
        lines.append(line)
        total += len(line)
        number += 1
    return "".join(lines)[:size]


def block(size: int) -> str:
    """The payload wrapped in its self-describing header and footer."""
    body = payload(size)
    digest = hashlib.sha256(body.encode("ascii")).hexdigest()
    return f"{BEGIN} bytes={size} sha256={digest}\n{body}\n{END}"


@dataclass(frozen=True)
class BlockCheck:
    declared_bytes: int
    declared_sha256: str
    actual_bytes: int
    actual_sha256: str

    @property
    def ok(self) -> bool:
        return (self.declared_bytes, self.declared_sha256) == (self.actual_bytes, self.actual_sha256)


def check_block(text: str) -> BlockCheck:
    """Verify the first sized block found in `text`; raises ValueError if there is none."""
    match = _HEADER_RE.search(text)
    if not match:
        raise ValueError(f"no {BEGIN} header found in {len(text)} characters of text")
    size, declared = int(match.group(1)), match.group(2)
    start = match.end()
    end = text.find(f"\n{END}", start)
    body = text[start:end] if end >= 0 else text[start:]
    data = body.encode("utf-8")
    return BlockCheck(size, declared, len(data), hashlib.sha256(data).hexdigest())
