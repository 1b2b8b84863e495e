"""`imaging-agent serve`: the API under uvicorn, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import ipaddress
import logging

import uvicorn

from agent.api.app import create_app
from agent.settings import Settings
from agent.telemetry import configure_tracing

log = logging.getLogger(__name__)


def run(settings: Settings, host: str, port: int) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        # Tokens and passwords cross the network in clear text without TLS in front of it.
        log.warning("serving on %s: put a TLS proxy in front of it, the service itself speaks plain HTTP", host)
    configure_tracing(settings, "serve")  # `python app.py` comes here without the CLI; once per process
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
