"""What the reviewer's viewer shows: one CT, the AI's masks, their QA flags, and the edits on top.

A scene is loaded once (from the work store behind an approval card, or from an offline
`contour` folder: tools/results/read_back.py) and then renders any plane on demand: a slice change reads one plane of the
arrays already in memory. The edited masks are kept for the last edit list seen, so scrolling
an edited result does not re-apply the edits for every slice.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tools.imaging.geometry import Geometry
from tools.imaging.volume_store import load_volume
from tools.review.edits import PLANE_AXIS, BrushStroke, EraseRange, Plane, apply_edits, edits_digest
from tools.review.slice_view import PLANES, SliceRenderer, Window
from tools.segmentation.base import QAFlag, StructureSpec
from tools.segmentation.result_store import load_result

Edit = BrushStroke | EraseRange


class SceneError(ValueError):
    """The viewer cannot open a result; the message names the file or folder and what to do."""


@dataclass
class Scene:
    """A volume with its structures' masks (source layout) and flags, ready to render planes."""

    name: str
    """what the scene shows, for messages: the series and where it was read from"""
    array: np.ndarray
    geometry: Geometry
    series_uid: str
    structures: list[tuple[StructureSpec, np.ndarray]]
    flags: list[QAFlag]
    _edited: tuple[str, list[tuple[StructureSpec, np.ndarray]]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.renderer = SliceRenderer(self.array, self.geometry, self.structures)

    @property
    def keys(self) -> list[str]:
        return [spec.key for spec, _ in self.structures]

    def edited(self, edits: Sequence[Edit]) -> SliceRenderer:
        """The renderer of the masks with ``edits`` applied (checked: raises EditError naming the edit)."""
        if not edits:
            return self.renderer
        digest = edits_digest(edits)
        with self._lock:
            if self._edited is None or self._edited[0] != digest:
                masks = apply_edits(
                    {spec.key: mask for spec, mask in self.structures}, self.geometry, edits, self.series_uid
                )
                self._edited = (digest, [(spec, masks[spec.key]) for spec, _ in self.structures])
            structures = self._edited[1]
        return SliceRenderer(self.array, self.geometry, structures)

    def render(
        self, plane: Plane, index: int, window: Window, visible: Collection[str], edits: Sequence[Edit] = ()
    ) -> Image.Image:
        return self.edited(edits).render(plane, index, window, visible)

    def flag_target(self, flag: QAFlag) -> tuple[Plane, int] | None:
        """The plane and view index in the middle of the planes ``flag`` names, if it names any."""
        if flag.planes is None:
            return None
        view = self.renderer.view
        axis = view.perm.index(flag.planes.axis)
        plane = PLANES[axis]
        middle = (flag.planes.first + flag.planes.last) // 2
        return plane, view.view_index(PLANE_AXIS[plane], min(middle, view.shape[axis] - 1))


def scene_from_work_store(volume_path: Path, volume_sha256: str, masks_path: Path, masks_sha256: str) -> Scene:
    """The volume and masks behind an approval card (its `ReviewFiles`), each checked against its sha256."""
    try:
        volume = load_volume(volume_path, volume_sha256)
        result = load_result(masks_path, masks_sha256)
    except (OSError, ValueError, KeyError) as exc:
        raise SceneError(
            f"cannot open the result behind this card ({masks_path}): {exc}. "
            "The work files were removed or changed: run the study again to review it."
        ) from exc
    return Scene(
        name=f"series {volume.series_instance_uid}",
        array=volume.array,
        geometry=volume.geometry,
        series_uid=volume.series_instance_uid,
        structures=[(s.structure, s.mask) for s in result.structures],
        flags=result.all_flags(),
    )


class SceneCache:
    """The last few scenes opened, by source, loaded once each (a chest CT and its masks: ~200 MB)."""

    def __init__(self, load: Callable[[dict], Scene], size: int = 2) -> None:
        self.load = load
        self.size = size
        self._scenes: OrderedDict[str, Scene] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, source: dict) -> Scene:
        key = json.dumps(source, sort_keys=True)
        with self._lock:
            if key in self._scenes:
                self._scenes.move_to_end(key)
                return self._scenes[key]
        scene = self.load(source)
        with self._lock:
            self._scenes[key] = scene
            while len(self._scenes) > self.size:
                self._scenes.popitem(last=False)
        return scene
