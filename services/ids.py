"""Random ids for invocations and requests, without a system call for each one.

`uuid.uuid4()` reads the kernel's random source on every call, and on the event loop's thread that read gives up
the GIL: under load the loop then waits behind the threads calling Lambda to get it back, once for each id. These
ids come from a buffer of the same randomness, refilled a few hundred ids at a time.
"""

from __future__ import annotations

import os
import threading

ID_BYTES = 16
# Ids per read of the kernel's random source.
_IDS_PER_REFILL = 256

_lock = threading.Lock()
_buffer = b""
_offset = 0


def new_id() -> str:
    """128 random bits as 32 lowercase hex digits (the form of `uuid.uuid4().hex`, without its version digits)."""
    global _buffer, _offset
    with _lock:
        if _offset >= len(_buffer):
            _buffer = os.urandom(ID_BYTES * _IDS_PER_REFILL)
            _offset = 0
        start = _offset
        _offset += ID_BYTES
        return _buffer[start : start + ID_BYTES].hex()
