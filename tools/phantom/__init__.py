"""Demo and test data: a synthetic chest CT phantom with exact lung masks, written as DICOM.

The phantom exists so that the pipeline (fetch -> volume -> segment -> results) can be
tested end to end without patient data, against ground truth that is exact. It is demo
data, not part of the imaging library: it sits above `tools.imaging` and `tools.results`
(it borrows the Part 10 basics from `tools.results.common`) and nothing under them
imports it (docs/architecture.md, "Layers").

- `spec`: what to generate (PhantomSpec), the tissues, the generated arrays, the geometry.
- `anatomy`: the painting of tissues and vessels, and their HU values.
- `make`: make_phantom, the anatomy in array order with UIDs derived from the spec.
- `dicom`: write_phantom, one CT Image Storage file per slice.
- `masks`: save_masks / load_masks, the exact lung masks beside the series.
"""

from tools.phantom.dicom import MANUFACTURER, redate, write_phantom
from tools.phantom.make import make_phantom
from tools.phantom.masks import PhantomMasks, load_masks, save_masks
from tools.phantom.spec import RESCALE_INTERCEPT, Phantom, PhantomGeometry, PhantomSpec, Tissue, phantom_geometry

__all__ = [
    "MANUFACTURER",
    "RESCALE_INTERCEPT",
    "Phantom",
    "PhantomGeometry",
    "PhantomMasks",
    "PhantomSpec",
    "Tissue",
    "load_masks",
    "make_phantom",
    "redate",
    "phantom_geometry",
    "save_masks",
    "write_phantom",
]
