"""The app's example gallery: pairs with a known answer, listed in ``examples.json``.

    python -m dsn.data.examples assets/examples --crossmedia ../shared/datasets/crossmedia-chinese

writes the synthetic pairs, two real cross-media pairs and the manifest, which says for each pair
what it is (its ground truth) and where it comes from.

The cross-media pairs are chosen by a fixed rule, never by how the model scores them: the two
test-split classes of the first name (ids below 100) with the lowest ids; the first one's paper
scan (``01``) is the reference, its own phone capture (``04``) the genuine query, and the second
person's phone capture of the same name the other-hand query. The images are MIT-licensed
(Luo et al. 2023) and are copied byte for byte.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from dsn.data.dataset import load_splits
from dsn.data.synth import make_example_pairs

MANIFEST = "examples.json"
TRUTHS = ("genuine", "forged", "other-hand")  # other-hand: another person wrote the same name, imitating nobody

SYNTHETIC_SOURCE = "Synthetic example (dsn.data.synth)"
CROSSMEDIA_SOURCE = "Cross-media dataset (Luo et al. 2023, MIT licence): {what}"
NAMES_PER_BLOCK = 100  # a cross-media class id is 100 x name + (person - 1)


@dataclass(frozen=True)
class Example:
    """One gallery pair with its known answer: a row of ``examples.json``."""

    reference: str  # file names inside the gallery folder
    query: str
    label: str  # the gallery's caption, e.g. "writer 1: forgery"
    truth: str  # one of TRUTHS
    source: str  # where the images come from, said above the verdict


def read_examples(folder: Path) -> list[Example]:
    """The manifest's pairs whose both files exist; none when the folder has no manifest."""
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return []
    examples = [Example(**row) for row in json.loads(manifest.read_text())]
    for example in examples:
        if example.truth not in TRUTHS:
            raise ValueError(f"{manifest}: truth must be one of {TRUTHS}, got {example.truth!r}")
    return [e for e in examples if (Path(folder) / e.reference).is_file() and (Path(folder) / e.query).is_file()]


def crossmedia_choice(root: Path) -> dict[str, Path]:
    """The fixed rule's three files: reference (paper), genuine (same person, phone), other (same name, another person, phone)."""
    classes = sorted(int(c) for c in load_splits(root)["test"] if int(c) < NAMES_PER_BLOCK)
    if len(classes) < 2:
        raise ValueError(f"{root}: the test split needs two classes of the first name")
    first, second = (root / f"{c:03d}" / "genuine" for c in classes[:2])
    return {"reference": first / "01.png", "genuine": first / "04.png", "other": second / "04.png"}


def write_gallery(out: Path, crossmedia: Path | None = None, n_writers: int = 3) -> list[Example]:
    """Write every example file and the manifest into ``out``; returns the manifest's pairs."""
    out.mkdir(parents=True, exist_ok=True)
    examples = []
    for reference, query, kind in make_example_pairs(out, n_writers):
        writer = reference.name.split("_")[0].replace("writer", "writer ")
        label = f"{writer}: {'genuine pair' if kind == 'genuine' else 'forgery'}"
        examples.append(Example(reference.name, query.name, label, kind, SYNTHETIC_SOURCE))
    if crossmedia is not None:
        files = crossmedia_choice(crossmedia)
        for role, path in files.items():
            shutil.copyfile(path, out / f"crossmedia_{role}.png")
        person = int(files["reference"].parent.parent.name) % NAMES_PER_BLOCK + 1
        other = int(files["other"].parent.parent.name) % NAMES_PER_BLOCK + 1
        examples += [
            Example(
                "crossmedia_reference.png",
                "crossmedia_genuine.png",
                "paper vs phone: same person",
                "genuine",
                CROSSMEDIA_SOURCE.format(what=f"person {person} on paper and on a phone"),
            ),
            Example(
                "crossmedia_reference.png",
                "crossmedia_other.png",
                "paper vs phone: another person",
                "other-hand",
                CROSSMEDIA_SOURCE.format(what=f"person {person} on paper, person {other} writing the same name on a phone"),
            ),
        ]
    (out / MANIFEST).write_text(json.dumps([asdict(e) for e in examples], indent=1) + "\n")
    return examples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dsn.data.examples", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="gallery folder, e.g. assets/examples")
    parser.add_argument("--crossmedia", type=Path, help="the crossmedia-chinese dataset folder (adds two real pairs)")
    parser.add_argument("--writers", type=int, default=3, help="synthetic writers (two pairs each)")
    args = parser.parse_args(argv)
    for example in write_gallery(args.out, args.crossmedia, args.writers):
        print(f"{example.reference}\t{example.query}\t{example.truth}\t{example.label}")


if __name__ == "__main__":
    main()
