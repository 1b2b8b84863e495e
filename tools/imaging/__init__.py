"""Series to volume with geometry, phantoms, previews."""
