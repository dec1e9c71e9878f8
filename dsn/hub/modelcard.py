"""Model cards (README.md) for checkpoints: what the model is, on what data, how it was measured.

A card is written from the measured metrics and the exact commands, never by
hand, so the numbers a visitor reads on the Hub are the ones the code produced.
``check_model_card`` is what ``python -m dsn push`` uses to refuse a checkpoint
whose card lacks a section.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path

from huggingface_hub import ModelCardData

from dsn.hub.dataset_facts import DATASET_CREDITS, DATASET_FACTS, as_roots, dataset_label
from dsn.hub.dataset_facts import measured_on as measured_on_text

CARD_NAME = "README.md"
METRICS_NAME = "metrics.json"
PAPER_URL = "https://arxiv.org/abs/2511.16364"
REQUIRED_SECTIONS = (
    "## What it is",
    "## Data and credits",
    "## Evaluation protocol",
    "## Metrics",
    "## Reproduce",
    "## Limitations",
    "## How to load",
)
# (metrics key, row label, format): "%" percent, "f" 4 decimals, "d" integer
CARD_ROWS = (
    ("eer", "EER", "%"),
    ("auc", "ROC AUC", "f"),
    ("threshold", "decision threshold (chosen on validation writers)", "f"),
    ("accuracy", "accuracy at that threshold", "%"),
    ("far", "FAR at that threshold (forgeries accepted)", "%"),
    ("frr", "FRR at that threshold (genuine rejected)", "%"),
    ("best_accuracy", "best accuracy, threshold chosen on the same set (how papers report it)", "%"),
    ("eer_global_only", "EER, global distance alone", "%"),
    ("eer_structural_only", "EER, structural (optimal transport) distance alone", "%"),
    ("n_genuine_pairs", "genuine-genuine pairs", "d"),
    ("n_forged_pairs", "genuine-forged pairs", "d"),
)


def train_command(train_config: dict) -> str:
    """The ``python -m dsn train`` command line that reproduces a saved TrainConfig, and any recipe changes it recorded."""
    data_args = [arg for root in as_roots(train_config["data"]) for arg in ("--data", root)]
    args = ["python", "-m", "dsn", "train", *data_args, "--out", str(train_config["out"])]
    args += ["--size", str(train_config.get("backbone", "dsnet_tiny"))]
    for key, value in train_config.items():
        if key in {"data", "out", "backbone", "notes"}:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            args.append(flag if value else f"--no-{key.replace('_', '-')}")
        else:
            args += [flag, str(value)]
    lines = [shlex.join(args)]
    for entry in (train_config.get("notes") or {}).get("recipe_changes", []):  # written by dsn.training.run_folder
        changed = ", ".join(f"--{name.replace('_', '-')} {c['from']} -> {c['to']}" for name, c in entry["changes"].items())
        lines.append(f"# resumed after epoch {entry['epoch']} with a changed recipe ({changed}); the command is the final recipe")
    return "\n".join(lines)


def _cell(value: object, kind: str) -> str:
    if value is None or value == "":
        return "-"
    if kind == "%":
        return f"{100 * float(value):.2f}%"
    if kind == "f":
        return f"{float(value):.4f}"
    return str(int(value))


def metrics_table(metrics: dict) -> str:
    """Markdown table with one column per measured split (val, test)."""
    splits = [s for s in ("val", "test") if isinstance(metrics.get(s), dict)]
    if not splits:
        return "_No measured metrics were supplied._"
    names = {"val": "validation writers", "test": "test writers"}
    lines = ["| metric | " + " | ".join(names[s] for s in splits) + " |", "|---" * (len(splits) + 1) + "|"]
    for key, label, kind in CARD_ROWS:
        if any(key in metrics[s] for s in splits):
            lines.append(f"| {label} | " + " | ".join(_cell(metrics[s].get(key), kind) for s in splits) + " |")
    return "\n".join(lines)


def cross_dataset_section(cross: dict, datasets: Sequence[str] = ()) -> str:
    """Markdown for evaluations on datasets other than the main one ({} -> a sentence saying so).

    ``datasets`` are those the weights learned from: a dataset among them had its train
    writers in training (its test writers never), which the table must say.
    """
    if not cross:
        return "Not measured on other datasets yet."
    lines = [
        "Same weights and threshold, tested on the test writers of another dataset:",
        "",
        "| tested on | its train writers in training? | pairs | EER | ROC AUC | accuracy / FAR / FRR at this checkpoint's threshold | command |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for name, entry in cross.items():
        m = entry["metrics"]
        rates = " / ".join(_cell(m.get(k), "%") for k in ("accuracy", "far", "frr"))
        seen = "yes" if name in datasets else "no (cross-dataset)"
        lines.append(
            f"| {dataset_label(name)} {entry.get('split') or 'test'} | {seen} | {entry.get('n_pairs') or '-'} | "
            f"{_cell(m.get('eer'), '%')} | {_cell(m.get('auc'), 'f')} | {rates} | `{entry.get('command') or ''}` |"
        )
    return "\n".join(lines)


def multi_reference_section(metrics: dict) -> str:
    """EER with K genuine references per query (``evaluate --references``), one row per tested dataset."""
    tested = [(Path(str((metrics.get("test_info") or {}).get("data") or "")).name, metrics.get("test_multi_reference"))]
    tested += [(name, entry.get("multi_reference")) for name, entry in (metrics.get("cross_dataset") or {}).items()]
    tested = [(name, rows) for name, rows in tested if rows]
    if not tested:
        return "Not measured with several references yet (`python -m dsn evaluate ... --references 1 3 5`)."
    columns = sorted({(r["references"], r["rule"]) for _, rows in tested for r in rows}, key=_column_order)
    intro = [
        "EER when each query is compared with K genuine references of its writer (the trial's distance is the",
        "mean or the minimum of the K distances; references drawn from the writer's other genuine signatures):",
    ]
    header = [f"{k} ref." if rule == "single" else f"{k} refs, {rule}" for k, rule in columns]

    def eers(rows: list[dict]) -> list[str]:
        by_column = {(r["references"], r["rule"]): r["eer"] for r in rows}
        return [_cell(by_column.get(c), "%") for c in columns]

    return "\n".join(_dataset_table(intro, header, tested, eers) + _rule_threshold_lines(tested))


def _dataset_table(intro: list[str], header: list[str], tested: list[tuple[str, list[dict]]], cells: Callable) -> list[str]:
    """Lines of a table with one row per tested dataset: ``cells(rows)`` gives that dataset's cells."""
    lines = [*intro, "", f"| test writers of | {' | '.join(header)} |", "|---|" + "---:|" * len(header)]
    return lines + [f"| {dataset_label(name)} | " + " | ".join(cells(rows)) + " |" for name, rows in tested]


def _column_order(column: tuple[int, str]) -> tuple[int, int, str]:
    """K first, then single / mean / min / anything else: the same order in every card."""
    k, rule = column
    known = ("single", "mean", "min")
    return k, known.index(rule) if rule in known else len(known), rule


def _rule_threshold_lines(tested: list[tuple[str, list[dict]]]) -> list[str]:
    """FAR / FRR of each rule at its own val-chosen threshold: what a reference-set decision does."""
    decided = sorted(
        {(r["references"], r["rule"]) for _, rows in tested for r in rows if "far" in r and r["references"] > 1}, key=_column_order
    )
    if not decided:
        return []
    thresholds = {(r["references"], r["rule"]): r["shipped_threshold"] for _, rows in tested for r in rows if "far" in r}
    intro = [
        "",
        "Each rule is decided at its own threshold, chosen on the validation writers for that number of references",
        "(`python -m dsn calibrate`); FAR / FRR on the test writers at those thresholds:",
    ]
    header = [f"{k} refs, {rule} (threshold {thresholds[(k, rule)]:.3f})" for k, rule in decided]

    def rates(rows: list[dict]) -> list[str]:
        by_column = {(r["references"], r["rule"]): r for r in rows if "far" in r}
        return [f"{100 * by_column[c]['far']:.2f}% / {100 * by_column[c]['frr']:.2f}%" if c in by_column else "-" for c in decided]

    return _dataset_table(intro, header, tested, rates)


def threshold_provenance(metrics: dict) -> str:
    """Which validation writers set the threshold, and the command that did it."""
    info = metrics.get("val_info") or {}
    data = info.get("data")
    if not data:
        return "The threshold is the equal-error-rate threshold on the validation writers of the training run."
    roots = as_roots(data)
    names = " + ".join(dataset_label(root) for root in roots)
    pooled = " (pooled: one threshold for all of them)" if len(roots) > 1 else ""
    command = f": `{info['command']}`" if info.get("command") else "."
    return f"The threshold is the equal-error-rate threshold on {info.get('n_pairs', '?')} validation pairs of {names}{pooled}{command}"


def _front_matter(datasets: Sequence[str], license_id: str) -> str:
    data = ModelCardData(
        library_name="dsn",
        license=license_id,
        tags=["signature-verification", "detailsemnet", "optimal-transport", "offline-signature-verification", "image-similarity"],
        datasets=list(datasets),
        metrics=["eer", "roc_auc", "accuracy"],
    )
    return f"---\n{data.to_yaml()}\n---\n"


def render_model_card(
    metrics: dict,
    train_config: dict,
    command: str,
    eval_command: str | None = None,
    datasets: Sequence[str] = ("cedar",),
    repo_id: str | None = None,
    license_id: str = "mit",
    training_hours: float | None = None,
) -> str:
    """Markdown text of the card; ``command`` is the training command line.

    ``metrics`` may hold ``cross_dataset``: {dataset folder name: {"metrics", "n_pairs", "command", ...}}.
    """
    backbone = train_config.get("backbone", "dsnet_tiny")
    credits = "\n".join(f"- {DATASET_CREDITS.get(name, f'**{name}**')}" for name in datasets)
    source = f"hf://{repo_id}" if repo_id else "path/to/this/folder"
    duration = f"{training_hours:.1f} hours" if training_hours else "about an hour"
    trained_on = datasets[0] if datasets else "cedar"
    display, _, pairs_note = DATASET_FACTS.get(trained_on, (trained_on, None, None))
    protocol_note = f" ({display}: {pairs_note})" if pairs_note else ""
    trained_from = ", ".join(dataset_label(name) for name in datasets)
    measured_on = measured_on_text(metrics, trained_on)
    media = "scanned paper signatures" + (
        ", and Cross-media's signatures written with a pen on a tablet or phone screen" if "crossmedia-chinese" in datasets else ""
    )
    evaluation = eval_command or f"python -m dsn evaluate --weights <this folder> --data ../shared/datasets/{trained_on} --split test"
    return f"""{_front_matter(datasets, license_id)}
# DetailSemNet ({backbone}) for offline signature verification

## What it is

A small re-implementation of **DetailSemNet** (Shih et al., ECCV 2024, [{PAPER_URL}]({PAPER_URL})) for offline
handwritten-signature verification: given a reference signature and a query, it returns a distance,
lower meaning "more likely the same writer's genuine signature". The distance is the global feature
distance plus lambda times a structural distance: an entropic optimal-transport matching between the ink
tokens of both signatures, which also shows *which* parts of the signatures were matched.
A pair is accepted as genuine iff its distance is at most the threshold stored in `config.json`.

## Data and credits

{credits}

The datasets were collected by their authors for research use. **No images are redistributed** with this
model or its code; obtain the datasets from their authors.

## Evaluation protocol

- Writer-independent splits: the validation and test writers are never seen in training.
- Pairs per writer: every unordered pair of two genuine signatures is a positive pair, every
  (genuine, forged) pair is a negative pair{protocol_note}.
- The decision threshold is chosen on the **validation** writers (at their equal error rate) and stored in
  the checkpoint; test accuracy, FAR and FRR use it unchanged. The "best accuracy" row instead picks the
  threshold on the scored set itself, as papers usually report it, and is optimistic.

## Metrics

{metrics_table(metrics)}

{threshold_provenance(metrics)}

### Other datasets

{cross_dataset_section(metrics.get("cross_dataset") or {}, datasets)}

### Several references

{multi_reference_section(metrics)}

The paper reports, with the full model trained on GPUs, 0.58% EER on CEDAR, 2.11% on BHSig-Bengali,
2.07% on BHSig-Hindi and 8.40% for CEDAR->Bengali.

## Reproduce

Training:

```bash
{command}
```

Evaluation:

```bash
{evaluation}
```

## Limitations

- Trained on CPU for {duration}, with a small backbone (`{backbone}`) and a short schedule: it is far from the
  numbers reported in the DetailSemNet paper, which trains larger models for much longer on GPUs.
- Measured on {measured_on}; with few writers the error rates carry wide confidence intervals.
- Trained only on {trained_from} ({media}); photographs, other scripts, pens or
  scanners may need a new threshold or fine-tuning. Choose a threshold on your own validation data.
- A verification aid, not proof of identity or of forgery.

## How to load

```python
import dsn

model = dsn.load("{source}")  # safetensors only, no pickle
result = dsn.verify(model, "reference.png", "query.png")
print(result["verdict"], result["distance"], result["threshold"])
```

or from the command line: `python -m dsn evaluate --weights {source} --data DATASET_FOLDER --split test`.
"""


def write_model_card(folder: str | Path, *args: object, **kwargs: object) -> Path:
    """Write ``folder/README.md`` (``render_model_card``'s text for the same arguments) and return its path."""
    path = Path(folder) / CARD_NAME
    path.write_text(render_model_card(*args, **kwargs), encoding="utf-8")
    return path


def check_model_card(text: str) -> list[str]:
    """Problems that make a card unfit to publish (empty list when it is fine)."""
    problems = []
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        problems.append("README.md has no Hugging Face front matter (--- yaml ---) at the top")
    elif "library_name: dsn" not in text.split("\n---\n", 1)[0]:
        problems.append("README.md front matter lacks 'library_name: dsn'")
    problems += [f"README.md lacks the section '{section}'" for section in REQUIRED_SECTIONS if f"\n{section}\n" not in text]
    return problems


def card_from_files(
    weights: str | Path,
    eval_json: str | Path,
    train_config_json: str | Path,
    command: str | None = None,
    repo_id: str | None = None,
    cross_eval_jsons: Sequence[str | Path] = (),
    training_hours: float | None = None,
    datasets: Sequence[str] = (),
) -> Path:
    """Merge the test evaluation into ``weights/metrics.json`` and write the card beside it.

    ``eval_json`` is the output of ``python -m dsn evaluate --json``; the
    validation metrics come from the training run's ``metrics.json`` in ``weights``.
    ``cross_eval_jsons`` are evaluations on other datasets, kept under ``cross_dataset``.
    ``training_hours`` overrides the run's own loop time (e.g. for a chain of warm-started runs).
    ``datasets`` credits every dataset the weights learned from (default: the run's own), the one
    trained on last first.
    """
    folder = Path(weights)
    evaluation = json.loads(Path(eval_json).read_text())
    train_config = json.loads(Path(train_config_json).read_text())
    metrics_path = folder / METRICS_NAME
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["test"] = evaluation["metrics"]
    metrics["test_info"] = {k: evaluation.get(k) for k in ("data", "split", "pairs_csv", "n_images", "n_pairs", "command", "weights")}
    if evaluation.get("multi_reference"):
        metrics["test_multi_reference"] = evaluation["multi_reference"]
    for cross_json in cross_eval_jsons:
        cross = json.loads(Path(cross_json).read_text())
        name = Path(str(cross.get("data", ""))).name
        if not name:
            raise ValueError(f"{cross_json} does not say which dataset it evaluated ('data' is missing)")
        entry = {
            k: cross.get(k) for k in ("data", "split", "n_images", "n_pairs", "command", "multi_reference") if cross.get(k) is not None
        }
        metrics.setdefault("cross_dataset", {})[name] = {**entry, "metrics": cross["metrics"]}
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    data_names = tuple(Path(root).name or "cedar" for root in as_roots(train_config.get("data") or "cedar"))
    state_path = Path(train_config_json).parent / "last" / "train_state.json"  # written by dsn.training.train next to the config
    seconds = json.loads(state_path.read_text()).get("seconds") if state_path.is_file() else None
    return write_model_card(
        folder,
        metrics,
        train_config,
        command or train_command(train_config),
        eval_command=evaluation.get("command"),
        datasets=tuple(datasets) or data_names,
        repo_id=repo_id,
        training_hours=training_hours or (seconds / 3600 if seconds else None),
    )
