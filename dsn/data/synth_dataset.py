"""``python -m dsn.data.synth_dataset OUT N``: a training dataset of N synthetic writers drawn by ``dsn.data.synth``.

The folder has the real datasets' layout (``OUT/synth/<writer>/{genuine,forged}/<index>.png``
and ``OUT/splits.json``), so ``python -m dsn train --data OUT/synth`` mixes synthetic writers
with real ones. Every writer is a training writer: validation and test stay real. Writer
seeds start far above the app's example writers, so no example writer is ever trained on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm  # text bars everywhere: tqdm.auto wants ipywidgets in notebooks ("IProgress not found")

from dsn.data.synth import GALLERY_WRITER_SEEDS, SyntheticWriter

FIRST_SEED = 1_000_000
PAPERS = ("white", "white", "yellow", "grey", "photo")


def make_synthetic_dataset(out_dir: str | Path, n_writers: int, genuine: int = 12, forged: int = 12, first_seed: int = FIRST_SEED) -> Path:
    """Write the dataset and return its folder (``out_dir/synth``)."""
    if n_writers < 1 or n_writers > 999:
        raise ValueError(f"n_writers must be in 1..999 (writer folders have 3 digits), got {n_writers}")
    seeds = [first_seed + k for k in range(n_writers)]
    if set(seeds) & set(GALLERY_WRITER_SEEDS):
        raise ValueError("synthetic training writers must not include the app's example writers")
    root = Path(out_dir) / "synth"
    rng = np.random.default_rng(first_seed)
    for writer, seed in enumerate(tqdm(seeds, desc="synthetic writers"), start=1):
        person = SyntheticWriter(seed)
        for kind, count in (("genuine", genuine), ("forged", forged)):
            folder = root / f"{writer:03d}" / kind
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(1, count + 1):
                paper = PAPERS[int(rng.integers(len(PAPERS)))]
                if kind == "genuine":
                    image = person.genuine(index, paper)
                else:
                    image = person.forgery(index, skill=float(rng.uniform(0.5, 0.9)), paper=paper)
                cv2.imwrite(str(folder / f"{index:02d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    splits = {"synth": {"train": list(range(1, n_writers + 1)), "val": [], "test": []}}
    (Path(out_dir) / "splits.json").write_text(json.dumps(splits))
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsn.data.synth_dataset", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("writers", type=int)
    parser.add_argument("--genuine", type=int, default=12)
    parser.add_argument("--forged", type=int, default=12)
    args = parser.parse_args(argv)
    print(make_synthetic_dataset(args.out_dir, args.writers, args.genuine, args.forged))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
