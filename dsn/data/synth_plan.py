"""Stroke plans of synthetic signatures: what a name looks like, and how another hand copies it.

A plan is drawn from random numbers of two kinds. The *design* (which capitals and
letters, a first name or not, the flourish) is what a forger sees and copies exactly.
The *hand* is how the letters are executed: proportions (letter width, loop heights,
spacing) that a forger imitates only as well as their skill allows, and letter forms
(the small wobble of each control point) that are the forger's own on top of the
writer's. A genuine plan draws everything from the writer's stream, in one fixed order;
a forger's plan draws the same sequence from the writer's stream (so the design is
identical) and mixes in draws from the forger's own stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dsn.data.synth_glyphs import CAPITALS, GLYPHS, LETTER_WEIGHTS, MARKS


@dataclass(frozen=True, eq=False)
class Stroke:
    points: np.ndarray  # (n, 2) control points, x-height units, y up
    kind: str  # "main" | "mark" | "flourish"


class PlanDraws:
    """The random numbers of one plan: the writer's own, or a forger's imitation of them.

    ``forger`` None: every draw is the writer's (a genuine plan). Otherwise
    ``fidelity`` in [0, 1] is how closely the forger reproduces the writer's
    proportions (1: exactly) and ``own_forms`` scales the forger's own letter-form
    wobble added to the writer's.
    """

    def __init__(
        self, writer: np.random.Generator, forger: np.random.Generator | None = None, fidelity: float = 1.0, own_forms: float = 0.0
    ) -> None:
        self.writer, self.forger, self.fidelity, self.own_forms = writer, forger, fidelity, own_forms

    def design(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A choice a forger copies exactly (which letter, which flourish); ``method`` names a numpy ``Generator`` draw."""
        return getattr(self.writer, method)(*args, **kwargs)

    def proportion(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """A measure the forger imitates: the writer's value pulled towards the forger's habit."""
        own = getattr(self.writer, method)(*args, **kwargs)
        if self.forger is None:
            return own
        theirs = getattr(self.forger, method)(*args, **kwargs)
        return self.fidelity * own + (1.0 - self.fidelity) * theirs

    def form(self, scale: float, shape: tuple[int, ...] | int) -> np.ndarray:
        """Zero-mean wobble of control points: the writer's, plus the forger's own construction."""
        own = self.writer.normal(0.0, scale, shape)
        if self.forger is None:
            return own
        return own + self.forger.normal(0.0, scale * self.own_forms, shape)


def plan_signature(draws: PlanDraws) -> list[Stroke]:
    """A signature's strokes (words, letters, marks, flourish) in x-height units."""
    shape = {
        "cap_scale": draws.proportion("uniform", 0.85, 1.2),
        "width": draws.proportion("uniform", 0.8, 1.3),
        "ascender": draws.proportion("uniform", 0.8, 1.25),
        "descender": draws.proportion("uniform", 0.8, 1.3),
        "wave_tail": float(draws.design("random") < 0.4),
    }
    strokes: list[Stroke] = []
    x = 0.0
    if draws.design("random") < 0.7:  # a first name or initial before the surname
        first, x = _plan_word(draws, x, int(draws.design("integers", 0, 4)), {**shape, "wave_tail": 0.0})
        strokes += first
        x += draws.proportion("uniform", 0.5, 1.1)
    last, x_end = _plan_word(draws, x, int(draws.design("integers", 3, 7)), shape)
    strokes += last
    style = draws.design("choice", ["underline", "swoop", "none"], p=[0.35, 0.4, 0.25])
    if style == "underline":
        y = draws.proportion("uniform", -0.9, -0.5)
        t = np.linspace(0, 1, 5)
        pts = np.stack([-0.2 + t * (x_end + 0.4), y + 0.25 * np.sin(np.pi * t) * draws.design("choice", [-1, 1])], 1)
        strokes.append(Stroke(pts + draws.form(0.05, pts.shape), "flourish"))
    elif style == "swoop":  # the last letter's tail sweeps back left under the name
        idx = len(strokes) - 1 - sum(s.kind == "mark" for s in last)
        span = x_end - x
        tail = np.array([(x_end + 0.5, 0.7), (x_end + 0.3, -0.4), (x_end - 0.35 * span, -0.85), (x - 0.1 * span, -0.6), (x - 0.3, -0.3)])
        tail += draws.form(0.06, tail.shape)
        strokes[idx] = Stroke(np.concatenate([strokes[idx].points, tail]), "main")
    return strokes


def _plan_word(draws: PlanDraws, x0: float, n_letters: int, shape: dict[str, float]) -> tuple[list[Stroke], float]:
    """Capital plus connected lowercase letters; returns strokes and the end x."""
    cap = CAPITALS[draws.design("integers", len(CAPITALS))]
    cap_scale = shape["cap_scale"]
    strokes = [np.array(s, float) * cap_scale + (x0, 0.0) for s in cap]
    cursor = x0 + (max(p[0] for s in cap for p in s) - 0.1) * cap_scale
    main = [strokes.pop()]  # last capital stroke is continued by the letters
    marks: list[Stroke] = []
    letters = list(LETTER_WEIGHTS)
    weights = np.array(list(LETTER_WEIGHTS.values()), float)
    for _ in range(n_letters):
        letter = letters[draws.design("choice", len(letters), p=weights / weights.sum())]
        glyph = np.array(GLYPHS[letter], float)
        glyph[:, 0] *= shape["width"] * draws.proportion("uniform", 0.85, 1.15)
        glyph[:, 1] = np.where(glyph[:, 1] > 1, 1 + (glyph[:, 1] - 1) * shape["ascender"], glyph[:, 1])
        glyph[:, 1] = np.where(glyph[:, 1] < 0, glyph[:, 1] * shape["descender"], glyph[:, 1])
        glyph += draws.form(0.05, glyph.shape)  # the writer's personal letter forms
        main.append(glyph + (cursor, 0.0))  # noqa: RUF005  (numpy broadcast: shifts the glyph)
        if letter in MARKS:
            mark = np.array(MARKS[letter], float) * (shape["width"], 1.0) + draws.form(0.06, 2)
            marks.append(Stroke(mark + (cursor, 0.0), "mark"))  # noqa: RUF005  (numpy broadcast)
        cursor += glyph[:, 0].max() + draws.proportion("uniform", 0.0, 0.15)
    if shape["wave_tail"]:  # letters that dissolve into a shrinking wave, common in signatures
        n = draws.design("integers", 2, 5)
        wave = [(cursor + 0.35 * k + dx, amp) for k in range(n) for dx, amp in ((0.1, 0.8 * 0.75**k), (0.28, 0.05))]
        main.append(np.array([*wave, (cursor + 0.35 * n + 0.6, 0.25)]))
        cursor += 0.35 * n + 0.6
    word = [Stroke(s, "main") for s in strokes] + [Stroke(np.concatenate(main), "main")]
    return word + marks, cursor
