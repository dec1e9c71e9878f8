"""Where a model comes from: the one loader (``load``, exported as ``dsn.load``) and the one
description of what was loaded (``ModelInfo.of``).

The app's header, the pair reports, the command line, evaluation and training all load through
``load`` and say the same things about the model through ``ModelInfo``. Reading and writing the
checkpoint files themselves is ``dsn.model.weights``' job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dsn.model.detailsemnet import DetailSemNet

UNTRAINED_SOURCE = "random initialisation (untrained)"


def is_untrained(model: DetailSemNet) -> bool:
    """Trained weights come only from ``DetailSemNet.load``, which records their source."""
    return getattr(model, "source", None) is None


def source_label(weights: DetailSemNet | str | Path | None) -> str:
    """The weights' public name, the one way every caller names them: a Hub id as given, a local checkpoint by
    its folder name (never a server path). ``weights``: a loaded model, or its source (None: random weights)."""
    source = getattr(weights, "source", None) if isinstance(weights, torch.nn.Module) else weights
    if source is None:
        return UNTRAINED_SOURCE
    source = str(source)
    return source if source.startswith("hf://") else (Path(source).name or source)


def load(source: str | Path | None = None, *, device: str | torch.device | None = None, allow_untrained: bool = True) -> DetailSemNet:
    """The one way to get a model ready to verify, for the API, the CLI, evaluation, the app and the tools.

    ``source``: a checkpoint folder or ``hf://owner/repo[@revision]``; by default the embedded
    checkpoint (``DSN_WEIGHTS`` overrides it). Without any, a random model (the same on every start)
    that :func:`is_untrained` reports, so the tools stay usable before a checkpoint exists; callers
    must say loudly that its verdicts mean nothing, and ``allow_untrained=False`` refuses it instead.
    """
    from dsn.model.weights import WeightsError, default_weights

    chosen = str(source) if source is not None else default_weights()
    if chosen is None:
        if not allow_untrained:
            raise WeightsError(
                "No weights given and no default checkpoint in checkpoints/. Pass --weights FOLDER|hf://owner/repo, "
                "or --allow-untrained to use a randomly initialised model (meaningless numbers)."
            )
        torch.manual_seed(0)
        model = DetailSemNet()
    else:
        model = DetailSemNet.load(chosen)
    return (model.to(device) if device is not None else model).eval()


@dataclass
class ModelInfo:
    """What every caller says about a model: the header, the reports, the command line."""

    source: str | None  # local folder or hf:// source; None = random initialisation
    device: str
    backbone: str
    parameters: int
    threshold: float
    metrics: dict = field(default_factory=dict)  # flattened numbers from the checkpoint's metrics.json
    test_data: str = ""  # dataset folder name the "test" metrics were measured on
    structural_weight: float = 1.0
    distance_spread: dict | None = None  # percentiles of val genuine / forged distances (metrics.json "val_distances")
    label: str = "random initialisation"  # the weights as people name them: folder name or Hub id
    sinkhorn: str = ""  # the matching's settings, e.g. "epsilon 0.1, 100 iterations"

    @classmethod
    def of(cls, model: DetailSemNet) -> ModelInfo:
        """The one description of a loaded model (from ``dsn.load``): where it came from, where it runs, what it measured."""
        source = getattr(model, "source", None)
        measured = read_checkpoint_metrics(str(source) if source is not None else None)
        return cls(
            source=str(source) if source is not None else None,
            device=str(next(model.parameters()).device),
            backbone=model.config.backbone,
            parameters=sum(p.numel() for p in model.parameters()),
            threshold=float(model.config.threshold),
            metrics=_flatten_numbers(measured),
            test_data=Path(str((measured.get("test_info") or {}).get("data") or "")).name,
            structural_weight=float(model.config.structural_weight),
            distance_spread=spread_of(measured),
            label=source_label(model),
            sinkhorn=f"epsilon {model.config.epsilon_eval:g}, {model.config.sinkhorn_iterations} iterations",
        )

    def description(self, threshold: float, threshold_source: str) -> dict[str, str]:
        """The model as a report states it, beside a decision taken at ``threshold``."""
        return {
            "weights": self.label,
            "backbone": self.backbone,
            "threshold": f"{threshold:.4f} ({threshold_source})",
            "Sinkhorn": self.sinkhorn,
        }

    @property
    def max_distance(self) -> float:
        """Global distance of unit vectors <= 2, cosine cost <= 2: the total never exceeds this."""
        return 2.0 * (1.0 + self.structural_weight)

    @property
    def summary(self) -> str:
        """One line: backbone, size and weights, e.g. \"dsnet_tiny, 1.47 M parameters, weights dsnet-tiny-joint4\"."""
        return f"{self.backbone}, {self.parameters / 1e6:.2f} M parameters, weights {self.label}"

    @property
    def untrained(self) -> bool:
        return self.source is None


def _flatten_numbers(data: object, prefix: str = "") -> dict[str, float]:
    if isinstance(data, bool):
        return {}
    if isinstance(data, (int, float)):
        return {prefix: float(data)}
    if isinstance(data, dict):
        out: dict[str, float] = {}
        for key, value in data.items():
            out.update(_flatten_numbers(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {}


def read_checkpoint_metrics(source: str | None) -> dict:
    """``metrics.json`` next to the weights, so the UI can quote it honestly; {} if absent or unreadable."""
    if source is None:
        return {}
    from dsn.model.weights import WeightsError, resolve

    try:
        folder = resolve(source)  # a Hub source is already in the local cache after loading
    except WeightsError:
        return {}
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return {}
    return content if isinstance(content, dict) else {}


def spread_of(measured: dict) -> dict | None:
    """The checkpoint's val distance percentiles when metrics.json has a usable set, else None."""
    spread = measured.get("val_distances")
    try:
        keys = ("percent", "genuine", "forged")
        if isinstance(spread, dict) and len({len(spread[k]) for k in keys}) == 1 and len(spread["percent"]) > 1:
            return {k: [float(v) for v in spread[k]] for k in keys}
    except (KeyError, TypeError, ValueError):
        pass
    return None
