"""An image upload that leaves reading the file to us.

Gradio's image component opens every upload with PIL before our code runs, so a
text file named ``x.png`` fails inside Gradio with its internals and a server
path. This component hands the uploaded file on unread; the pair's validator
then says, at the input, what our reader says everywhere else.

Gradio writes a typing stub (``upload.pyi``) for every component class; it is
kept in the repository so that importing this module leaves the tree unchanged.
"""

from __future__ import annotations

import gradio as gr
from gradio.components.image import ImageData

from gradio.events import Dependency

class SignatureUpload(gr.Image):
    """``gr.Image(type="filepath")`` whose unreadable uploads reach our checks as a path."""

    is_template = True  # drawn by Gradio's own image frontend, like its template components

    def preprocess(self, payload: ImageData | None) -> str | None:
        try:
            return super().preprocess(payload)
        except Exception:  # any decoder failure: our reader names it at the input
            return None if payload is None else str(payload.path)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component