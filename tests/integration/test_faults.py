"""Bad input never stops the node (issue 15, point 9, the fast part): the whole conformance corpus of
../shared/data through the served SCP while a good modality sends alongside, mutated files, and random or
mangled PDUs. Afterwards the node still answers, the good series is stored whole, and every rejected
object is kept aside with its reason. The long runs: DICOMNODE_FUZZ_CASES=N (default 150 here)."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import func, select

from dicomnode import dimse
from dicomnode.addresses import Destination
from dicomnode.db.models import Instance
from dicomnode.dispatch import StoreSCU
from dicomnode.node import Node
from dicomnode.scp.handlers import parse_header
from dicomnode.scp.parse import read_spooled_header, scan_spooled
from dicomnode.testing.synthetic import write_ct_series
from tests.conftest import DCMTK, require_tool, shared_data
from tests.support.net import storescu
from tests.support.node import node_settings

pytestmark = pytest.mark.integration

FUZZ_CASES = int(os.environ.get("DICOMNODE_FUZZ_CASES", "150"))


@pytest.fixture
def node(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = node_settings(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite3'}", worker={"processes": 0})
    running = Node(settings)
    running.start()
    yield running
    running.stop()


def _echo_ok(port: int) -> bool:
    run = subprocess.run([DCMTK / "echoscu", "-aec", "DICOMNODE", "127.0.0.1", str(port)], capture_output=True)
    return run.returncode == 0


def _stored(node: Node) -> int:
    with node.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def _corpus() -> tuple[list[Path], int]:
    """Every file of the conformance corpus that a sender can address (it has a file meta with a SOP class
    and instance), and how many cannot even be sent."""
    root = shared_data("conformance")
    sendable, unsendable = [], 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            meta = read_file_meta_info(path)
            if meta.get("MediaStorageSOPClassUID") and meta.get("MediaStorageSOPInstanceUID"):
                sendable.append(path)
                continue
        except Exception:  # no preamble, no meta, not DICOM: a sender has nothing to send
            pass
        unsendable += 1
    return sendable, unsendable


def test_the_conformance_corpus_with_a_good_sender_alongside(node: Node, tmp_path: Path) -> None:
    require_tool("storescu")
    require_tool("echoscu")
    corpus, unsendable = _corpus()
    good = write_ct_series(np.zeros((30, 16, 16)), tmp_path / "good")
    result: dict[str, object] = {}
    sender = threading.Thread(target=lambda: result.setdefault("run", storescu(good, node.scp.port, check=False)))
    sender.start()
    outcomes = StoreSCU("CORPUS").send(Destination("node", "DICOMNODE", "127.0.0.1", node.scp.port), corpus)
    sender.join(timeout=120)
    statuses = Counter(o.status for o in outcomes)
    print(f"corpus: {len(corpus)} sent, {unsendable} unsendable, statuses {dict(statuses)}")
    assert len(outcomes) == len(corpus)
    assert statuses[dimse.SUCCESS] > 0 and statuses[dimse.CANNOT_UNDERSTAND] > 0
    # every answer is a named status or a clean refusal of the presentation context (never a dead node)
    assert set(statuses) <= {dimse.SUCCESS, dimse.CANNOT_UNDERSTAND, None, 0xA700, 0x0122, 0xB000, 0xB007}
    assert result["run"].returncode == 0  # type: ignore[attr-defined]
    assert _echo_ok(node.scp.port)
    quarantine = node.settings.store_dir / "quarantine"
    assert len(list(quarantine.glob("*.txt"))) == statuses[dimse.CANNOT_UNDERSTAND]
    with node.db.session() as s:
        uids = set(s.scalars(select(Instance.sop_instance_uid)))
    assert {str(read_file_meta_info(p).MediaStorageSOPInstanceUID) for p in good} <= uids


def _mutated(rng: random.Random, source: bytes) -> bytearray:
    """``source`` with 1 to 8 bytes flipped, runs cut or repeated in its first 4 KiB after the preamble."""
    data = bytearray(source)
    for _ in range(rng.randint(1, 8)):
        position = rng.randrange(132, min(len(data), 4096)) if len(data) > 140 else 0
        kind = rng.random()
        if kind < 0.6:
            data[position] = rng.randrange(256)
        elif kind < 0.8:
            del data[position : position + rng.randint(1, 64)]
        else:
            data[position:position] = data[position : position + rng.randint(1, 64)]
    return data


def test_mutated_headers_never_escape_the_parser() -> None:
    """In-process fuzzing of what the SCP parses: bytes flipped, cut and repeated in real files' headers
    give a data set or a ValidationError (0xC000), never another exception."""
    from dicomnode.errors import ValidationError

    corpus, _ = _corpus()
    rng = random.Random(11)
    outcomes: Counter[str] = Counter()
    sources = [p.read_bytes() for p in rng.sample(corpus, min(40, len(corpus)))]
    for _ in range(FUZZ_CASES * 10):
        data = _mutated(rng, rng.choice(sources))
        try:
            parse_header(bytes(data[132:]) if data[128:132] == b"DICM" else bytes(data), True, False)
            outcomes["parsed"] += 1
        except ValidationError:
            outcomes["rejected"] += 1
    print(f"parser fuzz: {dict(outcomes)}")
    assert sum(outcomes.values()) == FUZZ_CASES * 10


def test_mutated_files_never_escape_the_spooled_parser(tmp_path: Path) -> None:
    """The same for what the SCP runs on a spooled C-STORE: the element walk that proves the data set whole,
    then the header read."""
    from dicomnode.errors import ValidationError

    corpus, _ = _corpus()
    rng = random.Random(13)
    outcomes: Counter[str] = Counter()
    sources = [p.read_bytes() for p in rng.sample(corpus, min(40, len(corpus)))]
    spooled = tmp_path / "spooled.dcm"
    for _ in range(FUZZ_CASES * 5):
        data = _mutated(rng, rng.choice(sources))
        if rng.random() < 0.3:
            del data[rng.randrange(132, len(data)) :]
        spooled.write_bytes(bytes(data))
        try:
            scan_spooled(spooled, ExplicitVRLittleEndian)
            read_spooled_header(spooled, ExplicitVRLittleEndian)
            outcomes["parsed"] += 1
        except ValidationError:
            outcomes["rejected"] += 1
    print(f"spooled parser fuzz: {dict(outcomes)}")
    assert outcomes["rejected"] > 0 and sum(outcomes.values()) == FUZZ_CASES * 5


def _associate_rq(called: bytes, calling: bytes) -> bytes:
    """A minimal A-ASSOCIATE-RQ proposing Verification, for mangling."""
    app = b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1"
    abstract = b"\x30\x00\x00\x11" + b"1.2.840.10008.1.1"
    transfer = b"\x40\x00\x00\x11" + b"1.2.840.10008.1.2"
    pc_body = b"\x01\x00\x00\x00" + abstract + transfer
    pc = b"\x20\x00" + struct.pack(">H", len(pc_body)) + pc_body
    max_len = b"\x51\x00\x00\x04" + struct.pack(">I", 16384)
    user = b"\x50\x00" + struct.pack(">H", len(max_len)) + max_len
    body = b"\x00\x01\x00\x00" + called.ljust(16) + calling.ljust(16) + b"\x00" * 32 + app + pc + user
    return b"\x01\x00" + struct.pack(">I", len(body)) + body


def test_random_and_mangled_pdus_never_stop_the_node(node: Node) -> None:
    require_tool("echoscu")
    rng = random.Random(5)
    valid = _associate_rq(b"DICOMNODE", b"FUZZER")
    for case in range(FUZZ_CASES):
        if case % 3 == 0:
            payload = bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        else:
            payload = bytearray(valid)
            for _ in range(rng.randint(1, 6)):
                payload[rng.randrange(len(payload))] = rng.randrange(256)
            payload = bytes(payload[: rng.randint(6, len(payload))])
        with socket.create_connection(("127.0.0.1", node.scp.port), timeout=2) as sock:
            try:
                sock.sendall(payload)
                sock.settimeout(0.3)
                sock.recv(1024)
            except OSError:
                pass  # the node closed the connection or is still waiting: both fine
        if case % 25 == 0:
            assert _echo_ok(node.scp.port), f"no echo after fuzz case {case}"
    deadline = time.monotonic() + 5
    while not _echo_ok(node.scp.port):
        assert time.monotonic() < deadline, "the node stopped answering after the fuzz run"
    assert _stored(node) == 0
