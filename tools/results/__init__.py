"""RTSTRUCT, SEG, SR writers and FHIR report resources."""
