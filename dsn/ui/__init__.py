"""The Gradio explorer: ``build_app(model, info) -> gr.Blocks``; see ``dsn/ui/app.py``.

Names are imported lazily, so that importing ``dsn.ui`` does not yet import Gradio.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AppContext": "context",
    "PairViews": "context",
    "build_app": "app",
    "launch_options": "app",
    "prepare": "app",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dsn.ui' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
