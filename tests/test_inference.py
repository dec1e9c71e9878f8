"""One inference path: every caller reports the same distance for the same pair, at every precision,
with one JSON schema; the public ``import dsn`` API and the README's example run as written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import timm
import torch
from conftest import EXAMPLES

import dsn
from dsn import inference, precision
from dsn.cli import main
from dsn.evaluation.explorer import error_rows, explore
from dsn.inspect.reference_set import verify_against_references
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import WeightsError
from dsn.ui.compute import AnalysisCache

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(3)
    return DetailSemNet(threshold=0.5).save(tmp_path_factory.mktemp("weights") / "tiny")


def distances_of_every_path(weights: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    reference, query = dataset / "002" / "genuine" / "01.png", dataset / "002" / "forged" / "01.png"
    model = DetailSemNet.load(weights)
    assert main(["verify", str(reference), str(query), "--weights", str(weights), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = AnalysisCache().get(model, str(reference), str(query)).summary()  # what /verify returns
    reference_set = verify_against_references(model, query, [reference])
    exploration = explore(model, dataset.name, [dataset.parent], split="test", cache_dir=tmp_path / "cache")
    rows = [r for r in error_rows(exploration.result, limit=10_000) if r["reference"].endswith("002/genuine/01.png")]
    row = next(r for r in rows if r["query"].endswith("002/forged/01.png"))
    assert set(cli) - {"reference", "query", "weights"} == set(api), "one schema for a verification"
    return {
        "cli": cli["distance"],
        "api": api["distance"],
        "reference set": float(reference_set.distances[0]),
        "explorer": row["distance"],
    }


def test_every_path_gives_the_same_distance(saved: Path, synth_dataset: Path, tmp_path: Path, capsys) -> None:
    precision.set_precision("fp32")
    try:
        found = distances_of_every_path(saved, synth_dataset, tmp_path / "fp32", capsys)
    finally:
        precision.set_precision("auto")
    assert max(found.values()) - min(found.values()) <= 1e-5, found
    # under "auto", dataset paths (the explorer) may run in bf16 on a CPU with AMX: close, not equal
    auto = distances_of_every_path(saved, synth_dataset, tmp_path / "auto", capsys)
    assert max(auto.values()) - min(auto.values()) <= 0.02, auto
    assert auto["cli"] == pytest.approx(found["cli"], abs=1e-6), "a single pair stays float32"


def test_a_forced_bf16_policy_reaches_every_path(saved: Path, synth_dataset: Path, tmp_path: Path, capsys) -> None:
    fp32 = distances_of_every_path(saved, synth_dataset, tmp_path / "fp32", capsys)["cli"]
    precision.set_precision("bf16")
    try:
        assert precision.precision_for(torch.device("cpu")) == "bf16"
        found = distances_of_every_path(saved, synth_dataset, tmp_path / "bf16", capsys)
    finally:
        precision.set_precision("auto")
    assert max(found.values()) - min(found.values()) <= 1e-5, found
    assert all(abs(d - fp32) > 1e-6 for d in found.values()), f"bf16 must change every path's distance: {found} vs fp32 {fp32}"


def test_precision_policy_is_checked() -> None:
    from dsn.precision import cpu_has_bf16

    assert precision.precision_for(torch.device("cpu")) == "fp32", "a single pair on a CPU stays float32"
    assert precision.precision_for(torch.device("cpu"), bulk=True) == ("bf16" if cpu_has_bf16() else "fp32")
    assert precision.precision_for(torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        precision.set_precision("fp8")


def test_a_random_model_is_reported_untrained_everywhere(synth_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from dsn.model import weights

    monkeypatch.delenv("DSN_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "CHECKPOINTS_DIR", tmp_path / "none")
    model = dsn.load()
    assert dsn.is_untrained(model)
    reference, query = synth_dataset / "002" / "genuine" / "01.png", synth_dataset / "002" / "forged" / "01.png"
    assert dsn.verify(model, reference, query)["untrained"] is True
    evaluation_model = dsn.load(None, allow_untrained=True)
    assert dsn.is_untrained(evaluation_model)
    with pytest.raises(WeightsError, match="No weights given"):
        dsn.load(None, allow_untrained=False)
    assert verify_against_references(evaluation_model, query, [reference]).untrained
    assert explore(evaluation_model, synth_dataset.name, [synth_dataset.parent], cache_dir=tmp_path / "c").result.info["untrained"]
    assert main(["verify", str(reference), str(query), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["untrained"] is True


def test_import_dsn_registers_the_backbones() -> None:
    assert type(timm.create_model("dsnet_base")).__name__ == "DSNet"
    assert {"load", "verify", "analyze", "evaluate"} <= set(dsn.__all__)


def test_the_readme_python_example_runs(synth_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "import dsn" in code and "dsn.verify" in code and "dsn.evaluate" in code
    shutil.copy(EXAMPLES / "writer1_reference.png", tmp_path / "reference.png")
    shutil.copy(EXAMPLES / "writer1_forged.png", tmp_path / "query.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace('"../shared/datasets/cedar"', repr(str(synth_dataset))), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "distance" in printed and "EER" in printed


def test_a_non_finite_distance_is_an_error_not_a_number() -> None:
    from dsn.data.preprocess import preprocess
    from dsn.data.synth import SyntheticWriter

    model = DetailSemNet(img_size=64).eval()
    with torch.no_grad():
        model.match_proj.weight.fill_(float("nan"))
    images = torch.cat([preprocess(SyntheticWriter(1).genuine(k), size=64).tensor() for k in range(2)])
    embedding = inference.embed(model, images)
    with pytest.raises(ValueError, match="non-finite distance"):
        inference.compare(model, embedding[0], embedding[1])
