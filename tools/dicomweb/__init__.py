"""DICOMweb client (QIDO-RS, WADO-RS, STOW-RS) and the PACS models it shares with `tools.dimse`."""
