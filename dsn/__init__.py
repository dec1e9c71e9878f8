"""DetailSemNet Explorer: offline signature verification (Shih et al., ECCV 2024) you can look inside.

    import dsn
    model = dsn.load()                                   # the embedded checkpoint, a folder, or hf://owner/repo
    result = dsn.verify(model, "reference.png", "query.png")
    print(result["verdict"], result["distance"], result["threshold"])
    pair = dsn.analyze(model, "reference.png", "query.png")  # + patch correspondences and DSI maps
    scores = dsn.evaluate(model, "../shared/datasets/cedar", split="test")

Importing ``dsn`` registers the backbones with timm (``timm.create_model("dsnet_base")``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsn.inference import PairAnalysis, verify
from dsn.inference import analyze_pair as analyze
from dsn.loading import is_untrained
from dsn.model import DetailSemNet, DetailSemNetConfig
from dsn.precision import set_precision

if TYPE_CHECKING:
    from dsn.evaluation.evaluate import EvaluationResult

__all__ = ["DetailSemNet", "DetailSemNetConfig", "PairAnalysis", "analyze", "evaluate", "is_untrained", "load", "set_precision", "verify"]


def load(source: str | Path | None = None, *, device: str | None = None, allow_untrained: bool = True) -> DetailSemNet:
    """Weights from a folder or ``hf://owner/repo[@revision]``; by default the embedded checkpoint
    (``DSN_WEIGHTS`` overrides it), else a random model that :func:`is_untrained` reports
    (``allow_untrained=False`` refuses that). See ``dsn.loading.load``."""
    from dsn.loading import load as load_model

    return load_model(source, device=device, allow_untrained=allow_untrained)


def evaluate(
    model: DetailSemNet, data: str | Path, split: str = "test", threshold: float | None = None, progress: bool = False
) -> EvaluationResult:
    """EER, ROC AUC and rates on a dataset split's standard protocol: a ``dsn.evaluation.evaluate.EvaluationResult``."""
    from dsn.evaluation.evaluate import evaluate as evaluate_pairs
    from dsn.evaluation.evaluate import load_images_and_pairs

    images, pairs = load_images_and_pairs(data, split)
    result = evaluate_pairs(model, images, pairs, threshold=threshold, progress=progress)
    result.info.update(data=str(data), split=split)
    return result
