"""DIMSE (DICOM upper layer) services: C-ECHO, C-STORE, C-FIND with pynetdicom."""
