"""One plane of a CT with its contours drawn on: the previews' and the reviewer's viewer's renderer.

Any plane (axial, coronal, sagittal) of the display view (tools/review/edits.py, "IPL") at any
index, in any window, with the outlines (not fills) of the structures chosen, each in its ROI
colour, a legend, the patient-orientation letters at the edges and the plane's position in mm.

Orientation comes from the volume's geometry (DICOM PS3.3 C.7.6.2.1.1, LPS), never from
assumptions about the scan: every plane is shown in radiological convention, the patient's right
on the image left, anterior at the top of axial images, superior at the top of coronal and
sagittal images and anterior on the left of sagittal ones, whether the series is head- or
feet-first and whichever way its rows and columns run. Pixels are resampled to square display
pixels using the voxel spacing, so a coronal plane of 2.5 mm slices has its true aspect ratio;
`DisplayMapping` maps a display pixel back to the plane's voxel coordinates exactly (the
reviewer's brush strokes are recorded in voxels).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from skimage.measure import find_contours

from tools.imaging.geometry import Geometry
from tools.imaging.orientation import Reorientation, reorient
from tools.review.edits import DISPLAY_VIEW, PLANE_AXIS, Plane
from tools.segmentation.base import StructureSpec

PLANES: tuple[Plane, ...] = ("axial", "coronal", "sagittal")
LEGEND_HEIGHT_PX = 28
"""Height of the legend strip under each image; the CT occupies the rows above it."""
_MIN_SIDE_PX, _MAX_SIDE_PX = 512, 1024
_LINE_PX = 2
_FONT_PX = 14
_TEXT = (235, 235, 235)
# Patient directions at the image's top, bottom, left and right edges of each plane of the view.
EDGE_LABELS: dict[str, tuple[str, str, str, str]] = {
    "axial": ("A", "P", "R", "L"),
    "coronal": ("S", "I", "R", "L"),
    "sagittal": ("S", "I", "A", "P"),
}
# The LPS coordinate a plane's position is given in: the one along its normal.
_NORMAL = {"axial": (2, "z"), "coronal": (1, "y"), "sagittal": (0, "x")}


@dataclass(frozen=True)
class Window:
    """A CT display window: HU ``level - width / 2`` is black, ``level + width / 2`` white."""

    width: float
    level: float

    def apply(self, hu: np.ndarray) -> np.ndarray:
        low = self.level - self.width / 2.0
        scaled = (hu.astype(np.float32) - low) * (255.0 / self.width)
        return np.clip(scaled, 0.0, 255.0).astype(np.uint8)

    @property
    def label(self) -> str:
        return f"W {self.width:g} / L {self.level:g}"


PRESENTATION_WINDOW = Window(1.0, 0.5)
"""a radiograph's presentation values (0 black .. 1 white, tools/imaging/projection.py) as they are"""

WINDOW_PRESETS: dict[str, Window] = {
    "lung": Window(1500.0, -600.0),
    "mediastinum": Window(350.0, 40.0),
    "bone": Window(2000.0, 500.0),
}


@dataclass(frozen=True)
class DisplayMapping:
    """Display pixels of a rendered plane and the plane's voxels, both ways.

    A position is continuous: display x runs from 0 at the image's left edge to ``width`` at its
    right edge; a voxel coordinate is that of voxel centres (column 0.0 is the centre of the
    first column, -0.5 its left edge), as tools/review/edits.py measures a brush's reach.
    """

    rows: int
    columns: int
    width: int
    height: int

    def voxel_at(self, x: float, y: float) -> tuple[float, float]:
        """(row, column) voxel coordinates of display position (x, y)."""
        return (y * self.rows / self.height - 0.5, x * self.columns / self.width - 0.5)

    def display_at(self, row: float, column: float) -> tuple[float, float]:
        """(x, y) display position of voxel coordinates (row, column)."""
        return ((column + 0.5) * self.width / self.columns, (row + 0.5) * self.height / self.rows)


def display_size(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[int, int]:
    """(width, height) in square display pixels preserving the physical aspect ratio."""
    height_mm, width_mm = shape[0] * spacing[0], shape[1] * spacing[1]
    native = max(height_mm, width_mm) / min(spacing)
    longest = float(np.clip(native, _MIN_SIDE_PX, _MAX_SIDE_PX))
    pixel_mm = max(height_mm, width_mm) / longest
    return max(1, round(width_mm / pixel_mm)), max(1, round(height_mm / pixel_mm))


class SliceRenderer:
    """Planes of one volume with the outlines of its structures (masks on the volume's grid)."""

    def __init__(
        self, array: np.ndarray, geometry: Geometry, structures: Sequence[tuple[StructureSpec, np.ndarray]]
    ) -> None:
        self.array = array
        self.geometry = geometry
        self.structures = list(structures)
        self.view: Reorientation = reorient(geometry, DISPLAY_VIEW)

    def count(self, plane: Plane) -> int:
        """How many planes of this kind the volume has."""
        return self.view.shape[PLANE_AXIS[plane]]

    def mapping(self, plane: Plane) -> DisplayMapping:
        axis = PLANE_AXIS[plane]
        vertical, horizontal = (a for a in range(3) if a != axis)
        rows, columns = self.view.shape[vertical], self.view.shape[horizontal]
        width, height = display_size((rows, columns), (self.view.spacing[vertical], self.view.spacing[horizontal]))
        return DisplayMapping(rows, columns, width, height)

    def source_index(self, plane: Plane, index: int) -> int:
        """The index along the volume's own array axis of view plane ``index`` (titles count so)."""
        return self.view.view_index(PLANE_AXIS[plane], index)

    def position_mm(self, plane: Plane, index: int) -> float:
        """The LPS coordinate (mm) along the plane's normal of view plane ``index``."""
        axis = PLANE_AXIS[plane]
        ijk = np.zeros(3)
        ijk[2 - self.view.perm[axis]] = self.source_index(plane, index)  # geometry indices are (column, row, slice)
        return float(self.geometry.index_to_patient(ijk)[_NORMAL[plane][0]])

    def title(self, plane: Plane, index: int) -> str:
        """'Axial  z -120.5 mm  (slice 12/40)': the position and the volume's own numbering."""
        letter = _NORMAL[plane][1]
        source_axis = self.view.perm[PLANE_AXIS[plane]]
        noun = "slice" if source_axis == 0 else "plane"
        number = self.source_index(plane, index) + 1
        return (
            f"{plane.capitalize()}  {letter} {self.position_mm(plane, index):.1f} mm  "
            f"({noun} {number}/{self.array.shape[source_axis]})"
        )

    def plane(self, array: np.ndarray, plane: Plane, index: int) -> np.ndarray:
        """View plane ``index`` of ``array`` (source layout, the volume's shape)."""
        # Basic indexing copies one plane; np.take on the (transposed, flipped) view would first
        # copy the whole volume into C order, once per plane and mask.
        return self.view.forward(array)[(slice(None),) * PLANE_AXIS[plane] + (index,)]

    def render(
        self,
        plane: Plane,
        index: int,
        window: Window = WINDOW_PRESETS["lung"],
        visible: Collection[str] | None = None,
        title: str | None = None,
    ) -> Image.Image:
        """The plane with the outlines of the ``visible`` structure keys (all when None) and its legend.

        Raises ValueError naming the plane when ``index`` is outside the volume."""
        count = self.count(plane)
        if not 0 <= index < count:
            raise ValueError(f"{plane} plane {index} is outside the volume's {count} {plane} planes")
        shown = [(spec, mask) for spec, mask in self.structures if visible is None or spec.key in visible]
        grey = self.plane(self.array, plane, index)
        mapping = self.mapping(plane)
        width, height = mapping.width, mapping.height
        scale_x, scale_y = width / mapping.columns, height / mapping.rows

        canvas = Image.new("RGB", (width, height + LEGEND_HEIGHT_PX), (0, 0, 0))
        ct = Image.fromarray(window.apply(grey), mode="L").resize((width, height), Image.Resampling.BILINEAR)
        canvas.paste(ct.convert("RGB"), (0, 0))
        draw = ImageDraw.Draw(canvas)
        for spec, mask in shown:
            cut = self.plane(mask, plane, index)
            if not cut.any():
                continue
            # Pad so outlines touching the image border still close.
            padded = np.pad(cut.astype(np.uint8), 1)
            for contour in find_contours(padded, 0.5):
                points = [((c - 0.5) * scale_x, (r - 0.5) * scale_y) for r, c in contour]
                draw.line(points, fill=spec.color_rgb, width=_LINE_PX, joint="curve")

        font = ImageFont.load_default(size=_FONT_PX)
        top, bottom, left, right = EDGE_LABELS[plane]
        style = {"font": font, "fill": _TEXT, "stroke_width": 2, "stroke_fill": (0, 0, 0)}
        draw.text((width / 2, 4), top, anchor="mt", **style)
        draw.text((width / 2, height - 4), bottom, anchor="mb", **style)
        draw.text((6, height / 2), left, anchor="lm", **style)
        draw.text((width - 6, height / 2), right, anchor="rm", **style)
        draw.text((6, 4), title if title is not None else self.title(plane, index), anchor="lt", **style)

        x = 6.0
        middle = height + LEGEND_HEIGHT_PX / 2
        for spec, _ in shown:
            draw.rectangle((x, middle - 5, x + 18, middle + 5), outline=spec.color_rgb, width=_LINE_PX)
            x += 24
            draw.text((x, middle), spec.display, anchor="lm", font=font, fill=_TEXT)
            x += draw.textlength(spec.display, font=font) + 18
        draw.text((width - 6, middle), window.label, anchor="rm", font=font, fill=_TEXT)
        return canvas
