"""DICOMweb (QIDO, WADO-RS, STOW-RS) and DIMSE clients."""
