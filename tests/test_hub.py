"""Loading ``hf://owner/repo[@rev]`` through huggingface_hub, against a local stand-in for the Hub.

A thread serves saved model folders the way the Hub's ``resolve`` endpoint
does (X-Repo-Commit, ETag, Content-Length, X-Error-Code on 404s). The loads
run in a subprocess because huggingface_hub reads HF_ENDPOINT and
HF_HUB_OFFLINE once, at import.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import WeightsError, parse_hub_source

REPO = Path(__file__).resolve().parents[1]
COMMITS = {"main": "1" * 40, "v1": "2" * 40}

LOADER = """
import json, sys, torch
from safetensors.torch import load_file, save_file
from dsn.model.detailsemnet import DetailSemNet
from dsn.model.weights import WeightsError

torch.set_num_threads(1)
inputs = load_file(sys.argv[1])
results = []
for i, source in enumerate(sys.argv[3:]):
    try:
        if source.startswith("mixin:"):
            model = DetailSemNet.from_pretrained(source[len("mixin:"):])
        elif source.startswith("mixin-cache:"):  # the mixin's cache_dir must reach the download
            model = DetailSemNet.from_pretrained(source[len("mixin-cache:"):], revision="v1", cache_dir=f"{sys.argv[2]}/own-cache")
        else:
            model = DetailSemNet.load(source)
    except WeightsError as err:
        results.append({"source": source, "error": str(err)})
        continue
    with torch.inference_mode():
        distance = model(inputs["ref"], inputs["query"]).distance
    save_file({"distance": distance, **model.state_dict()}, f"{sys.argv[2]}/{i}.safetensors")
    results.append({"source": source, "threshold": model.config.threshold, "model_source": model.source})
print(json.dumps(results))
"""


class FakeHub(http.server.ThreadingHTTPServer):
    """``/{owner}/{name}/resolve/{revision}/{filename}`` over {repo_id: {branch: folder}}."""

    def __init__(self, repos: dict[str, dict[str, Path]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos = repos
        self.requests: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args: object) -> None:  # keep pytest output clean; requests are recorded instead
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _fail(self, error_code: str | None, commit: str | None = None) -> None:
        self.send_response(404)
        if error_code:
            self.send_header("X-Error-Code", error_code)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, send_body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) != 5 or parts[2] != "resolve":
            return self._fail(None)  # e.g. /api/... calls the client makes on its own
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], parts[4]
        branches = self.server.repos.get(repo_id)
        if branches is None:
            return self._fail("RepoNotFound")
        by_commit = {COMMITS[branch]: branch for branch in branches}
        branch = revision if revision in branches else by_commit.get(revision)
        if branch is None:
            return self._fail("RevisionNotFound")
        file = branches[branch] / filename
        if not file.is_file():
            return self._fail("EntryNotFound", COMMITS[branch])
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMITS[branch])
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[DetailSemNet, Path]]:
    root = tmp_path_factory.mktemp("published")
    out = {}
    for seed, branch in enumerate(COMMITS):  # main, v1
        torch.manual_seed(seed)
        model = DetailSemNet(match_dim=8).eval()
        model.config.threshold = 0.25 + seed  # tells the revisions apart
        out[branch] = (model, model.save(root / branch))
    (root / "empty").mkdir()
    torch.manual_seed(7)
    plain = DetailSemNet(match_dim=8).eval()
    folder = plain.save(root / "nosidecar")
    (folder / "model.safetensors.sha256").unlink()  # as uploads from before checksums were written
    out["nosidecar"] = (plain, folder)
    return out


@pytest.fixture(scope="module")
def hub(models: dict[str, tuple[DetailSemNet, Path]]) -> Iterator[FakeHub]:
    server = FakeHub(
        {
            "owner/model": {branch: models[branch][1] for branch in COMMITS},
            "owner/other": {"main": models["main"][1]},
            "owner/nosidecar": {"main": models["nosidecar"][1]},
            "owner/empty": {"main": models["main"][1].parent / "empty"},
        }
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    generator = torch.Generator().manual_seed(0)
    path = tmp_path_factory.mktemp("inputs") / "pair.safetensors"
    ink = (torch.rand(2, 2, 1, 64, 64, generator=generator) < 0.1).float()
    save_file({"ref": ink[0].contiguous(), "query": ink[1].contiguous()}, str(path))
    return path


def load_in_subprocess(sources: list[str], inputs: Path, out: Path, endpoint: str, hf_home: Path, offline: bool) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(hf_home),
        "HF_HUB_CACHE": str(hf_home / "hub"),
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "PYTHONPATH": str(REPO),
    }
    env.pop("HF_TOKEN", None)
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(inputs), str(out), *sources], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_distance(model: DetailSemNet, inputs: Path) -> torch.Tensor:
    pair = load_file(str(inputs))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return model(pair["ref"], pair["query"]).distance
    finally:
        torch.set_num_threads(previous)


def assert_same_model(result_file: Path, model: DetailSemNet, inputs: Path) -> None:
    got = load_file(str(result_file))
    distance = got.pop("distance")
    state = model.state_dict()
    assert got.keys() == state.keys()
    assert all(torch.equal(got[k], state[k]) for k in state), "downloaded weights differ from the published ones"
    assert torch.allclose(distance, expected_distance(model, inputs), rtol=0, atol=1e-6)


@pytest.mark.slow  # two fresh Python processes importing torch
def test_download_then_offline_cache(hub: FakeHub, models: dict, inputs: Path, tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    sources = [
        "hf://owner/model",
        "hf://owner/model@v1",
        "hf://owner/missing",
        "hf://owner/model@nope",
        "hf://owner/empty",
        "mixin:owner/model",
        "mixin-cache:owner/model",
    ]
    online = {
        r["source"]: (i, r) for i, r in enumerate(load_in_subprocess(sources, inputs, tmp_path / "online", hub.endpoint, hf_home, False))
    }

    main_model, v1_model = models["main"][0], models["v1"][0]
    index, result = online["hf://owner/model"]
    assert result == {"source": "hf://owner/model", "threshold": 0.25, "model_source": "hf://owner/model"}
    assert_same_model(tmp_path / "online" / f"{index}.safetensors", main_model, inputs)
    index, result = online["hf://owner/model@v1"]
    assert result["threshold"] == 1.25, "@v1 must load the v1 revision, not main"
    assert_same_model(tmp_path / "online" / f"{index}.safetensors", v1_model, inputs)
    index, result = online["mixin:owner/model"]
    assert result["threshold"] == 0.25, result
    assert result["model_source"] == "hf://owner/model", "the model must say where it came from, not the cache path"
    assert_same_model(tmp_path / "online" / f"{index}.safetensors", main_model, inputs)
    index, result = online["mixin-cache:owner/model"]
    assert result["threshold"] == 1.25, result  # revision="v1" was passed
    assert result["model_source"] == "hf://owner/model@v1"
    own_cache = tmp_path / "online" / "own-cache" / "models--owner--model" / "snapshots" / COMMITS["v1"]
    assert (own_cache / "model.safetensors").is_file(), "from_pretrained(cache_dir=...) was ignored"

    assert "not found" in online["hf://owner/missing"][1]["error"]
    assert "'nope' does not exist" in online["hf://owner/model@nope"][1]["error"]
    assert "has no config.json" in online["hf://owner/empty"][1]["error"]
    for revision in ("main", "v1"):
        assert f"GET /owner/model/resolve/{revision}/config.json" in hub.requests
        # The weights come from the commit the config came from, not from whatever the branch points to by then.
        assert f"GET /owner/model/resolve/{COMMITS[revision]}/model.safetensors" in hub.requests
        assert f"GET /owner/model/resolve/{revision}/model.safetensors" not in hub.requests
    assert (hf_home / "hub" / "models--owner--model" / "snapshots" / COMMITS["v1"] / "model.safetensors").is_file()

    seen = len(hub.requests)
    offline_sources = ["hf://owner/model", "hf://owner/model@v1", "hf://owner/other"]
    offline = load_in_subprocess(offline_sources, inputs, tmp_path / "offline", hub.endpoint, hf_home, True)
    assert len(hub.requests) == seen, f"offline mode made requests: {hub.requests[seen:]}"
    assert offline[0]["threshold"] == 0.25
    assert_same_model(tmp_path / "offline" / "0.safetensors", main_model, inputs)
    assert offline[1]["threshold"] == 1.25
    assert_same_model(tmp_path / "offline" / "1.safetensors", v1_model, inputs)
    assert "offline" in offline[2]["error"] and "not in the local cache" in offline[2]["error"], offline[2]


@pytest.mark.parametrize("source", ["hf://justaname", "hf://a/b/c", "hf:///repo", "hf://owner/"])
def test_malformed_hub_sources_are_refused(source: str) -> None:
    with pytest.raises(WeightsError, match="expected hf://owner/repo"):
        parse_hub_source(source)


def test_revision_is_split_from_the_repo() -> None:
    assert parse_hub_source("hf://owner/repo@v1.0") == ("owner/repo", "v1.0")
    assert parse_hub_source("hf://owner/repo") == ("owner/repo", None)


@pytest.mark.slow  # two fresh Python processes importing torch
def test_a_cached_download_that_differs_from_the_hubs_hash_is_refused(hub: FakeHub, models: dict, inputs: Path, tmp_path: Path) -> None:
    """A repository without a checksum file: the hash the Hub reported at download time still guards the cache."""
    hf_home = tmp_path / "hf"
    (first,) = load_in_subprocess(["hf://owner/nosidecar"], inputs, tmp_path / "online", hub.endpoint, hf_home, False)
    assert "error" not in first, first
    snapshot = hf_home / "hub" / "models--owner--nosidecar" / "snapshots" / COMMITS["main"]
    blob = (snapshot / "model.safetensors").resolve()
    assert blob.name == hashlib.sha256(blob.read_bytes()).hexdigest(), "the cache no longer names blobs by their hash"
    data = bytearray(blob.read_bytes())
    data[-1000:] = bytes(255 - b for b in data[-1000:])  # flip bytes inside the tensor data: still a valid safetensors file
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    (second,) = load_in_subprocess(["hf://owner/nosidecar"], inputs, tmp_path / "offline", hub.endpoint, hf_home, True)
    assert "does not match the sha256 the Hub reported" in second.get("error", ""), second
