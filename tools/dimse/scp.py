"""The agent's DICOM node (pynetdicom SCP): C-ECHO and C-STORE from configured peers only.

DICOM PS3.7 (message exchange), PS3.4 Annex A (Verification) and Annex B (Storage). Transport
only: what happens to a received instance is the injected `receive`'s business (the inbox,
tools/intake/inbox.py). Peers are pairs of calling AE title and host: another AE title is
rejected at association (PS3.8 A-ASSOCIATE-RJ, "calling AE title not recognized"), a known AE
title from another host is aborted before anything is stored, a wrong called AE title is rejected.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, StoragePresentationContexts, _config, build_context, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from tools.dimse.peers import Peer

log = logging.getLogger(__name__)

# The node logs identifiers, never the received data sets (patient names).
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False

# PS3.4 B.2.3 C-STORE status codes.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000


class Refused(ValueError):
    """`receive` will not keep this instance: answered with CANNOT_UNDERSTAND, the message logged."""


Receive = Callable[[Dataset, str], None]
"""Keep one instance received on an association (its id): raise Refused or OSError to fail it."""
Released = Callable[[str, float], None]
"""An association (its id, its start time) ended with a release: everything it stored is whole."""


class StorageNode:
    """A C-ECHO / C-STORE SCP on one address, answering only `peers`."""

    def __init__(
        self,
        ae_title: str,
        peers: list[Peer],
        receive: Receive,
        released: Released,
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.ae_title = ae_title
        self.peers = {(p.ae_title.strip(), p.host) for p in peers}
        self._receive = receive
        self._released = released
        self._ssl_context = ssl_context
        self._ae = AE(ae_title=ae_title)
        self._ae.require_calling_aet = sorted({p.ae_title.strip() for p in peers}) or ["-no peer configured-"]
        self._ae.require_called_aet = True
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = timeout_s
        # Every storage SOP class in every transfer syntax: the node keeps what it gets as it came.
        self._ae.supported_contexts = [
            build_context(Verification),
            *(build_context(c.abstract_syntax, ALL_TRANSFER_SYNTAXES) for c in StoragePresentationContexts),
        ]
        self._server: ThreadedAssociationServer | None = None
        self._associations: dict[int, tuple[str, float]] = {}

    def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: a free one) without blocking; returns the port."""
        handlers: list[Any] = [
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
        ]
        self._server = self._ae.start_server((host, port), block=False, ssl_context=self._ssl_context, evt_handlers=handlers)
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _peer(self, event: evt.Event) -> tuple[str, str]:
        requestor = event.assoc.requestor
        return str(requestor.ae_title).strip(), str(requestor.address)

    def _on_accepted(self, event: evt.Event) -> None:
        peer = self._peer(event)
        if peer not in self.peers:
            log.warning("DICOM node: %s calling from %s is not a configured peer; association aborted", *peer)
            event.assoc.abort()
            return
        self._associations[id(event.assoc)] = (uuid.uuid4().hex, time.time())
        log.info("DICOM node: association from %s at %s", *peer)

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> int:
        association, _ = self._associations.get(id(event.assoc), ("", 0.0))
        if not association:
            return CANNOT_UNDERSTAND
        sop = str(getattr(event.request, "AffectedSOPInstanceUID", "?"))
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the sender's malformed data
            log.warning("DICOM node: instance %s from %s could not be decoded (%s); answered 0xC000", sop[:64], self._peer(event)[0], type(exc).__name__)
            return CANNOT_UNDERSTAND
        try:
            self._receive(ds, association)
        except Refused as exc:
            log.warning("DICOM node: refused instance %s: %s", sop[:64], exc)
            return CANNOT_UNDERSTAND
        except OSError as exc:
            log.error("DICOM node: could not keep instance %s (%s); answered 0xA700, the sender may retry", sop[:64], exc.strerror)
            return OUT_OF_RESOURCES
        return SUCCESS

    def _on_released(self, event: evt.Event) -> None:
        association = self._associations.pop(id(event.assoc), None)
        if association is not None:
            self._released(*association)

    def _on_aborted(self, event: evt.Event) -> None:
        # What it stored stays incomplete (tools/intake/inbox.py) until a push that completes.
        self._associations.pop(id(event.assoc), None)
