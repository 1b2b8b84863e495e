"""FHIR R4 client and resource builders."""
