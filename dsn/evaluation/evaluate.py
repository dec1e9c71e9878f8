"""Evaluating a checkpoint on a set of signature pairs: distances, metrics, per-writer breakdown.

One backbone pass per image (``dsn.evaluation.scoring``), then every pair from cached
embeddings, so the CEDAR test protocol (240 images, 4,260 pairs) costs 240
backbone passes, not 8,520. The command line, the HTML report and the app's
dataset explorer all go through :func:`evaluate`, so they report the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

from dsn.data.dataset import ImageCache, Pair, SignatureImage, protocol_pairs, read_pairs_csv, split_images
from dsn.evaluation.metrics import equal_error_rate, rates_at, summarize
from dsn.evaluation.scoring import EMBED_BATCH, PairScores, embed_cache, score_pairs
from dsn.loading import ModelInfo
from dsn.model.detailsemnet import DetailSemNet, Embedding, accepts
from dsn.precision import precision_for

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)
THRESHOLD_NOTES = {
    "checkpoint": "the checkpoint's own threshold, chosen on validation writers",
    "given": "a threshold chosen by the user, not the checkpoint's validation-chosen one",
}


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; ``scores`` is aligned with ``pairs``."""

    images: list[SignatureImage]
    pairs: list[Pair]
    scores: PairScores
    threshold: float
    metrics: dict
    timings: dict[str, float]
    weights: str = ""
    backbone: str = ""
    info: dict = field(default_factory=dict)  # free-form provenance: data folder, split, command
    path_root: Path | None = None  # rows show image paths relative to this folder (the app's data root)

    @property
    def accepted(self) -> np.ndarray:
        """Pairs the checkpoint's threshold calls genuine (distance <= threshold)."""
        return accepts(self.scores.distance, self.threshold)

    @property
    def correct(self) -> np.ndarray:
        return self.accepted == self.scores.genuine

    def shown_path(self, path: str | Path) -> str:
        """A path as reports show it: relative to ``path_root`` when set (no server paths leak), else as given."""
        if self.path_root is not None:
            try:
                return Path(path).resolve().relative_to(self.path_root).as_posix()
            except ValueError:
                pass
        return str(path)

    def to_rows(self) -> list[dict]:
        """One dict per pair, for CSV files and tables."""
        accepted, correct = self.accepted, self.correct
        rows = []
        for k, pair in enumerate(self.pairs):
            reference, query = self.images[pair.a], self.images[pair.b]
            rows.append(
                {
                    "reference": self.shown_path(reference.path),
                    "query": self.shown_path(query.path),
                    "writer": reference.writer,
                    "label": int(pair.genuine),
                    "distance": float(self.scores.distance[k]),
                    "global_distance": float(self.scores.global_distance[k]),
                    "structural_distance": float(self.scores.structural_distance[k]),
                    "accepted": bool(accepted[k]),
                    "correct": bool(correct[k]),
                }
            )
        return rows

    def summary(self) -> dict:
        """JSON-friendly record of the run (no per-pair data)."""
        return {
            "weights": self.weights,
            "backbone": self.backbone,
            **self.info,
            "n_images": len(self.images),
            "n_pairs": len(self.pairs),
            "threshold": self.threshold,
            "metrics": self.metrics,
            "timings": self.timings,
            "per_writer": per_writer_metrics(self),
        }


def pair_metrics(scores: PairScores, threshold: float, threshold_source: str = "checkpoint") -> dict:
    """Metrics of scored pairs; EER-type numbers only when both kinds of pair are present.

    ``threshold_source`` ("checkpoint" or "given") says where the threshold came from, so that
    no report calls a threshold the user picked "chosen on validation writers"."""
    labels = scores.genuine
    metrics: dict = {}
    if labels.any() and not labels.all():
        metrics.update(summarize(scores.distance, labels, threshold))
        metrics["eer_global_only"] = equal_error_rate(scores.global_distance, labels)[0]
        metrics["eer_structural_only"] = equal_error_rate(scores.structural_distance, labels)[0]
    else:
        accepted = accepts(scores.distance, threshold)
        metrics.update(
            {
                "threshold": float(threshold),
                "accuracy": float(np.mean(accepted == labels)) if labels.size else float("nan"),
                "n_genuine_pairs": int(labels.sum()),
                "n_forged_pairs": int((~labels).sum()),
                "note": "EER, AUC and FAR/FRR need both genuine and forged pairs",
            }
        )
    metrics["threshold_source"] = threshold_source
    metrics["threshold_note"] = THRESHOLD_NOTES[threshold_source]
    metrics["max_marginal_error"] = float(scores.marginal_error.max()) if scores.marginal_error.size else 0.0
    return metrics


def _concat_scores(parts: list[PairScores]) -> PairScores:
    return PairScores(*(np.concatenate([getattr(p, name) for p in parts]) for name in PairScores.__dataclass_fields__))


def evaluate(
    model: DetailSemNet,
    images: Sequence[SignatureImage],
    pairs: Sequence[Pair] | None = None,
    batch_size: int = EMBED_BATCH,
    threshold: float | None = None,
    cache: ImageCache | None = None,
    progress: bool = True,
    on_progress: ProgressCallback | None = None,
    pair_chunk: int = 512,
    embedding: Embedding | None = None,
) -> EvaluationResult:
    """Score ``pairs`` (default: the standard protocol of ``images``) and compute every metric.

    ``threshold`` defaults to the checkpoint's validation-chosen one; pass a
    ready ``cache`` to skip preprocessing (the app keeps one per dataset).
    ``on_progress(stage, done, total)`` lets a UI show a progress bar.
    A ready ``embedding`` of ``images`` (e.g. from ``dsn.evaluation.embedding_cache``)
    skips preprocessing and the backbone altogether.
    """
    images = list(images)
    pairs = protocol_pairs(images) if pairs is None else list(pairs)
    if not pairs:
        raise ValueError("no pairs to evaluate")
    source = "checkpoint" if threshold is None or float(threshold) == float(model.config.threshold) else "given"
    threshold = float(model.config.threshold if threshold is None else threshold)
    started, cpu_started = time.perf_counter(), time.process_time()
    if embedding is not None:
        if len(embedding) != len(images):
            raise ValueError(f"embedding holds {len(embedding)} images but {len(images)} were given")
    elif cache is None:
        cache = ImageCache(images, size=model.config.img_size, progress=progress, mode=model.config.preprocessing)
    elif len(cache) != len(images):
        raise ValueError(f"cache holds {len(cache)} images but {len(images)} were given")
    if on_progress is not None:
        on_progress("preprocessing", len(images), len(images))
    preprocessed = time.perf_counter()

    embed_progress = None if on_progress is None else lambda done, total: on_progress("embedding", done, total)
    if embedding is None:
        embedding = embed_cache(model, cache, batch_size=batch_size, progress=progress, on_batch=embed_progress)
    embedded = time.perf_counter()

    parts = []
    for start in tqdm(range(0, len(pairs), pair_chunk), desc="pairs", disable=not progress, leave=False):
        parts.append(score_pairs(model, embedding, pairs[start : start + pair_chunk]))
        if on_progress is not None:
            on_progress("pairs", min(start + pair_chunk, len(pairs)), len(pairs))
    scores = _concat_scores(parts)
    scored = time.perf_counter()

    metrics = pair_metrics(scores, threshold, source)
    finished = time.perf_counter()
    timings = {
        "preprocessing_s": preprocessed - started,
        "embedding_s": embedded - preprocessed,
        "pairs_s": scored - embedded,
        "metrics_s": finished - scored,
        "total_s": finished - started,
        "cpu_s": time.process_time() - cpu_started,  # all threads: tells a busy machine from a slow program
    }
    return EvaluationResult(
        images=images,
        pairs=pairs,
        scores=scores,
        threshold=threshold,
        metrics=metrics,
        timings=timings,
        weights=(info := ModelInfo.of(model)).label,
        backbone=info.backbone,
        info={
            "checkpoint_threshold": float(model.config.threshold),
            "precision": precision_for(next(model.parameters()).device, bulk=True),
        },
    )


def per_writer_metrics(result: EvaluationResult) -> list[dict]:
    """EER, FAR/FRR at the threshold and error count for each reference writer, sorted by writer.

    Rates that a writer's pairs cannot define (e.g. FAR with no forged pairs) are None.
    """
    writers = np.array([result.images[p.a].writer for p in result.pairs])
    labels = result.scores.genuine
    rows = []
    for writer in np.unique(writers):
        chosen = writers == writer
        d, y = result.scores.distance[chosen], labels[chosen]
        both = bool(y.any() and not y.all())
        rates = rates_at(d, y, result.threshold) if both else None
        errors = int(np.sum((d <= result.threshold) != y))
        accepted_forged = d[~y] <= result.threshold
        rejected_genuine = d[y] > result.threshold
        rows.append(
            {
                "writer": int(writer),
                "n_pairs": int(chosen.sum()),
                "n_genuine_pairs": int(y.sum()),
                "n_forged_pairs": int((~y).sum()),
                "eer": equal_error_rate(d, y)[0] if both else None,
                "far": rates["far"] if rates else (float(accepted_forged.mean()) if accepted_forged.size else None),
                "frr": rates["frr"] if rates else (float(rejected_genuine.mean()) if rejected_genuine.size else None),
                "errors": errors,
                "accuracy": 1.0 - errors / int(chosen.sum()),
            }
        )
    return rows


def load_images_and_pairs(
    data: str | Path | None = None, split: str = "test", pairs_csv: str | Path | None = None
) -> tuple[list[SignatureImage], list[Pair]]:
    """Images and pairs from a pairs CSV (paths relative to ``data`` if given), else the split's protocol."""
    if pairs_csv is not None:
        return read_pairs_csv(pairs_csv, root=data)
    if data is None:
        raise ValueError("give a dataset folder (--data) or a pairs CSV (--pairs)")
    images = split_images(data, split)
    return images, protocol_pairs(images)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:6.2f} %"


def format_summary(result: EvaluationResult) -> str:
    """Human-readable report of one evaluation, as the CLI prints it."""
    m, t = result.metrics, result.timings
    lines = [
        f"weights: {result.weights or '(in memory)'} ({result.backbone})"
        + ("  <- UNTRAINED: every number below is meaningless" if result.info.get("untrained") else ""),
        *(f"{key}: {value}" for key, value in result.info.items() if key in ("data", "split", "pairs_csv", "precision") and value),
        f"images: {len(result.images)}   pairs: {len(result.pairs)} "
        f"({m['n_genuine_pairs']} genuine-genuine, {m['n_forged_pairs']} genuine-forged)",
    ]
    if "eer" in m:
        lines += [
            f"EER:                      {_percent(m['eer'])}  (at distance threshold {m['eer_threshold']:.4f})",
            f"ROC AUC:                  {m['auc']:.4f}",
            f"at threshold {m['threshold']:.4f} ({m.get('threshold_note', THRESHOLD_NOTES['checkpoint'])}):",
            f"  accuracy {_percent(m['accuracy'])}   FAR {_percent(m['far'])}   FRR {_percent(m['frr'])}",
            f"best accuracy over thresholds: {_percent(m['best_accuracy'])} at {m['best_accuracy_threshold']:.4f}"
            " -- threshold chosen on the test set itself (how papers report it; optimistic)",
            f"EER global distance only:     {_percent(m['eer_global_only'])}",
            f"EER structural distance only: {_percent(m['eer_structural_only'])}",
        ]
    else:
        lines += [f"accuracy at threshold {m['threshold']:.4f}: {_percent(m['accuracy'])}  ({m['note']})"]
    lines += [
        f"max Sinkhorn marginal error: {m['max_marginal_error']:.2e}",
        f"wall time: preprocessing {t['preprocessing_s']:.1f} s, embedding {t['embedding_s']:.1f} s, "
        f"pairs {t['pairs_s']:.1f} s, total {t['total_s']:.1f} s (CPU time {t.get('cpu_s', float('nan')):.1f} s)",
    ]
    return "\n".join(lines)
