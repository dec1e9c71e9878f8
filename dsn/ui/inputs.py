"""The two signature inputs: each side is an upload (file, paste, webcam) or a drawing.

A side shows two tabs, "Upload" and "Draw"; whichever tab is showing is what
gets verified, so what the visitor sees is what the model gets. The drawing
pad is a white canvas with a dark pen, because preprocessing looks for ink
that is darker than its paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from dsn.data.preprocess import PreprocessError, probe_image
from dsn.ui.upload import SignatureUpload

UPLOAD, DRAW = "upload", "draw"
CANVAS = (720, 300)  # width, height: signatures are wide
PEN = "#1a1a2e"


def blank_canvas() -> dict:
    """A white page for the sketchpad (its value dict: background, layers, composite)."""
    white = np.full((CANVAS[1], CANVAS[0], 3), 255, np.uint8)
    return {"background": white, "layers": [], "composite": None}


@dataclass
class SignatureInput:
    """The components of one side (reference or query)."""

    name: str
    tabs: gr.Tabs
    upload: SignatureUpload  # value: a file path
    drawing: gr.Sketchpad
    mode: gr.State  # UPLOAD or DRAW: the tab that is showing

    @property
    def components(self) -> list:
        return [self.upload, self.drawing, self.mode]


def signature_input(name: str, hint: str) -> SignatureInput:
    """Build one side's tabs; must be called inside a Blocks context."""
    mode = gr.State(UPLOAD)
    with gr.Tabs(selected=UPLOAD, elem_id=f"{name}-tabs") as tabs:
        with gr.Tab("Upload", id=UPLOAD) as upload_tab:
            upload = SignatureUpload(
                label=f"{name.capitalize()} signature",
                sources=["upload", "clipboard", "webcam"],
                type="filepath",  # our reader checks the size before decoding and fixes EXIF rotation
                image_mode=None,
                height=210,
                placeholder=hint,
                elem_id=f"{name}-upload",
            )
        with gr.Tab("Draw", id=DRAW) as draw_tab:
            drawing = gr.Sketchpad(
                value=blank_canvas(),
                label=f"Draw the {name} signature",
                type="numpy",
                image_mode="RGB",  # transparent strokes layer is flattened on white
                canvas_size=CANVAS,
                fixed_canvas=True,
                height=260,
                brush=gr.Brush(default_size=4, colors=[PEN], default_color=PEN, color_mode="fixed"),
                layers=False,
                elem_id=f"{name}-draw",
            )
    upload_tab.select(lambda: UPLOAD, None, mode, queue=False, api_visibility="private")
    draw_tab.select(lambda: DRAW, None, mode, queue=False, api_visibility="private")
    # An upload (or a clicked example) always shows, and is used, on the Upload tab.
    upload.change(
        lambda image: (UPLOAD, gr.Tabs(selected=UPLOAD)) if image is not None else (gr.skip(), gr.skip()),
        upload,
        [mode, tabs],
        queue=False,
        api_visibility="private",
    )
    return SignatureInput(name, tabs, upload, drawing, mode)


def _drawn_image(value: dict | None) -> np.ndarray | None:
    if not value:
        return None
    composite = value.get("composite")
    if composite is None:
        return None
    image = np.asarray(composite)
    return image if image.size and image.min() < 200 else None  # nothing darker than paper: nothing drawn


def chosen_image(name: str, upload: str | None, drawing: dict | None, mode: str) -> str | np.ndarray:
    """The image of the tab that is showing, or a ``PreprocessError`` saying what is missing."""
    if mode == DRAW:
        image = _drawn_image(drawing)
        if image is None:
            raise PreprocessError(f"The {name} drawing pad is empty: draw a signature, or switch to the Upload tab.")
        return image
    if upload is None:
        raise PreprocessError(f"No {name} signature yet: upload, paste or photograph one (or draw it on the Draw tab).")
    return upload


def missing_input(name: str, upload: str | None, drawing: dict | None, mode: str) -> str | None:
    """What is missing or unreadable in one signature input (None when it is fine), checked before any model run."""
    try:
        image = chosen_image(name, upload, drawing, mode)
        if isinstance(image, str):
            probe_image(image)
    except PreprocessError as error:
        return str(error)
    return None


SIDE_VALUES = 3  # (upload, drawing, mode): one side's values, in ``SignatureInput.components`` order


def pair_sides(values: Sequence[object]) -> list[tuple[str, tuple]]:
    """(name, (upload, drawing, mode)) of both sides from a pair event's values: reference inputs first, then query's."""
    return [(name, tuple(values[SIDE_VALUES * k : SIDE_VALUES * (k + 1)])) for k, name in enumerate(("reference", "query"))]


def chosen_pair(values: Sequence[object]) -> tuple:
    """The reference and query images a pair event's values choose (see ``chosen_image``)."""
    reference, query = (chosen_image(name, *side) for name, side in pair_sides(values))
    return reference, query


def input_names(values: Sequence[object]) -> dict[str, str]:
    """What each side was, for reports: the uploaded file's name, or that it was drawn on the pad."""
    names = {}
    for name, (upload, _, mode) in pair_sides(values):
        names[name] = "drawn on the Draw pad" if mode == DRAW else Path(str(upload)).name if upload else name
    return names


def validate_pair(*values: object) -> list:
    """Gradio validator of a verify event: a missing or unreadable image gets a message at its input."""
    checks = []
    for name, side in pair_sides(values):
        problem = missing_input(name, *side)
        checks += [gr.validate(problem is None, problem or "")] * SIDE_VALUES
    return checks + [gr.validate(True, "")] * (len(values) - 2 * SIDE_VALUES)


def dataset_threshold_slider(default: float, step: float, label: str, elem_id: str) -> gr.Slider:
    """A threshold slider over the distances a dataset or reference set can have (at least 0-2)."""
    # the box shows the 3 decimals the texts quote (0.461, not 0.46089); a value sent back rounded still means the default
    return gr.Slider(0.0, round(max(2.0, 3.0 * default), 2), value=round(default, 3), step=step, label=label, elem_id=elem_id)
