"""The DICOM node's TLS (PS3.15 B.1, the TLS secure transport connection profiles).

A server context built from the configured files only: no system CA store, so a sender's
certificate counts only when the configured CA signed it (a certificate any public CA issued
is refused). TLS 1.2 at least, as BCP 195 and dcmtk's default profile ask.

pynetdicom wraps each accepted socket in its accept loop, where the handshake would run: one
sender that connects and never completes it would stop the node accepting anyone else (seen
in tests/unit/test_intake_tls.py). The context here leaves the handshake to the association's
first read, on the association's own thread, with a timeout.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any


class TlsConfigError(ValueError):
    """A certificate, key or CA file could not be used; the message names the file and the setting."""


class _HandshakeOnFirstRead(ssl.SSLContext):
    timeout_s: float = 30.0

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        sock.settimeout(self.timeout_s)
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


def server_context(cert: Path, key: Path | None, ca: Path | None, *, timeout_s: float = 30.0) -> ssl.SSLContext:
    """The node's context: its certificate and key; with ``ca``, senders must present a certificate it signed.

    Without ``ca`` the connection is encrypted and the node authenticated, but any sender may
    connect (the AE title and host checks still apply). ``timeout_s``: how long a sender may
    take over the handshake, and over any read afterwards.
    """
    context = _HandshakeOnFirstRead(ssl.PROTOCOL_TLS_SERVER)
    context.timeout_s = timeout_s
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"the node's TLS certificate {cert} with key {key or '(in the same file)'} cannot be used: {exc}. "
            "Set IMAGING_AGENT_INTAKE_TLS_CERT and IMAGING_AGENT_INTAKE_TLS_KEY to a PEM certificate and its "
            "unencrypted private key."
        ) from exc
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"the CA file {ca} cannot be read as PEM certificates: {exc}. "
                "Set IMAGING_AGENT_INTAKE_TLS_CA to the CA that signs the senders' certificates."
            ) from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context
