"""The DICOM node and its inbox, over real associations on 127.0.0.1 (pynetdicom and dcmtk's storescu).

No PACS or FHIR here: what the node answers, what the inbox keeps, and when a series counts as
complete. The intake into work (PACS, FHIR, the job) is tests/integration/test_intake.py.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from tools.dimse.peers import Peer
from tools.dimse.scp import CANNOT_UNDERSTAND, OUT_OF_RESOURCES, SUCCESS, Refused, StorageNode
from tools.intake.inbox import Inbox, RefusedInstance
from tools.intake.routing import DEFAULT_RULES, RoutingRule, route
from tools.phantom import PhantomSpec, make_phantom, write_phantom

pytestmark = pytest.mark.unit

NODE_AET = "AGENT_NODE"
SENDER = "CT_SCANNER"


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    spec = PhantomSpec(slices=8, rows=64, columns=64, pixel_spacing_mm=5.0, slice_thickness_mm=5.0, seed=77)
    return sorted(write_phantom(make_phantom(spec), tmp_path_factory.mktemp("phantom")))


class Node:
    def __init__(self, inbox: Inbox, port: int) -> None:
        self.inbox = inbox
        self.port = port


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[Node]:
    inbox = Inbox(tmp_path / "inbox")

    def receive(ds: Dataset, association: str) -> None:
        try:
            inbox.keep(ds, association)
        except RefusedInstance as exc:
            raise Refused(str(exc)) from exc

    storage = StorageNode(NODE_AET, [Peer(ae_title=SENDER, host="127.0.0.1")], receive, inbox.released, timeout_s=10)
    port = storage.start("127.0.0.1", 0)
    yield Node(inbox, port)
    storage.stop()


def _associate(node: Node, calling: str = SENDER, called: str = NODE_AET, bind: str = "127.0.0.1") -> object:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    return ae.associate("127.0.0.1", node.port, ae_title=called, bind_address=(bind, 0))


def test_a_configured_sender_echoes_and_anyone_else_is_refused(node: Node) -> None:
    assoc = _associate(node)
    assert assoc.is_established and assoc.send_c_echo().Status == SUCCESS
    assoc.release()
    assert _associate(node, calling="INTRUDER").is_rejected
    assert _associate(node, called="SOMEONE_ELSE").is_rejected
    # The sender's AE title from another host (127.0.0.2 is loopback too, but not the configured host).
    # It is aborted as soon as it is accepted, before it can store anything.
    other_host = _associate(node, bind="127.0.0.2")
    deadline = time.monotonic() + 5
    while other_host.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other_host.is_aborted and not other_host.is_established


def test_instances_are_kept_whole_and_the_series_counts_only_after_a_release(node: Node, phantom_files: list[Path]) -> None:
    assoc = _associate(node)
    for path in phantom_files:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == SUCCESS
    assert node.inbox.stable(0.0) == [], "the association is still open: the series may go on"
    assoc.release()
    [series] = node.inbox.stable(0.0)
    assert series.instances == len(phantom_files)
    first = pydicom.dcmread(phantom_files[0])
    kept = series.folder / f"{first.SOPInstanceUID}.dcm"
    assert pydicom.dcmread(kept).PixelData == first.PixelData
    assert node.inbox.stable(3600.0) == [], "not stable until nothing new arrived for the stable age"


def test_an_aborted_push_is_not_processed_until_a_push_completes(node: Node, phantom_files: list[Path]) -> None:
    assoc = _associate(node)
    for path in phantom_files[:3]:
        assert assoc.send_c_store(pydicom.dcmread(path)).Status == SUCCESS
    assoc.abort()
    time.sleep(0.2)
    assert node.inbox.stable(0.0) == []
    again = _associate(node)
    for path in phantom_files:
        assert again.send_c_store(pydicom.dcmread(path)).Status == SUCCESS
    again.release()
    [series] = node.inbox.stable(0.0)
    assert series.instances == len(phantom_files), "a duplicate push changes nothing"


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("SOPInstanceUID", "../../escaped"), ("SeriesInstanceUID", "1.2.x"), ("StudyInstanceUID", "")],
)
def test_a_malformed_instance_gets_a_failure_status_and_the_node_keeps_serving(
    node: Node, phantom_files: list[Path], keyword: str, value: str
) -> None:
    ds = pydicom.dcmread(phantom_files[0])
    setattr(ds, keyword, value)
    assoc = _associate(node)
    assert assoc.send_c_store(ds).Status == CANNOT_UNDERSTAND
    assert assoc.send_c_echo().Status == SUCCESS
    assoc.release()
    assert not list(node.inbox.root.rglob("*.dcm"))
    assert not list(node.inbox.root.parent.rglob("escaped*"))


def test_a_series_claiming_another_study_is_refused(node: Node, phantom_files: list[Path]) -> None:
    assoc = _associate(node)
    assert assoc.send_c_store(pydicom.dcmread(phantom_files[0])).Status == SUCCESS
    planted = pydicom.dcmread(phantom_files[1])
    planted.StudyInstanceUID = "1.2.826.0.1.3680043.10.999"
    assert assoc.send_c_store(planted).Status == CANNOT_UNDERSTAND
    assoc.release()
    assert [s.instances for s in node.inbox.stable(0.0)] == [1]


def test_storescu_pushes_a_series(node: Node, phantom_files: list[Path]) -> None:
    storescu = shutil.which("storescu")
    assert storescu, "dcmtk's storescu is missing: run scripts/bootstrap.sh (Debian package dcmtk)"
    sent = subprocess.run(
        [storescu, "-aet", SENDER, "-aec", NODE_AET, "127.0.0.1", str(node.port), *map(str, phantom_files)],
        capture_output=True, text=True, timeout=60,
    )
    assert sent.returncode == 0, sent.stderr
    [series] = node.inbox.stable(0.0)
    assert series.instances == len(phantom_files)
    refused = subprocess.run(
        [storescu, "-aet", "INTRUDER", "-aec", NODE_AET, "127.0.0.1", str(node.port), str(phantom_files[0])],
        capture_output=True, text=True, timeout=60,
    )
    assert refused.returncode != 0 and "reject" in (refused.stdout + refused.stderr).lower()


def test_routing_takes_chest_ct_and_leaves_the_rest() -> None:
    chest = Dataset()
    chest.Modality, chest.BodyPartExamined = "CT", "CHEST"
    head = Dataset()
    head.Modality, head.BodyPartExamined, head.SeriesDescription = "CT", "HEAD", "Brain routine"
    described = Dataset()
    described.Modality, described.SeriesDescription = "CT", "Thorax 1.0 B31f"
    mr = Dataset()
    mr.Modality, mr.BodyPartExamined = "MR", "CHEST"
    assert route(chest, DEFAULT_RULES) is DEFAULT_RULES[0]
    assert route(described, DEFAULT_RULES) is DEFAULT_RULES[1]
    assert route(head, DEFAULT_RULES) is None and route(mr, DEFAULT_RULES) is None
    with pytest.raises(ValueError, match="not a regular expression"):
        RoutingRule(name="broken", modality="CT", series_description="(unclosed")


def test_a_failed_write_is_answered_out_of_resources_so_the_sender_keeps_it(
    tmp_path: Path, phantom_files: list[Path]
) -> None:
    def full_disk(ds: Dataset, association: str) -> None:
        raise OSError(28, "No space left on device")

    storage = StorageNode(NODE_AET, [Peer(ae_title=SENDER, host="127.0.0.1")], full_disk, lambda *_: None, timeout_s=10)
    port = storage.start("127.0.0.1", 0)
    try:
        assoc = _associate(Node(Inbox(tmp_path / "unused"), port))
        assert assoc.send_c_store(pydicom.dcmread(phantom_files[0])).Status == OUT_OF_RESOURCES
        assoc.release()
    finally:
        storage.stop()


def test_a_write_a_killed_node_left_half_done_is_not_part_of_the_series(
    tmp_path: Path, phantom_files: list[Path]
) -> None:
    inbox = Inbox(tmp_path / "inbox")
    ds = pydicom.dcmread(phantom_files[0])
    kept = inbox.keep(ds, "a1")
    inbox.released("a1", 0.0)
    # The node was killed after writing the next instance's temporary file, before its rename.
    staged = kept.parent / ".1.2.3.4.deadbeef.part"
    shutil.copy(phantom_files[1], staged)
    [series] = inbox.stable(0.0)
    assert series.files() == [kept]
    Inbox(tmp_path / "inbox")  # the node starting again
    assert not staged.exists()
