"""The one error a study step raises for the radiologist.

Its own module, free of the FHIR and DICOMweb stack, so the offline `contour` path can raise and
catch it without importing the network clients (issue 11: start-up imports only where used).
"""

from __future__ import annotations


class StudyFailure(RuntimeError):
    """A study cannot go on; the message is for the radiologist and names what to do."""
