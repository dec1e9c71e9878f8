"""Synthetic handwritten signatures for the public example gallery.

Why this exists: the public app must ship example pairs, but dataset images
may not be redistributed, so the examples are drawn by our own code. A writer
is a seed; the seed fixes a cursive stroke plan (the writer's identity) and
every `genuine` call renders one specimen of it with natural variation; every
`forgery` call is another hand copying it (``synth_plan``). Run
`python -m dsn.data.examples OUT_DIR` to write the app's gallery with its manifest.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from dsn.data.synth_plan import PlanDraws, Stroke, plan_signature

CANVAS_HW = (250, 600)
PAPERS = ("white", "grey", "yellow", "photo")
GALLERY_WRITER_SEEDS = (7, 1234, 2024, 31, 404, 99)
_SUPERSAMPLE = 3  # draw at 3x and area-downsample: cheap antialiasing
_STEP_PX = 0.75  # arc-length spacing of rendered path points, output pixels
_MARGIN_PX = (22, 28)  # (y, x) free border around the ink


_InkPath = tuple[np.ndarray, np.ndarray, np.ndarray, bool]  # points, width, opacity, blobbed ends


def _centripetal_catmull_rom(points: np.ndarray, samples_per_segment: int = 24) -> np.ndarray:
    """Smooth curve through control points; centripetal so tight loops do not cusp."""
    if len(points) < 2:
        return points.copy()
    ext = np.concatenate([2 * points[:1] - points[1:2], points, 2 * points[-1:] - points[-2:-1]])
    p0, p1, p2, p3 = (ext[i : i + len(points) - 1][:, None, :] for i in range(4))

    def knot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.maximum(np.linalg.norm(b - a, axis=-1, keepdims=True) ** 0.5, 1e-4)

    t0 = np.zeros_like(p0[..., :1])
    t1 = t0 + knot(p0, p1)
    t2 = t1 + knot(p1, p2)
    t3 = t2 + knot(p2, p3)
    t = t1 + (t2 - t1) * np.linspace(0, 1, samples_per_segment, endpoint=False)[None, :, None]
    a1 = ((t1 - t) * p0 + (t - t0) * p1) / (t1 - t0)
    a2 = ((t2 - t) * p1 + (t - t1) * p2) / (t2 - t1)
    a3 = ((t3 - t) * p2 + (t - t2) * p3) / (t3 - t2)
    b1 = ((t2 - t) * a1 + (t - t0) * a2) / (t2 - t0)
    b2 = ((t3 - t) * a2 + (t - t1) * a3) / (t3 - t1)
    curve = ((t2 - t) * b1 + (t - t1) * b2) / (t2 - t1)
    return np.concatenate([curve.reshape(-1, 2), points[-1:]])


def _resample(path: np.ndarray, step: float) -> np.ndarray:
    """Evenly spaced points along a polyline, so noise and pressure are per-length."""
    seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    s = np.linspace(0, arc[-1], max(2, int(arc[-1] / step) + 1))
    return np.stack([np.interp(s, arc, path[:, 0]), np.interp(s, arc, path[:, 1])], 1)


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Unit-variance noise correlated over about `sigma` samples."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    noise = np.convolve(rng.normal(size=n + 2 * radius), kernel / kernel.sum(), mode="valid")
    return noise / max(noise.std(), 1e-6)


def _sample_seed(rng_or_seed: int | np.random.Generator) -> int:
    """One integer per specimen, so a caller's Generator advances exactly one draw."""
    if isinstance(rng_or_seed, np.random.Generator):
        return int(rng_or_seed.integers(2**62))
    return int(rng_or_seed)


@dataclass(frozen=True)
class _Pen:
    """How a hand presses: stroke width, pressure and how fast strokes taper at their ends."""

    width_px: float
    pressure_base: float
    downstroke_gain: float
    taper_px: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Pen:
        return cls(rng.uniform(1.7, 3.0), rng.uniform(0.35, 0.6), rng.uniform(0.35, 0.7), rng.uniform(6, 14))


class SyntheticWriter:
    """A synthetic person: fixed stroke plan and pen habits, many specimens."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(self._plan_seed(seed))
        self.seed = seed
        self.strokes = plan_signature(PlanDraws(rng))
        self.slant_deg = rng.uniform(-4, 24)
        self.baseline_deg = rng.uniform(-3, 7)
        self.target_width_px = rng.uniform(400, 500)
        self.pen = _Pen.draw(rng)
        inks = ((22, 24, 30), (24, 38, 118), (32, 34, 70))
        self.ink_rgb = np.array(inks[rng.integers(len(inks))], np.float32)

    @staticmethod
    def _plan_seed(seed: int) -> list[int]:
        return [seed, 0x5197]

    def forger_hand(self, sample_seed: int, skill: float) -> tuple[list[Stroke], _Pen]:
        """Another person's copy of this writer's name: the same letters, capitals and flourish,
        proportions pulled towards the forger's own habits (the less skill, the further), the
        forger's own letter forms on top, and the forger's own pen pressure."""
        forger = np.random.default_rng([self.seed, sample_seed, 0xF0A6])
        draws = PlanDraws(np.random.default_rng(self._plan_seed(self.seed)), forger, fidelity=0.4 + 0.5 * skill, own_forms=2.0 - skill)
        return plan_signature(draws), _Pen.draw(forger)

    def genuine(self, rng_or_seed: int | np.random.Generator, paper: str = "white") -> np.ndarray:
        """One natural specimen: RGB uint8 (250, 600, 3), dark ink on light paper."""
        return self._render(_sample_seed(rng_or_seed), None, paper)

    def forgery(self, rng_or_seed: int | np.random.Generator, skill: float = 0.7, paper: str = "white") -> np.ndarray:
        """A skilled imitation by another hand (``forger_hand``): the same name and design in the
        forger's letter forms, proportions and pen pressure, drawn slowly (tremor, blunt even
        pressure, pen lifts, angular curves); `skill` in [0, 1] scales how far it strays (1 = best
        forger). Each sample seed is another forger."""
        if not 0.0 <= skill <= 1.0:
            raise ValueError(f"skill must be in [0, 1], got {skill}")
        return self._render(_sample_seed(rng_or_seed), skill, paper)

    def _render(self, sample_seed: int, skill: float | None, paper: str) -> np.ndarray:
        if paper not in PAPERS:
            raise ValueError(f"paper must be one of {PAPERS}, got {paper!r}")
        # Separate streams so the paper never changes the ink layout.
        seq = np.random.SeedSequence([self.seed, sample_seed, 0 if skill is None else 1])
        ink_rng, paper_rng = (np.random.default_rng(s) for s in seq.spawn(2))
        strokes, pen = (self.strokes, self.pen) if skill is None else self.forger_hand(sample_seed, skill)
        paths = self._trajectories(ink_rng, skill, strokes, pen)
        alpha = _draw_ink(paths, ink_rng)
        return _composite(alpha, self.ink_rgb, paper, paper_rng)

    def _trajectories(self, rng: np.random.Generator, skill: float | None, strokes: list[Stroke], pen: _Pen) -> list[_InkPath]:
        """Dense pen paths in output pixels with per-point width and opacity."""
        forged = skill is not None
        unskill = 1.0 - skill if forged else 0.0
        jitter = 0.03 + 0.05 * unskill if forged else 0.025
        slant = self.slant_deg + rng.normal(0, 1.5)
        stretch = rng.normal(1.0, 0.03)
        scale = rng.normal(1.0, 0.04)
        if forged:  # forgers misjudge slant, width and loop heights
            slant += rng.choice([-1, 1]) * (1.5 + 6 * unskill)
            stretch *= 1 + rng.choice([-1, 1]) * (0.03 + 0.08 * unskill)
            warp_amp, warp_period, warp_phase = 0.05 + 0.12 * unskill, rng.uniform(1.5, 3), rng.uniform(0, 2 * np.pi)
            loop_gain = 1 + rng.choice([-1, 1]) * (0.05 + 0.15 * unskill)
        angle = np.deg2rad(self.baseline_deg + rng.normal(0, 1.2))
        layout_width = float(np.ptp(np.concatenate([s.points[:, 0] for s in strokes])))
        px = self.target_width_px / layout_width * scale
        rot = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        dense = []
        for stroke in strokes:
            pts = stroke.points.copy()
            if forged:
                pts[:, 0] += warp_amp * np.sin(2 * np.pi * pts[:, 0] / warp_period + warp_phase)
                pts[:, 1] = np.where(pts[:, 1] > 1, 1 + (pts[:, 1] - 1) * loop_gain, pts[:, 1])
            pts += rng.normal(0, jitter, pts.shape)
            if stroke.kind == "mark":  # dots and crosses are placed loosely
                pts += rng.normal(0, 0.07, 2)
            pts[:, 0] = (pts[:, 0] + pts[:, 1] * np.tan(np.deg2rad(slant))) * stretch
            pts = pts @ rot.T * (px, -px)  # image y points down
            dense.append(_resample(_centripetal_catmull_rom(pts), _STEP_PX))
        dense = _fit_to_canvas(dense, rng)
        out = []
        for stroke, path in zip(strokes, dense):
            pieces = _forge_path(path, rng, unskill) if forged else [path]
            for piece in pieces:
                width, opacity = self._pressure(piece, rng, pen, forged, skill or 0.0)
                if forged:
                    piece = _add_tremor(piece, rng, 0.25 + 0.9 * unskill)
                out.append((piece, width, opacity, forged and stroke.kind != "mark"))
        return out

    def _pressure(self, path: np.ndarray, rng: np.random.Generator, pen: _Pen, forged: bool, skill: float) -> tuple[np.ndarray, np.ndarray]:
        """Downstrokes press harder, fast genuine strokes taper at both ends;
        forgers draw slowly with flat pressure and blunt ends."""
        tangent = np.gradient(path, axis=0)
        tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
        down = np.convolve(np.pad(np.clip(tangent[:, 1], 0, 1), 4, mode="edge"), np.ones(9) / 9, mode="valid")
        pressure = pen.pressure_base + pen.downstroke_gain * down + 0.08 * _smooth_noise(rng, len(path), 20)
        arc = np.arange(len(path)) * _STEP_PX
        if forged:
            pressure = pressure.mean() + 0.08 + (pressure - pressure.mean()) * (0.2 + 0.35 * skill)
        ends = np.minimum(arc, arc[-1] - arc) / (1.5 if forged else pen.taper_px)
        pressure = np.clip(pressure * (0.3 + 0.7 * np.clip(ends, 0, 1) ** 0.7), 0.05, 1.1)
        return pen.width_px * (0.45 + 0.75 * pressure), np.clip(0.45 + 0.6 * pressure, 0, 1)


def _fit_to_canvas(paths: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Shrink if needed and place the signature near the centre of the canvas."""
    allp = np.concatenate(paths)
    lo, hi = allp.min(0), allp.max(0)
    room = np.array([CANVAS_HW[1] - 2 * _MARGIN_PX[1], CANVAS_HW[0] - 2 * _MARGIN_PX[0]], float)
    shrink = min(1.0, *(room / np.maximum(hi - lo, 1e-6)))
    size = (hi - lo) * shrink
    slack = np.maximum(room - size, 0)
    offset = np.array(_MARGIN_PX[::-1], float) + slack * np.clip(rng.normal(0.5, 0.12, 2), 0, 1)
    return [(p - lo) * shrink + offset for p in paths]


def _forge_path(path: np.ndarray, rng: np.random.Generator, unskill: float) -> list[np.ndarray]:
    """Angular 'drawn' curves and hesitation pen lifts of a slow copyist."""
    path = path.copy()
    n = len(path)
    for _ in range(int(n / 400 * (0.5 + 2 * unskill)) + int(rng.random() < 0.5 + 0.4 * unskill)):
        span = int(rng.uniform(40, 120) / _STEP_PX)
        if n <= span + 2:
            break
        start = int(rng.integers(0, n - span))
        knots = np.arange(start, start + span + 1, int(rng.uniform(10, 20) / _STEP_PX))
        for a, b in itertools.pairwise(knots):  # straight chords instead of the curve
            path[a : b + 1] = np.linspace(path[a], path[b], b - a + 1)
    lifts = rng.poisson(n / 600 * (0.6 + 2.5 * unskill))
    cuts = np.sort(rng.choice(np.arange(20, max(21, n - 20)), size=min(lifts, max(0, n - 40) // 30), replace=False))
    pieces, prev = [], 0
    for cut in cuts:
        if cut - prev < 15:
            continue
        pieces.append(path[prev : cut + 1].copy())
        prev = cut + int(rng.integers(-3, 4))  # restart with a small gap or overlap
        path[prev:] += rng.normal(0, 0.6, 2)  # ...and not quite where the pen left
    pieces.append(path[prev:])
    return [p for p in pieces if len(p) >= 2]


def _add_tremor(path: np.ndarray, rng: np.random.Generator, amplitude_px: float) -> np.ndarray:
    """Sideways shake along the stroke, the classic sign of slow copying."""
    tangent = np.gradient(path, axis=0)
    tangent /= np.maximum(np.linalg.norm(tangent, axis=1, keepdims=True), 1e-6)
    normal = np.stack([-tangent[:, 1], tangent[:, 0]], 1)
    shake = amplitude_px * (0.7 * _smooth_noise(rng, len(path), 4) + 0.3 * _smooth_noise(rng, len(path), 12))
    return path + normal * shake[:, None]


def _draw_ink(paths: list[_InkPath], rng: np.random.Generator) -> np.ndarray:
    """Ink opacity map (H, W) float32 in [0, 1], antialiased by supersampling."""
    shift = 2
    canvas = np.zeros((CANVAS_HW[0] * _SUPERSAMPLE, CANVAS_HW[1] * _SUPERSAMPLE), np.uint8)
    segs, keys, blobs = [], [], []
    for path, width, opacity, blunt in paths:
        fixed = np.round(path * _SUPERSAMPLE * (1 << shift)).astype(np.int32)
        segs.append(np.stack([fixed[:-1], fixed[1:]], 1))
        mid_w, mid_o = (width[:-1] + width[1:]) / 2, (opacity[:-1] + opacity[1:]) / 2
        thick = np.maximum(1, np.round(mid_w * _SUPERSAMPLE)).astype(np.int64)
        keys.append(np.round(mid_o * 15).astype(np.int64) * 256 + thick)
        if blunt:  # a resting pen leaves a small ink blob at both ends
            for end in (0, -1):
                blobs.append((fixed[end], width[end] * 0.75 * _SUPERSAMPLE, min(1.0, opacity[end] + 0.15)))
    all_segs, all_keys = np.concatenate(segs), np.concatenate(keys)
    for key in np.unique(all_keys):  # darker groups last so they win at crossings
        chosen = all_segs[all_keys == key]
        cv2.polylines(canvas, list(chosen), False, int(255 * (key // 256) / 15), int(key % 256), cv2.LINE_8, shift)
    for centre, radius, opacity in blobs:
        cv2.circle(canvas, tuple(int(v) for v in centre), int(radius * (1 << shift)), int(255 * opacity), -1, cv2.LINE_8, shift)
    alpha = cv2.resize(canvas, CANVAS_HW[::-1], interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    grain = 1 + 0.1 * rng.standard_normal(alpha.shape).astype(np.float32)  # ballpoint graininess
    return np.clip(alpha * grain, 0, 1)


def _low_frequency(rng: np.random.Generator, cells: tuple[int, int]) -> np.ndarray:
    """Smooth random field with unit-ish amplitude, for paper tone and lighting."""
    grid = rng.standard_normal(cells).astype(np.float32)
    return cv2.resize(grid, CANVAS_HW[::-1], interpolation=cv2.INTER_CUBIC)


def _composite(alpha: np.ndarray, ink_rgb: np.ndarray, paper: str, rng: np.random.Generator) -> np.ndarray:
    """Lay ink on paper; 'photo' adds uneven light, blur and sensor noise."""
    base = {"white": (249, 249, 247), "grey": (212, 212, 208), "yellow": (243, 232, 188), "photo": (232, 228, 218)}[paper]
    tone = np.array(base, np.float32) + rng.normal(0, 1.5) + rng.normal(0, 0.5, 3).astype(np.float32)
    sheet = tone[None, None, :] + 1.5 * _low_frequency(rng, (4, 8))[..., None]
    image = sheet * (1 - alpha[..., None]) + ink_rgb[None, None, :] * alpha[..., None]
    if paper == "photo":
        h, w = CANVAS_HW
        xx, yy = np.linspace(-0.5, 0.5, w, dtype=np.float32)[None], np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None]
        theta = rng.uniform(0, 2 * np.pi)
        ramp = xx * np.float32(np.cos(theta)) + yy * np.float32(np.sin(theta)) + 0.5
        light = 1 - np.float32(rng.uniform(0.15, 0.3)) * ramp - 0.25 * (xx**2 + yy**2)
        light += 0.03 * _low_frequency(rng, (3, 5))
        sensor = 2.0 * rng.standard_normal((h, w, 1), np.float32) + 0.6 * rng.standard_normal(image.shape, np.float32)
        image = cv2.GaussianBlur(image * light[..., None] + sensor, (0, 0), 0.7)
    return (np.clip(image, 0, 255) + 0.5).astype(np.uint8)


def make_example_pairs(out_dir: Path, n_writers: int = 3) -> list[tuple[Path, Path, str]]:
    """Write gallery PNGs: per writer a genuine-genuine and a genuine-forgery pair.

    Returns (reference, query, "genuine" | "forged") rows. Deterministic: fixed
    writer and specimen seeds; papers vary across writers to show robustness.
    """
    if not 1 <= n_writers <= len(GALLERY_WRITER_SEEDS):
        raise ValueError(f"n_writers must be in 1..{len(GALLERY_WRITER_SEEDS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    query_papers = ("white", "yellow", "photo", "grey", "white", "yellow")
    rows: list[tuple[Path, Path, str]] = []
    for index, seed in enumerate(GALLERY_WRITER_SEEDS[:n_writers]):
        writer = SyntheticWriter(seed)
        paper = query_papers[index]
        images = {
            "reference": writer.genuine(1, "white"),
            "genuine": writer.genuine(2, paper),
            "forged": writer.forgery(3, skill=0.7, paper=paper),
        }
        paths = {role: out_dir / f"writer{index + 1}_{role}.png" for role in images}
        for role, image in images.items():
            cv2.imwrite(str(paths[role]), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6])
        rows += [(paths["reference"], paths["genuine"], "genuine"), (paths["reference"], paths["forged"], "forged")]
    return rows


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m dsn.data.synth OUT_DIR [N_WRITERS]")
    for reference, query, label in make_example_pairs(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:])):
        print(f"{reference}\t{query}\t{label}")
