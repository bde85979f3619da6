"""Order ids: what Google dedupes an offline conversion by, a hash of its key (no PII, the
same on every replay). ``order_ids`` computes them here; ``order_ids_ahead`` has a worker
process compute them while the caller goes on.

Hashing is per key in Python and holds the GIL: 0.45 s for 900k keys, a thread would only
take turns with the build. A worker process on another core does it while the build runs
its checks (a first run of 900k conversions: the 0.45 s go from the run's critical path).
The worker runs the same function (order_id_worker.hex_prefixes), and its answer is used
only when it is exactly n ids of hex digits; anything else (no second core, no Python to
start, a crash) and the ids are computed here, as before. Same ids either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from funnelvalue.frames import TEXT, arrow_text, value_offsets
from funnelvalue.order_id_worker import HEADER, ORDER_ID_LENGTH, hex_prefixes

log = logging.getLogger(__name__)

AHEAD_FROM = 50_000  # keys: below this, starting a process costs more than hashing here
WORKER_TIMEOUT = 120.0  # seconds to wait for the worker before hashing here instead
WORKER = Path(__file__).with_name("order_id_worker.py")
HEX_DIGITS = b"0123456789abcdef"
CGROUP_ROOT = Path("/sys/fs/cgroup")  # cgroup v2; cpu.max: "<quota> <period>" or "max <period>"
PROC_CGROUP = Path("/proc/self/cgroup")


def order_ids(keys: pd.Series) -> pd.Series:
    """The order id of each key, computed in this process."""
    return _id_series(hex_prefixes(_binary(keys).to_pylist()), keys.index)


class OrderIdsAhead:
    """The order ids of ``keys``, being computed by a worker process; ``result`` waits for
    them (or computes them here if the worker did not deliver)."""

    def __init__(self, keys: pd.Series, worker: subprocess.Popen[bytes] | None) -> None:
        self._texts = _binary(keys)  # the keys' bytes (no copy of Arrow text), not the keys
        self._index = keys.index
        self._worker = worker
        self._answer: bytes | None = None
        self._thread: threading.Thread | None = None
        if worker is not None:
            self._thread = threading.Thread(
                target=self._exchange, args=(worker, self._texts), name="funnelvalue-order-ids"
            )
            self._thread.daemon = True  # never keeps a stopped run's process alive
            self._thread.start()

    def _exchange(self, worker: subprocess.Popen[bytes], texts: pa.LargeBinaryArray) -> None:
        """Send the keys, read the ids and check them, all off the caller's thread (the
        pipe's reads and writes release the GIL)."""
        assert worker.stdin is not None
        assert worker.stdout is not None
        try:
            for part in request(texts):
                worker.stdin.write(part)
            worker.stdin.close()
            answer = worker.stdout.read()
            worker.wait()
        except (OSError, ValueError):  # ValueError: a pipe closed by result() giving up
            return
        finally:
            _close(worker)
        if worker.returncode != 0:
            log.debug("order-id worker exited with %s: hashing here", worker.returncode)
        elif len(answer) != ORDER_ID_LENGTH * len(texts) or answer.strip(HEX_DIGITS):
            log.debug("order-id worker's answer is not %d ids: hashing here", len(texts))
        else:
            self._answer = answer

    def result(self) -> pd.Series:
        if self._thread is not None:
            self._thread.join(WORKER_TIMEOUT)
        answer = self._answer  # set only once checked: exactly n ids of hex digits
        self._stop_worker()
        if answer is None:
            answer = hex_prefixes(self._texts.to_pylist())
        return _id_series(answer, self._index)

    def _stop_worker(self) -> None:
        if self._worker is not None and self._worker.poll() is None:
            self._worker.kill()
            self._worker.wait()

    def __del__(self) -> None:  # a build that raised before asking for the result
        with contextlib.suppress(OSError):  # already gone (interpreter shutdown)
            self._stop_worker()


def order_ids_ahead(keys: pd.Series) -> OrderIdsAhead:
    """Start computing the order ids of ``keys`` on another core, when there are enough of
    them and a core to spare."""
    # A frozen application's executable is the application, not a Python to run a file.
    python = sys.executable if not getattr(sys, "frozen", False) else ""
    if len(keys) < AHEAD_FROM or _cores() < 2 or not python:
        return OrderIdsAhead(keys, None)
    try:
        worker = subprocess.Popen(
            [python, "-I", "-S", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError as exc:
        log.debug("order-id worker did not start (%s): hashing here", exc)
        return OrderIdsAhead(keys, None)
    return OrderIdsAhead(keys, worker)


def request(texts: pa.LargeBinaryArray) -> list[bytes | memoryview]:
    """The worker's input for ``texts`` (order_id_worker's protocol): the texts' bytes as
    Arrow holds them, not copied."""
    offsets = value_offsets(texts)
    data = texts.buffers()[2]
    start, end = int(offsets[0]), int(offsets[-1])
    return [
        HEADER.pack(len(texts), end - start),
        (offsets - start).astype("<i8").tobytes(),
        memoryview(data)[start:end] if data is not None else b"",
    ]


def _close(worker: subprocess.Popen[bytes]) -> None:
    for pipe in (worker.stdin, worker.stdout):
        if pipe is not None:
            pipe.close()


def _cores() -> int:
    """The CPUs this process may use: its affinity, capped by its cgroup v2 CPU quota (a
    container or a systemd CPUQuota= limited to one CPU still shows every CPU of the
    machine, and a worker would only share that one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    count = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    try:
        quota, period = _cpu_max().read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):  # no cgroup v2 (or not Linux): the affinity it is
        pass
    return count


def _cpu_max() -> Path:
    """This process's cgroup v2 cpu.max ("0::/its/path" in /proc/self/cgroup)."""
    for line in PROC_CGROUP.read_text().splitlines():
        if line.startswith("0::"):
            own = CGROUP_ROOT / line[3:].strip().lstrip("/") / "cpu.max"
            if own.exists():
                return own
    return CGROUP_ROOT / "cpu.max"


def _binary(keys: pd.Series) -> pa.LargeBinaryArray:
    """The keys' UTF-8 bytes as one contiguous Arrow array (no Python str encoded value by
    value). Keys are never missing: a missing one is a bug upstream, not an id."""
    texts = arrow_text(keys).cast(pa.large_binary()).combine_chunks()
    if texts.null_count:
        raise ValueError("a conversion key is missing: no order id can be computed")
    assert isinstance(texts, pa.LargeBinaryArray)
    return texts


def _id_series(ids: bytes, index: pd.Index) -> pd.Series:
    """Fixed-width ids, concatenated, as a text column (no Python str per id)."""
    count = len(ids) // ORDER_ID_LENGTH
    offsets = np.arange(0, len(ids) + 1, ORDER_ID_LENGTH, dtype=np.int64)
    array = pa.Array.from_buffers(
        pa.large_string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(ids)]
    )
    return pd.Series(pd.array(array, dtype=TEXT), index=index)
