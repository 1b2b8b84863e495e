"""MedImageParse 3D: the volume as a NIfTI the model reads, and its answer back onto the volume's grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from tools.imaging.orientation import Reorientation, reorient
from tools.imaging.volume import Volume
from tools.segmentation.medimageparse.wire import ScoringError

# NIfTI's world is RAS+, DICOM's LPS: x and y point the other way.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def canonical_nifti(volume: Volume) -> tuple[nib.Nifti1Image, Reorientation]:
    """The volume as a NIfTI in RAS order (tools/imaging/orientation.py), and the view that made it.

    RAS is sent because the model reorients its input to RAS itself: then its output lies on
    the grid we sent, and ``view.backward`` puts it on the volume's grid. Only spacing and axis
    directions go with the voxels: the origin is zeroed (the patient position stays here) and
    the header carries no description.
    """
    view = reorient(volume.geometry, "RAS")
    dtype = np.int16 if np.issubdtype(volume.array.dtype, np.integer) else np.float32
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS[:3, :3] @ view.steps_mm(volume.geometry)
    sent = nib.Nifti1Image(np.asarray(view.forward(volume.array), dtype=dtype), affine)
    sent.header.set_xyzt_units("mm")
    return sent, view


def on_canonical_grid(result: np.ndarray, affine: np.ndarray | None, canonical: nib.Nifti1Image) -> np.ndarray:
    """The 3D answer on the grid that was sent (reoriented if the answer came in another order)."""
    if affine is not None:
        result = apply_orientation(result, ornt_transform(io_orientation(affine), io_orientation(canonical.affine)))
    if result.shape != canonical.shape:
        raise ScoringError(f"the 3D mask has shape {list(result.shape)}, the volume sent {list(canonical.shape)}")
    return result

