"""Who may store into the DICOM node: a model of its own, so the settings that list the peers
load without pynetdicom (issue 11: every command, `contour` included, reads the settings).
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class Peer(BaseModel):
    """A sender allowed to store: its calling AE title and the host it calls from."""

    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1)
