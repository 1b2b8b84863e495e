"""The phantom's anatomy: tissue labels painted slice by slice, pulmonary vessels, HU values.

The lung masks are exactly the voxels painted as lung (vessels inside the lungs included;
the trachea and main bronchi excluded), so a perfect segmenter reaches Dice 1.0.

Anatomy is laid out for a 400 mm x 400 mm x 300 mm field of view (the default spec) and
scaled to the spec's field of view: a smaller grid at the default spacing gives a
proportionally smaller patient; raise the spacings for an adult-size phantom at low
resolution. Labels come in canonical order (inferior -> superior slices, posterior rows,
patient-left columns); ``make_phantom`` turns them into array order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tools.phantom.spec import MAX_HU, MIN_HU, PhantomSpec, Tissue

# The layout is designed in "reference mm" for this field of view; see the module docstring.
_REF_FOV_XY_MM = 400.0
_REF_EXTENT_Z_MM = 300.0

# Mean HU per tissue (unenhanced CT); lung gets an extra anterior-posterior gradient.
_HU = np.zeros(len(Tissue), dtype=np.float32)
_HU[Tissue.OUTSIDE_AIR] = -1000.0
_HU[Tissue.TABLE_SHELL] = 180.0
_HU[Tissue.TABLE_CORE] = -80.0
_HU[Tissue.FAT] = -100.0
_HU[Tissue.SOFT_TISSUE] = 40.0
_HU[Tissue.BONE_CORTICAL] = 650.0
_HU[Tissue.BONE_MEDULLARY] = 250.0
_HU[Tissue.LUNG_LEFT] = -850.0
_HU[Tissue.LUNG_RIGHT] = -850.0
_HU[Tissue.VESSEL_LEFT] = 40.0
_HU[Tissue.VESSEL_RIGHT] = 40.0
_HU[Tissue.AIRWAY] = -1000.0
_HU[Tissue.HEART] = 40.0
_HU[Tissue.AORTA] = 45.0
_HU[Tissue.LIVER] = 60.0
_HU[Tissue.BOWEL_GAS] = -1000.0
# Dependent (posterior) lung is denser: +-25 HU across the lung, mean unchanged.
_LUNG_GRADIENT_HU_PER_MM = 25.0 / 80.0

_LUNGS = (Tissue.LUNG_LEFT, Tissue.LUNG_RIGHT)

# Airways as capsules (start, end, lumen radius) in reference mm, (x, y, depth below top).
_CARINA = (0.0, 15.0, 115.0)
_AIRWAYS: tuple[tuple[tuple[float, float, float], tuple[float, float, float], float], ...] = (
    ((0.0, -2.0, -20.0), _CARINA, 9.0),  # trachea, from above the field of view
    (_CARINA, (52.0, 12.0, 152.0), 6.0),  # left main bronchus: longer, more horizontal
    (_CARINA, (-44.0, 12.0, 138.0), 7.5),  # right main bronchus: shorter, steeper
)
_AIRWAY_WALL_MM = 2.0

# Bowel and stomach gas below the diaphragm: centre (x, y, depth), semi-axes.
_GAS_POCKETS = (
    ((65.0, -20.0, 258.0), (35.0, 28.0, 14.0)),  # gastric fundus under the left dome
    ((20.0, -70.0, 288.0), (22.0, 12.0, 9.0)),  # transverse colon
    ((100.0, -35.0, 286.0), (15.0, 15.0, 10.0)),  # splenic flexure
)
_GAS_BELOW_DIAPHRAGM_MM = 12.0


@dataclass(frozen=True)
class _Grid:
    """Reference-mm coordinates of the canonical grid axes."""

    x: np.ndarray  # per column, ascending (patient left)
    y: np.ndarray  # per row, ascending (posterior)
    depth: np.ndarray  # per canonical slice (inferior -> superior): mm below the top slice
    pixel_ref_mm: float  # one pixel, in reference mm

    def window(
        self, x0: float, x1: float, y0: float, y1: float
    ) -> tuple[slice, slice, np.ndarray, np.ndarray]:
        """Rows/columns covering a reference-mm box, with broadcastable coordinates."""
        cs = slice(int(np.searchsorted(self.x, x0)), int(np.searchsorted(self.x, x1, "right")))
        rs = slice(int(np.searchsorted(self.y, y0)), int(np.searchsorted(self.y, y1, "right")))
        return rs, cs, self.x[cs][None, :], self.y[rs][:, None]


def _grid(spec: PhantomSpec) -> _Grid:
    scale_xy = min(spec.rows, spec.columns) * spec.pixel_spacing_mm / _REF_FOV_XY_MM
    scale_z = spec.slices * spec.slice_thickness_mm / _REF_EXTENT_Z_MM
    dx = spec.pixel_spacing_mm
    x = (np.arange(spec.columns) - (spec.columns - 1) / 2.0) * dx / scale_xy
    y = (np.arange(spec.rows) - (spec.rows - 1) / 2.0) * dx / scale_xy
    depth = np.arange(spec.slices)[::-1] * spec.slice_thickness_mm / scale_z
    return _Grid(
        x=x.astype(np.float32),
        y=y.astype(np.float32),
        depth=depth.astype(np.float64),
        pixel_ref_mm=dx / scale_xy,
    )


def canonical_labels(spec: PhantomSpec) -> np.ndarray:
    grid = _grid(spec)
    labels = np.empty((spec.slices, spec.rows, spec.columns), dtype=np.uint8)
    # Airway walls must stay at least ~1.5 pixels thick or the lumen would touch the lung.
    wall = max(_AIRWAY_WALL_MM, 1.5 * grid.pixel_ref_mm)
    for k, depth in enumerate(grid.depth):
        _paint_slice(labels[k], grid, float(depth), wall)
    _paint_vessels(labels, grid, np.random.default_rng([spec.seed, 1]))
    return labels


def _ellipse(
    x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float
) -> np.ndarray:
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0


def _paint_ellipse(
    lab: np.ndarray,
    grid: _Grid,
    centre: tuple[float, float],
    semi: tuple[float, float],
    tissue: Tissue,
    only: tuple[Tissue, ...] | None = None,
) -> None:
    cx, cy = centre
    ax, ay = semi
    if ax <= 0 or ay <= 0:
        return
    rs, cs, x, y = grid.window(cx - ax, cx + ax, cy - ay, cy + ay)
    sub = lab[rs, cs]
    region = _ellipse(x, y, cx, cy, ax, ay)
    if only is not None:
        region &= np.isin(sub, only)
    sub[region] = tissue


def _paint_capsule(
    lab: np.ndarray,
    grid: _Grid,
    depth: float,
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    radius: float,
    tissue: Tissue,
    only: tuple[Tissue, ...] | None = None,
) -> None:
    """Paint the cross-section of a 3D capsule (a tube with round ends) in one slice."""
    p0 = np.asarray(start, dtype=np.float64)
    p1 = np.asarray(end, dtype=np.float64)
    if depth < min(p0[2], p1[2]) - radius or depth > max(p0[2], p1[2]) + radius:
        return
    lo = np.minimum(p0, p1) - radius
    hi = np.maximum(p0, p1) + radius
    rs, cs, x, y = grid.window(lo[0], hi[0], lo[1], hi[1])
    d = p1 - p0
    wx, wy, wz = x - p0[0], y - p0[1], depth - p0[2]
    u = np.clip((wx * d[0] + wy * d[1] + wz * d[2]) / float(d @ d), 0.0, 1.0)
    dist2 = (wx - u * d[0]) ** 2 + (wy - u * d[1]) ** 2 + (wz - u * d[2]) ** 2
    sub = lab[rs, cs]
    region = dist2 <= radius * radius
    if only is not None:
        region &= np.isin(sub, only)
    sub[region] = tissue


def _diaphragm_depth(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Depth of the diaphragm under each point: two domes, lower laterally and posteriorly.

    The right dome sits higher than the left (the liver), as in most patients.
    """
    left = x >= 0.0
    top = np.where(left, 228.0, 212.0)
    cx = np.where(left, 70.0, -70.0)
    r2 = np.minimum(((x - cx) / 75.0) ** 2 + ((y + 5.0) / 85.0) ** 2, 1.2)
    posterior_recess = 18.0 * np.clip(y / 80.0, 0.0, 1.0)
    return top + 45.0 * r2 + posterior_recess


def _lung_section(depth: float, side: int) -> tuple[float, float, float, float] | None:
    """Centre and semi-axes of a lung's cross-section at this depth, before clipping."""
    apex, full = (32.0, 110.0) if side > 0 else (29.0, 110.0)
    cx, cy, ax, ay = (72.0, 0.0, 58.0, 80.0) if side > 0 else (-74.0, 0.0, 61.0, 83.0)
    if depth <= apex:
        return None
    if depth < full:
        # Ellipsoidal taper to the apex, which sits a little posterior and medial.
        f = float(np.sqrt(1.0 - ((full - depth) / (full - apex)) ** 2))
        return cx * (0.85 + 0.15 * f), cy + 15.0 * (1.0 - f), ax * f, ay * f
    grow = 1.0 + 0.12 * (depth - full) / 120.0
    return cx, cy, ax * grow, ay * grow


def _paint_slice(lab: np.ndarray, grid: _Grid, depth: float, wall: float) -> None:
    """Paint every structure of one axial slice; later paints win."""
    lab[...] = Tissue.OUTSIDE_AIR
    x_all, y_all = grid.x[None, :], grid.y[:, None]

    # CT table: a plate curved up at the sides, below the patient, outside the body.
    top = 110.0 - 0.0004 * x_all**2
    under = (np.abs(x_all) <= 190.0) & (y_all >= top)
    lab[under & (y_all < top + 3.0)] = Tissue.TABLE_SHELL
    lab[under & (y_all >= top + 3.0) & (y_all < top + 9.0)] = Tissue.TABLE_CORE
    lab[under & (y_all >= top + 9.0) & (y_all < top + 12.0)] = Tissue.TABLE_SHELL

    # Body: subcutaneous fat around muscle.
    body_cy = -8.0
    _paint_ellipse(lab, grid, (0.0, body_cy), (165.0, 117.0), Tissue.FAT)
    _paint_ellipse(lab, grid, (0.0, body_cy), (150.0, 104.0), Tissue.SOFT_TISSUE)

    # Ribs: an elliptical band, cut into ribs that slope down anteriorly.
    rs, cs, x, y = grid.window(-142.0, 142.0, body_cy - 96.0, body_cy + 96.0)
    e_out = (x / 142.0) ** 2 + ((y - body_cy) / 96.0) ** 2
    e_in = (x / 134.0) ** 2 + ((y - body_cy) / 88.0) ** 2
    posteriority = np.clip((y - body_cy) / 96.0 * 0.5 + 0.5, 0.0, 1.0)
    phase = np.mod(depth - 40.0 * (1.0 - posteriority), 28.0)
    rib = (e_out <= 1.0) & (e_in > 1.0) & (phase < 10.0) & (np.abs(x) > 30.0)
    rib &= (depth > 15.0) & (depth < 250.0)
    lab[rs, cs][rib] = Tissue.BONE_CORTICAL
    if 20.0 < depth < 200.0:  # sternum
        rs, cs, x, y = grid.window(-16.0, 16.0, body_cy - 103.0, body_cy - 91.0)
        lab[rs, cs] = Tissue.BONE_CORTICAL

    # Lungs: inside the thoracic cavity and above the diaphragm.
    for side, tissue in ((1, Tissue.LUNG_LEFT), (-1, Tissue.LUNG_RIGHT)):
        section = _lung_section(depth, side)
        if section is None:
            continue
        cx, cy, ax, ay = section
        rs, cs, x, y = grid.window(cx - ax, cx + ax, cy - ay, cy + ay)
        lung = _ellipse(x, y, cx, cy, ax, ay)
        lung &= _ellipse(x, y, 0.0, body_cy, 132.0, 86.0)
        lung &= depth < _diaphragm_depth(x, y)
        lab[rs, cs][lung] = tissue

    # Mediastinal and paravertebral tissue keeps the lungs apart and off the spine.
    _paint_ellipse(lab, grid, (0.0, -20.0), (17.0, 55.0), Tissue.SOFT_TISSUE, only=_LUNGS)
    _paint_ellipse(lab, grid, (0.0, 62.0), (30.0, 40.0), Tissue.SOFT_TISSUE, only=_LUNGS)

    # Liver under the right dome, after a few mm of diaphragm muscle.
    rs, cs, x, y = grid.window(-132.0, 10.0, body_cy - 86.0, body_cy + 86.0)
    liver = _ellipse(x, y, 0.0, body_cy, 132.0, 86.0) & (x < 10.0)
    liver &= depth > _diaphragm_depth(x, y) + 4.0
    lab[rs, cs][liver] = Tissue.LIVER

    # Heart: anterior-left, lower half, with a pericardial margin off the lungs.
    heart_c, heart_semi = (22.0, -38.0, 198.0), (65.0, 50.0, 52.0)
    dz = (depth - heart_c[2]) / (heart_semi[2] + 6.0)
    if abs(dz) < 1.0:
        f = float(np.sqrt(1.0 - dz * dz))
        semi = ((heart_semi[0] + 6.0) * f, (heart_semi[1] + 6.0) * f)
        _paint_ellipse(lab, grid, heart_c[:2], semi, Tissue.SOFT_TISSUE, only=_LUNGS)
    dz = (depth - heart_c[2]) / heart_semi[2]
    if abs(dz) < 1.0:
        f = float(np.sqrt(1.0 - dz * dz))
        semi = (heart_semi[0] * f, heart_semi[1] * f)
        _paint_ellipse(lab, grid, heart_c[:2], semi, Tissue.HEART)

    # Aorta: ascending from the heart, arch over the left main bronchus, descending.
    aorta = (
        ((-6.0, -30.0, 160.0), (-6.0, -30.0, 62.0), 15.0),
        ((-6.0, -30.0, 62.0), (20.0, -12.0, 58.0), 13.0),
        ((20.0, -12.0, 58.0), (26.0, 34.0, 64.0), 12.0),
        ((26.0, 34.0, 64.0), (26.0, 34.0, 400.0), 12.0),
    )
    for start, end, radius in aorta:
        _paint_capsule(lab, grid, depth, start, end, radius + 4.0, Tissue.SOFT_TISSUE, only=_LUNGS)
    for start, end, radius in aorta:
        _paint_capsule(lab, grid, depth, start, end, radius, Tissue.AORTA)

    # Spine: vertebral body (cortex + medulla; discs every 25 mm), canal, arch, spinous.
    disc = np.mod(depth, 25.0) < 5.0
    if disc:
        _paint_ellipse(lab, grid, (0.0, 52.0), (17.0, 17.0), Tissue.SOFT_TISSUE)
    else:
        _paint_ellipse(lab, grid, (0.0, 52.0), (17.0, 17.0), Tissue.BONE_CORTICAL)
        _paint_ellipse(lab, grid, (0.0, 52.0), (14.0, 14.0), Tissue.BONE_MEDULLARY)
        _paint_ellipse(lab, grid, (0.0, 80.0), (13.0, 12.0), Tissue.BONE_CORTICAL)
        rs, cs, _, _ = grid.window(-4.0, 4.0, 88.0, 104.0)
        lab[rs, cs] = Tissue.BONE_CORTICAL
        rs, cs, _, _ = grid.window(-30.0, 30.0, 74.0, 81.0)
        lab[rs, cs] = Tissue.BONE_CORTICAL
    _paint_ellipse(lab, grid, (0.0, 80.0), (7.0, 7.0), Tissue.SOFT_TISSUE)

    # Trachea and main bronchi: air lumen inside a soft-tissue wall; never lung.
    for start, end, radius in _AIRWAYS:
        _paint_capsule(lab, grid, depth, start, end, radius + wall, Tissue.SOFT_TISSUE)
    for start, end, radius in _AIRWAYS:
        _paint_capsule(lab, grid, depth, start, end, radius, Tissue.AIRWAY)

    # Bowel gas, kept clear of the lung bases.
    for (cx, cy, cz), (ax, ay, az) in _GAS_POCKETS:
        dz = (depth - cz) / az
        if abs(dz) >= 1.0:
            continue
        f = float(np.sqrt(1.0 - dz * dz))
        rs, cs, x, y = grid.window(cx - ax * f, cx + ax * f, cy - ay * f, cy + ay * f)
        gas = _ellipse(x, y, cx, cy, ax * f, ay * f)
        gas &= depth > _diaphragm_depth(x, y) + _GAS_BELOW_DIAPHRAGM_MM
        lab[rs, cs][gas] = Tissue.BOWEL_GAS


def _vessel_tree(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Bifurcating pulmonary vessel segments (start, end, radius) fanning out from each hilum.

    Each child bends a little towards the middle of its lung so that most of the tree
    stays inside the lung, where it is painted.
    """
    segments: list[tuple[np.ndarray, np.ndarray, float]] = []
    for side, hilum in ((1, (44.0, 2.0, 150.0)), (-1, (-44.0, 2.0, 142.0))):
        # Trunks fan out up, laterally and down, anterior and posterior (depth grows down).
        trunks = [
            (0.3 * side, 0.2, -1.0),
            (0.8 * side, -0.4, -0.6),
            (1.0 * side, 0.3, -0.2),
            (1.0 * side, -0.5, 0.3),
            (0.6 * side, 0.6, 0.8),
            (0.5 * side, -0.5, 0.9),
            (0.2 * side, 0.2, 1.0),
        ]
        stack = [(np.array(hilum), _unit(np.array(d)), 36.0, 4.0, 0) for d in trunks]
        while stack:
            start, direction, length, radius, level = stack.pop()
            end = start + direction * length
            segments.append((start, end, radius))
            if level == 5:
                continue
            section = _lung_section(float(np.clip(end[2], 60.0, 220.0)), side)
            assert section is not None  # depths 60..220 are below both apices
            inward = np.array([section[0] - end[0], section[1] - end[1], 0.0])
            # Full pull far from the lung's centre line, fading close to it.
            inward /= max(float(np.linalg.norm(inward)), 30.0)
            perpendicular = _unit(np.cross(direction, rng.normal(size=3)))
            for sign in (1.0, -1.0):
                angle = np.deg2rad(rng.uniform(25.0, 45.0))
                child = np.cos(angle) * direction + sign * np.sin(angle) * perpendicular
                child = _unit(child + 0.3 * inward)
                child_length = length * rng.uniform(0.75, 0.88)
                stack.append((end, child, child_length, radius * 0.75, level + 1))
    return segments


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _paint_vessels(labels: np.ndarray, grid: _Grid, rng: np.random.Generator) -> None:
    """Paint vessels where there is lung only, so they stay inside the lung masks."""
    for start, end, radius in _vessel_tree(rng):
        lo = np.minimum(start, end) - radius
        hi = np.maximum(start, end) + radius
        ks = np.flatnonzero((grid.depth >= lo[2]) & (grid.depth <= hi[2]))
        cs = np.flatnonzero((grid.x >= lo[0]) & (grid.x <= hi[0]))
        rs = np.flatnonzero((grid.y >= lo[1]) & (grid.y <= hi[1]))
        if ks.size == 0 or cs.size == 0 or rs.size == 0:
            continue
        box = (slice(ks[0], ks[-1] + 1), slice(rs[0], rs[-1] + 1), slice(cs[0], cs[-1] + 1))
        x = grid.x[box[2]][None, None, :] - start[0]
        y = grid.y[box[1]][None, :, None] - start[1]
        z = grid.depth[box[0]][:, None, None].astype(np.float32) - start[2]
        d = end - start
        u = np.clip((x * d[0] + y * d[1] + z * d[2]) / float(d @ d), 0.0, 1.0)
        dist2 = (x - u * d[0]) ** 2 + (y - u * d[1]) ** 2 + (z - u * d[2]) ** 2
        sub = labels[box]
        tube = dist2 <= radius * radius
        sub[tube & (sub == Tissue.LUNG_LEFT)] = Tissue.VESSEL_LEFT
        sub[tube & (sub == Tissue.LUNG_RIGHT)] = Tissue.VESSEL_RIGHT


def hounsfield(labels: np.ndarray, spec: PhantomSpec) -> np.ndarray:
    grid = _grid(spec)
    hu = _HU[labels]
    gradient = (grid.y * _LUNG_GRADIENT_HU_PER_MM).astype(np.float32)[None, :, None]
    lung = (labels == Tissue.LUNG_LEFT) | (labels == Tissue.LUNG_RIGHT)
    hu += np.where(lung, gradient, np.float32(0.0))
    if spec.noise_hu > 0:
        rng = np.random.default_rng([spec.seed, 2])
        noise = rng.standard_normal(labels.shape, dtype=np.float32)
        noise *= np.float32(spec.noise_hu)
        hu += noise
    np.rint(hu, out=hu)
    np.clip(hu, MIN_HU, MAX_HU, out=hu)
    return hu.astype(np.int16)
