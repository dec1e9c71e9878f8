"""Backend of the app's dataset explorer: which folders may be read, and evaluating them.

A web app that evaluates "a dataset folder" must not become a way to read any
file on the server. So datasets come only from *allowed roots* given on the
command line (``python app.py --data-root ../shared/datasets``); the UI offers
a dropdown of dataset folders found under them, and ``resolve_dataset``
refuses anything else: paths outside the roots, ``..``, and symbolic links
that lead out of a root (every path is checked after ``Path.resolve()``).

Evaluation goes through ``dsn.evaluation.evaluate.evaluate`` (the same numbers as
``python -m dsn evaluate``) with embeddings from the disk cache, and keeps the
per-pair scores so a new threshold re-decides without touching the model.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import plotly.graph_objects as go

from dsn.data.dataset import CLASS_FOLDERS, SPLITS, SignatureImage, list_images, load_splits
from dsn.evaluation.embedding_cache import CacheStats, EmbeddingCache
from dsn.evaluation.evaluate import EvaluationResult, evaluate, pair_metrics, per_writer_metrics
from dsn.evaluation.metrics import rates_at
from dsn.evaluation.report import det_figure, distance_histogram, roc_figure, write_report
from dsn.loading import is_untrained
from dsn.model.detailsemnet import DetailSemNet

SEARCH_DEPTH = 2  # a root may be a dataset, hold datasets, or hold folders of datasets
ERROR_KINDS = ("false accept", "false reject")
Progress = Callable[[float, str], None]  # (fraction done, what is happening)


# ----------------------------------------------------------------------------- allowed roots


def allowed_roots(roots: Iterable[str | Path]) -> list[Path]:
    """Resolved, existing root folders (duplicates dropped); a bad root is a startup error."""
    resolved: list[Path] = []
    for root in roots:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise ValueError(f"data root {str(root)!r} is not an existing folder")
        path = path.resolve()
        if path not in resolved:
            resolved.append(path)
    return resolved


def is_dataset_folder(folder: Path) -> bool:
    """True for the ``<writer, digits>/{genuine,forged}/`` layout."""
    try:
        return any(
            child.is_dir() and child.name.isdigit() and any((child / name).is_dir() for name in CLASS_FOLDERS) for child in folder.iterdir()
        )
    except OSError:
        return False


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def find_datasets(roots: Iterable[str | Path]) -> dict[str, Path]:
    """Dataset folders under the roots, by display name (path below its root, e.g. ``cedar``).

    Symbolic links are followed only while they stay inside a root.
    """
    roots = allowed_roots(roots)
    found: dict[str, Path] = {}

    def add(root: Path, folder: Path) -> None:
        relative = folder.relative_to(root).as_posix()
        name = root.name if relative == "." else relative
        if name in found and found[name] != folder:
            name = f"{root.name}/{name}" if relative != "." else str(root)
        found.setdefault(name, folder)

    def walk(root: Path, folder: Path, depth: int) -> None:
        if is_dataset_folder(folder):
            add(root, folder)
            return
        if depth >= SEARCH_DEPTH:
            return
        try:
            children = sorted(folder.iterdir())
        except OSError:
            return
        for child in children:
            if child.name.startswith(".") or not child.is_dir():
                continue
            target = child.resolve()
            if _inside(target, roots) and target.is_relative_to(root):
                walk(root, target, depth + 1)

    for root in roots:
        walk(root, root, 0)
    return dict(sorted(found.items()))


def _has_parent_reference(text: str) -> bool:
    return ".." in PurePosixPath(text).parts or ".." in PureWindowsPath(text).parts


def resolve_dataset(path_or_name: str | Path, roots: Iterable[str | Path]) -> Path:
    """The resolved dataset folder for a dropdown name or a path inside the allowed roots.

    Raises PermissionError for anything outside the roots (including through
    ``..`` or a symbolic link) and ValueError for a folder that is not a dataset.
    """
    roots = allowed_roots(roots)
    if not roots:
        raise PermissionError("No data roots are allowed: start the app with --data-root FOLDER to evaluate datasets.")
    text = str(path_or_name).strip()
    if not text:
        raise ValueError("Choose a dataset.")
    if _has_parent_reference(text):
        raise PermissionError(f"'..' is not allowed in a dataset path ({text!r}); choose a dataset from the list.")
    known = find_datasets(roots)
    if text in known:
        return known[text]
    given = Path(text).expanduser()
    candidates = [given.absolute()] if given.is_absolute() else [root / given for root in roots]
    allowed = ", ".join(str(root) for root in roots)
    if given.is_absolute() and not _inside(candidates[0], roots):
        raise PermissionError(f"{text!r} is outside the allowed data roots ({allowed}).")
    for candidate in candidates:
        if not candidate.exists():
            continue
        resolved = candidate.resolve(strict=True)
        if not _inside(resolved, roots):
            raise PermissionError(
                f"{text!r} is (or passes through) a symbolic link that leads outside the allowed data roots ({allowed}); refused."
            )
        if not is_dataset_folder(resolved):
            raise ValueError(f"{text!r} is not a dataset folder: expected <writer, digits>/{{genuine,forged}}/<index>.png inside it.")
        return resolved
    choices = ", ".join(known) or "none found"
    raise ValueError(f"No dataset {text!r} under the allowed data roots; available: {choices}.")


def check_images_inside(images: Sequence[SignatureImage], roots: Iterable[str | Path]) -> None:
    """Refuse image files that are symbolic links out of the roots (the folder check alone would miss them)."""
    roots = allowed_roots(roots)
    outside = [Path(image.path) for image in images if not _inside(Path(image.path).resolve(), roots)]
    if outside:
        # named inside their dataset (writer/class/file): a visitor never sees a server path
        shown = ", ".join("/".join(p.parts[-3:]) for p in outside[:3])
        raise PermissionError(f"{len(outside)} image file(s) link outside the allowed data roots (e.g. {shown}); refused.")


# ----------------------------------------------------------------------------- evaluation


@dataclass
class Exploration:
    """One evaluated dataset selection; ``result`` carries the current threshold."""

    dataset: str
    path: Path
    split: str
    writers: list[int]
    result: EvaluationResult
    cache: CacheStats
    seconds: float

    def at_threshold(self, threshold: float) -> Exploration:
        """The same distances decided at another threshold: metrics only, no model run."""
        threshold, own = float(threshold), self.result.info.get("checkpoint_threshold")
        if own is not None and round(threshold, 3) == round(float(own), 3):  # the slider shows 3 decimals
            threshold = float(own)
        source = "checkpoint" if threshold == own else "given"
        result = dataclasses.replace(self.result, threshold=threshold, metrics=pair_metrics(self.result.scores, threshold, source))
        return dataclasses.replace(self, result=result)

    def provenance(self) -> dict:
        return {
            "dataset": self.dataset,
            "split": self.split,
            "writers": self.writers,
            "embedding_cache": {"hits": self.cache.hits, "misses": self.cache.misses, "seconds": self.cache.seconds},
            "wall_time_s": self.seconds,
        }


def split_writers(dataset: Path, split: str, roots: Sequence[Path]) -> list[int]:
    """Writer ids of a split (sorted); "all" = every writer folder. The splits file must lie inside the roots."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    if split == "all":
        return sorted(int(p.name) for p in dataset.iterdir() if p.is_dir() and p.name.isdigit())
    sources = [dataset / "splits.json", dataset.parent / "splits.json"]
    if not any(s.is_file() and _inside(s.resolve(), roots) for s in sources):
        raise ValueError(f"No splits.json for {dataset.name} inside the allowed roots; choose the split 'all'.")
    return sorted(load_splits(dataset)[split])


def select_images(dataset: Path, split: str, writer_limit: int | None, roots: Sequence[Path]) -> tuple[list[int], list[SignatureImage]]:
    """The first ``writer_limit`` writers of the split (all when None or 0) and their images."""
    writers = split_writers(dataset, split, roots)
    if writer_limit:
        if writer_limit < 0:
            raise ValueError("the writer limit must be positive (0 = all writers)")
        writers = writers[: int(writer_limit)]
    if not writers:
        raise ValueError(f"The split {split!r} of {dataset.name} has no writers.")
    images = list_images(dataset, writers=writers)
    check_images_inside(images, roots)
    return writers, images


def explore(
    model: DetailSemNet,
    dataset: str | Path,
    roots: Iterable[str | Path],
    split: str = "test",
    writer_limit: int | None = None,
    threshold: float | None = None,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Exploration:
    """Evaluate the standard protocol of a dataset selection with cached embeddings."""
    started = time.perf_counter()
    roots = allowed_roots(roots)
    path = resolve_dataset(dataset, roots)
    writers, images = select_images(path, split, writer_limit, roots)
    report = progress or (lambda fraction, text: None)
    report(0.0, f"hashing and embedding {len(images)} images")
    cache = EmbeddingCache(cache_dir)

    def on_images(done: int, total: int, stage: str) -> None:
        base = 0.0 if stage == "preprocessing" else 0.45
        report(base + 0.45 * done / total, f"{stage} {done}/{total} images")

    embedding = cache.embed(model, images, progress=on_images)

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage == "pairs":
            report(0.9 + 0.1 * done / total, f"scoring pairs {done}/{total}")

    result = evaluate(model, images, threshold=threshold, progress=False, on_progress=on_progress, embedding=embedding)
    name = str(dataset) if str(dataset) in find_datasets(roots) else path.name
    # reports name the dataset and files relative to the allowed root: server paths stay on the server
    result.path_root = next(root for root in roots if _inside(path, [root]))
    result.info.update(data=name, split=split, writers=writers, untrained=is_untrained(model))
    result.timings["embedding_s"] = cache.last.seconds  # hashing, preprocessing and backbone (misses only)
    result.timings["total_s"] += cache.last.seconds
    report(1.0, "done")
    return Exploration(name, path, split, writers, result, cache.last, time.perf_counter() - started)


# ----------------------------------------------------------------------------- tables


def error_rows(result: EvaluationResult, limit: int = 20) -> list[dict]:
    """The hardest pairs of each kind at the current threshold, worst first.

    False accepts: forged pairs with the smallest distances; false rejects:
    genuine pairs with the largest. ``error`` says whether the threshold gets
    the pair wrong: the list goes on with near misses when errors are few.
    ``margin`` is threshold - distance, as in every verification: > 0 accepted.
    """
    d, genuine = result.scores.distance, result.scores.genuine
    rows = []
    for kind, chosen, order in (("false accept", ~genuine, 1.0), ("false reject", genuine, -1.0)):
        candidates = np.flatnonzero(chosen)
        ranked = candidates[np.argsort(order * d[candidates], kind="stable")][: max(int(limit), 0)]
        for rank, k in enumerate(ranked, start=1):
            pair = result.pairs[k]
            reference, query = result.images[pair.a], result.images[pair.b]
            error = bool(d[k] <= result.threshold) if kind == "false accept" else bool(d[k] > result.threshold)
            rows.append(
                {
                    "pair": int(k),
                    "kind": kind,
                    "rank": rank,
                    "writer": reference.writer,
                    "reference": result.shown_path(reference.path),
                    "query": result.shown_path(query.path),
                    "distance": float(d[k]),
                    "margin": float(result.threshold - d[k]),  # as everywhere: > 0 means accepted
                    "error": error,
                }
            )
    return rows


def smallest_dataset(datasets: dict[str, Path]) -> str | None:
    """The dataset with the fewest image files: the quickest first evaluation, so the tab's default."""

    def files(folder: Path) -> int:
        return sum(len(os.listdir(kind)) for writer in folder.iterdir() if writer.is_dir() for kind in writer.iterdir() if kind.is_dir())

    return min(datasets, key=lambda name: (files(datasets[name]), name)) if datasets else None


def pair_paths(result: EvaluationResult, pair_index: int) -> tuple[Path, Path]:
    """(reference, query) files of one pair, for opening it in the pair views."""
    if not 0 <= int(pair_index) < len(result.pairs):
        raise ValueError(f"pair index {pair_index} is out of range")
    pair = result.pairs[int(pair_index)]
    return Path(result.images[pair.a].path), Path(result.images[pair.b].path)


def writer_rows(result: EvaluationResult) -> list[dict]:
    """Per-writer EER and errors (``dsn.evaluation.evaluate.per_writer_metrics``) at the current threshold."""
    return per_writer_metrics(result)


# ----------------------------------------------------------------------------- figures and files


def roc_with_threshold(result: EvaluationResult) -> go.Figure:
    """The report's ROC plus a marker where the current threshold operates."""
    fig = roc_figure(result.scores)
    rates = rates_at(result.scores.distance, result.scores.genuine, result.threshold)
    fig.add_trace(
        go.Scatter(
            x=[rates["far"]],
            y=[1 - rates["frr"]],
            mode="markers",
            marker={"size": 12, "symbol": "x", "color": "#264653"},
            name=f"threshold {result.threshold:.3f}",
            hovertemplate=f"threshold {result.threshold:.4f}<br>FAR {rates['far']:.2%}<br>FRR {rates['frr']:.2%}<extra></extra>",
        )
    )
    return fig


def figures(result: EvaluationResult) -> dict[str, go.Figure]:
    """roc, det and histogram figures; empty when the selection lacks genuine or forged pairs."""
    labels = result.scores.genuine
    if not (labels.any() and not labels.all()):
        return {}
    return {
        "roc": roc_with_threshold(result),
        "det": det_figure(result.scores),
        "histogram": distance_histogram(result.scores, result.threshold, result.metrics.get("eer_threshold")),
    }


def export_report(exploration: Exploration, folder: str | Path, png: bool = True) -> tuple[list[Path], str]:
    """Write the report files for download; returns (paths, note).

    pairs.csv, roc.csv, metrics.json and a self-contained report.html come from
    ``dsn.evaluation.report.write_report``; each figure also goes out as HTML (in a zip with
    one shared plotly.min.js, so it works offline) and, when kaleido can drive a
    local Chromium, as PNG. The note says when PNG export was not possible.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result = exploration.result
    result.info.update(exploration.provenance())
    written = write_report(result, folder, title=f"DetailSemNet on {exploration.dataset} ({exploration.split})")
    paths = [written[name] for name in ("pairs.csv", "metrics.json", "report.html", "roc.csv") if name in written]
    figs = figures(result)
    if figs:
        html_dir = folder / "figures-html"
        html_dir.mkdir(exist_ok=True)
        for name, fig in figs.items():
            fig.write_html(html_dir / f"{name}.html", include_plotlyjs="directory")
        archive = folder / "figures-html.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for file in sorted(html_dir.iterdir()):
                bundle.write(file, f"figures/{file.name}")
        paths.append(archive)
    note = ""
    if png and figs:
        png_paths = [folder / f"{name}.png" for name in figs]
        try:
            import plotly.io as pio

            pio.write_images(list(figs.values()), png_paths, width=900, height=520)
            paths += png_paths
        except Exception as error:  # kaleido missing, or no Chromium it can start: HTML only
            note = f"PNG export unavailable ({type(error).__name__}: {error}); figures are in the HTML files."
    return paths, note
