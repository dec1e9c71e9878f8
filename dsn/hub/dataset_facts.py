"""How model cards and the app name, credit and describe the datasets.

One table per fact, keyed by the dataset's folder name, so a card, the app header and
the training config agree on "BHSig-Bengali" and on who to credit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

DATASET_CREDITS = {
    "cedar": "**CEDAR** signature database, collected by CEDAR (Center of Excellence for Document Analysis and Recognition), "
    "University at Buffalo: 55 writers, 24 genuine signatures and 24 skilled forgeries each.",
    "bhsig-bengali": '**BHSig260 (Bengali)**, Pal, Alaei, Pal and Blumenstein, "Performance of an off-line signature verification '
    'method based on texture features on a large Indic-script signature dataset", DAS 2016: 100 writers.',
    "bhsig-hindi": '**BHSig260 (Hindi)**, Pal, Alaei, Pal and Blumenstein, "Performance of an off-line signature verification '
    'method based on texture features on a large Indic-script signature dataset", DAS 2016: 160 writers.',
    "crossmedia-chinese": '**Cross-media Chinese signatures** (MIT licence), Luo et al., "Is There a Difference between Paper and '
    'Electronic Chinese Signatures?", Advanced Intelligent Systems 2023: 100 persons x 10 names, on paper, an iPad and a phone.',
}
# what the card says about each dataset's protocol: (display name, test writers, pairs per writer)
DATASET_FACTS = {
    "cedar": ("CEDAR", 5, "276 + 576 pairs per writer"),
    "bhsig-bengali": ("BHSig-Bengali", 50, "up to 276 + 720 pairs per writer; pixel-identical repeats were dropped"),
    "bhsig-hindi": ("BHSig-Hindi", 60, "up to 276 + 720 pairs per writer; pixel-identical repeats were dropped"),
    "crossmedia-chinese": ("Cross-media", 150, "classes = person x name; 6 genuine pairs + same-name paper scans of other persons"),
}


def dataset_label(root: str | Path) -> str:
    """How cards and the app name a dataset, from its folder (path or name): "CEDAR", "BHSig-Bengali"."""
    name = Path(str(root)).name
    return DATASET_FACTS.get(name, (name,))[0]


def measured_on(metrics: dict, trained_on: str) -> str:
    """ "5 test writers of CEDAR, 50 of BHSig-Bengali": every dataset the card reports test numbers for."""
    tested = [Path(str((metrics.get("test_info") or {}).get("data") or trained_on)).name, *(metrics.get("cross_dataset") or {})]
    parts = []
    for name in tested:
        display, writers, _ = DATASET_FACTS.get(name, (name, None, None))
        unit = "test classes" if name == "crossmedia-chinese" else "test writers"
        parts.append(f"{writers} {unit} of {display}" if writers else f"the test writers of {display}")
    return ", ".join(parts)


def as_roots(data: str | Path | Sequence[str | Path]) -> list[str]:
    """Dataset folders of a config or metrics entry: one folder (older runs) or a list of them."""
    return [str(data)] if isinstance(data, (str, Path)) else [str(root) for root in data]
