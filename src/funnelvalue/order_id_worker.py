"""The order-id hash, and a process that computes it for keys sent to it (order_ids.py).

Only the standard library, so that the worker starts in milliseconds (``python -I -S`` on
this file) and hashes exactly as the run's own process does: both call ``hex_prefixes``.

Protocol on stdin: two little-endian uint64 (n keys, bytes of text), n + 1 little-endian
int64 offsets, the texts' UTF-8 bytes. On stdout: n order ids of ORDER_ID_LENGTH ASCII hex
digits each, nothing between them. Anything else on stdin ends it with exit status 2.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
import sys
from array import array
from collections.abc import Iterable
from typing import BinaryIO

ORDER_ID_LENGTH = 24  # hex digits of SHA-256: 96 bits, unique per conversion in practice
HEADER = struct.Struct("<QQ")


def hex_prefixes(keys: Iterable[bytes]) -> bytes:
    """The order id of each key (its UTF-8 bytes), concatenated. Never to change: Google
    dedupes by it, and a ledger restored from a backup replays with ids computed again."""
    sha256 = hashlib.sha256
    return "".join([sha256(key).hexdigest()[:ORDER_ID_LENGTH] for key in keys]).encode("ascii")


def _exactly(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError(f"expected {size} bytes, got {len(data)}")
    return data


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    count, size = HEADER.unpack(_exactly(stdin, HEADER.size))
    offsets = array("q")
    offsets.frombytes(_exactly(stdin, 8 * (count + 1)))
    if sys.byteorder != "little":
        offsets.byteswap()
    data = _exactly(stdin, size)
    if offsets[0] != 0 or offsets[-1] != size:
        raise ValueError("offsets do not span the texts")
    stdout.write(hex_prefixes(data[a:b] for a, b in itertools.pairwise(offsets)))
    stdout.flush()


if __name__ == "__main__":
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except (EOFError, ValueError, struct.error) as exc:
        print(f"order-id worker: {exc}", file=sys.stderr)
        sys.exit(2)
