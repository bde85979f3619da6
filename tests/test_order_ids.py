"""Order ids: the same ids whether hashed here or by the worker process, and a worker that
fails in any way (exit, short or garbled answer, hang, no start) changes nothing but speed."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from funnelvalue import order_ids as ids
from funnelvalue.conversions import build
from funnelvalue.leads import normalise
from funnelvalue.mapping import Mapping
from funnelvalue.order_id_worker import HEADER, serve
from funnelvalue.order_ids import order_ids, order_ids_ahead, request
from tests.conftest import CUSTOMER, funnel_rows
from tests.conftest import HEADER as EXPORT_HEADER

TEXT = pd.StringDtype("pyarrow")


def keys(count: int, start: int = 0) -> pd.Series:
    values = [
        f"{CUSTOMER}|customers/{CUSTOMER}/conversionActions/{i % 3}|L{i}é" for i in range(count)
    ]
    return pd.Series(pd.array(values, dtype=TEXT)).iloc[start:]


def by_hashlib(values: pd.Series) -> list[str]:
    return [hashlib.sha256(v.encode()).hexdigest()[:24] for v in values]


@pytest.fixture
def ahead_always(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker for any number of keys, on any machine."""
    monkeypatch.setattr(ids, "AHEAD_FROM", 1)
    monkeypatch.setattr(ids, "_cores", lambda: 2)


@pytest.fixture
def no_hashing_here(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts (and refuses) hashing in this process: what the worker did, it did alone."""
    calls: list[int] = []

    def refuse(values: object) -> bytes:
        calls.append(1)
        raise AssertionError("hashed in the run's own process")

    monkeypatch.setattr(ids, "hex_prefixes", refuse)
    return calls


@pytest.fixture
def worker_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """Replace the worker by a script (its body reads stdin whole, then does ``body``)."""

    def use(body: str) -> None:
        script = tmp_path / "worker.py"
        script.write_text(f"import sys, time\ndata = sys.stdin.buffer.read()\n{body}\n")
        monkeypatch.setattr(ids, "WORKER", script)

    return use


def test_an_order_id_is_the_sha256_of_the_key_cut_to_24_hex_digits() -> None:
    # Never to change: Google dedupes by it. This value is in every ledger written so far.
    assert order_ids(pd.Series([f"{CUSTOMER}|CRM lead|L0"], dtype=TEXT)).tolist() == [
        "ea90f1ce77436dcd4ba3f89c"
    ]
    some = keys(500)
    assert order_ids(some).tolist() == by_hashlib(some)


@pytest.mark.usefixtures("ahead_always")
@pytest.mark.parametrize("start", [0, 7])
def test_the_worker_computes_the_same_ids_alone(no_hashing_here: list[int], start: int) -> None:
    some = keys(3_000, start)
    hashing = order_ids_ahead(some)
    got = hashing.result()
    assert got.tolist() == by_hashlib(some)
    assert got.index.equals(some.index)
    assert no_hashing_here == []


@pytest.mark.parametrize("first", [0, 7])  # 7: a slice, its Arrow offsets not from zero
def test_the_request_carries_exactly_the_keys_bytes(first: int) -> None:
    texts = pa.array([f"k{i}é" for i in range(20)], pa.large_binary()).slice(first)
    assert isinstance(texts, pa.LargeBinaryArray)
    stdin, stdout = io.BytesIO(b"".join(bytes(p) for p in request(texts))), io.BytesIO()
    serve(stdin, stdout)
    expected = [hashlib.sha256(t).hexdigest()[:24] for t in texts.to_pylist()]
    assert stdout.getvalue() == "".join(expected).encode()
    assert stdin.read() == b""  # nothing sent beyond what was read


def test_few_keys_or_one_core_hash_here_without_a_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker process started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    few = keys(ids.AHEAD_FROM - 1)
    assert order_ids_ahead(few).result().tolist() == by_hashlib(few)
    monkeypatch.setattr(ids, "_cores", lambda: 1)
    many = keys(ids.AHEAD_FROM)
    assert order_ids_ahead(many).result().tolist() == by_hashlib(many)


@pytest.mark.usefixtures("ahead_always")
@pytest.mark.parametrize(
    "body",
    [
        "sys.exit(1)",  # died without an answer
        "sys.stdout.buffer.write(b'0' * 24 * 10); sys.exit(3)",  # an answer, then a failure
        "sys.stdout.buffer.write(b'0' * 24 * 9)",  # one id short
        "sys.stdout.buffer.write(b'0' * 24 * 10 + b'0')",  # a digit too many
        "sys.stdout.buffer.write(b'0' * 24 * 9 + b'0' * 23 + b'g')",  # not hex
        "sys.stdout.buffer.write(b'0' * 24 * 9 + b'0' * 23 + b'A')",  # not lower-case hex
    ],
)
def test_a_worker_that_does_not_deliver_exactly_n_ids_is_not_believed(
    worker_script: Callable[[str], None], body: str
) -> None:
    worker_script(body)
    some = keys(10)
    assert order_ids_ahead(some).result().tolist() == by_hashlib(some)


@pytest.mark.usefixtures("ahead_always")
def test_a_hung_worker_is_killed_and_the_ids_hashed_here(
    worker_script: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker_script("time.sleep(60)")
    monkeypatch.setattr(ids, "WORKER_TIMEOUT", 0.5)
    hashing = order_ids_ahead(keys(10))
    assert hashing.result().tolist() == by_hashlib(keys(10))
    assert hashing._worker is not None
    assert hashing._worker.poll() is not None  # killed, not left behind


@pytest.mark.usefixtures("ahead_always")
def test_a_worker_that_cannot_start_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    assert order_ids_ahead(keys(10)).result().tolist() == by_hashlib(keys(10))

    def cannot(*args: object, **kwargs: object) -> None:
        raise OSError("too many open files")

    monkeypatch.setattr(sys, "executable", "/usr/bin/python3")
    monkeypatch.setattr(subprocess, "Popen", cannot)
    assert order_ids_ahead(keys(10)).result().tolist() == by_hashlib(keys(10))


@pytest.mark.usefixtures("ahead_always")
def test_a_frozen_application_is_not_run_as_a_python(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker process started")

    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    assert order_ids_ahead(keys(10)).result().tolist() == by_hashlib(keys(10))


def test_no_keys_no_ids() -> None:
    empty = keys(0)
    assert order_ids(empty).tolist() == []
    assert order_ids_ahead(empty).result().index.equals(empty.index)


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [
        ("max 100000\n", 4),  # no quota: the affinity's
        ("100000 100000\n", 1),  # one CPU: no worker
        ("250000 100000\n", 2),
        ("50000 100000\n", 1),  # half a CPU is still one
        ("garbage", 4),
        (None, 4),  # no cgroup v2
    ],
)
def test_cores_are_the_affinity_capped_by_a_containers_cpu_quota(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpu_max: str | None, cores: int
) -> None:
    own = tmp_path / "system.slice" / "funnelvalue.service"  # as systemd places a service
    own.mkdir(parents=True)
    if cpu_max is not None:
        (own / "cpu.max").write_text(cpu_max)
    (tmp_path / "cpu.max").write_text("100000 100000")  # the root's: not this process's
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("1:name=systemd:/\n0::/system.slice/funnelvalue.service\n")
    monkeypatch.setattr(ids, "CGROUP_ROOT", tmp_path)
    monkeypatch.setattr(ids, "PROC_CGROUP", proc)
    monkeypatch.setattr(ids.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert ids._cores() == (cores if cpu_max is not None else 1)  # none of its own: the root's
    proc.write_text("0::/\n")  # a container's own namespace: its root is its cgroup
    (tmp_path / "cpu.max").write_text(cpu_max or "max 100000")
    assert ids._cores() == cores


def test_a_missing_key_is_an_error_not_an_id() -> None:
    with pytest.raises(ValueError, match="key is missing"):
        order_ids(pd.Series(["a", None], dtype=TEXT))


@pytest.mark.parametrize(
    "stdin",
    [
        b"",  # nothing
        HEADER.pack(2, 3) + b"\0" * 8,  # offsets cut short
        HEADER.pack(1, 3) + (0).to_bytes(8, "little") + (5).to_bytes(8, "little") + b"abc",
    ],
)
def test_the_worker_refuses_input_it_cannot_read(stdin: bytes) -> None:
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(ids.WORKER)], input=stdin, capture_output=True, check=False
    )
    assert done.returncode == 2
    assert done.stdout == b""
    assert b"order-id worker" in done.stderr


@pytest.mark.usefixtures("ahead_always")
def test_build_gives_the_good_conversions_their_ids(
    mapping: Mapping, now: pd.Timestamp, no_hashing_here: list[int]
) -> None:
    rows = funnel_rows(30, now)
    rows[3]["stage_changed_at"] = (now + pd.Timedelta(days=3)).isoformat()  # in the future
    frame = pd.DataFrame(rows, columns=EXPORT_HEADER).astype("string")
    leads = normalise(frame, timezone=mapping.timezone)
    built = build(leads, mapping, now, CUSTOMER, order_ids=True)
    assert not built.rejects.empty  # the bad row is not among the conversions
    assert built.order_ids is not None
    assert built.order_ids.index.equals(built.conversions.index)
    assert built.order_ids.tolist() == by_hashlib(built.conversions["key"])
    assert build(leads, mapping, now, CUSTOMER).order_ids is None  # a preview: none
