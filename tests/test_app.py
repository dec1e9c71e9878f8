"""The Gradio app, served for real and called through gradio_client like a script would."""

from __future__ import annotations

import base64
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

import dsn  # noqa: E402
from dsn.tools.screenshot import serve  # noqa: E402
from dsn.ui.examples import example_pairs  # noqa: E402
from dsn.ui.inputs import DRAW, UPLOAD, blank_canvas, chosen_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "assets" / "examples"
SUMMARY_KEYS = {"verdict", "distance", "global_distance", "structural_distance", "threshold", "seconds", "untrained"}


@pytest.fixture(scope="module")
def client() -> Client:
    with serve() as (_, url):
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def pair() -> dict:
    return {"reference": handle_file(str(EXAMPLES / "writer1_reference.png")), "query": handle_file(str(EXAMPLES / "writer1_forged.png"))}


def test_api_lists_the_json_endpoints(client: Client) -> None:
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    expected = {"/verify", "/references", "/correspondences", "/attribute", "/dsi", "/sanity", "/faithfulness", "/plan_check", "/frequency"}
    assert expected <= set(endpoints)
    names = [p["parameter_name"] for p in endpoints["/verify"]["parameters"]]
    assert names == ["reference", "query", "threshold"]


def test_verify_returns_a_consistent_summary(client: Client, pair: dict) -> None:
    summary = client.predict(**pair, api_name="/verify")
    assert SUMMARY_KEYS <= set(summary)
    numbers = [summary[k] for k in ("distance", "global_distance", "structural_distance", "threshold", "seconds")]
    assert all(math.isfinite(x) for x in numbers)
    assert summary["distance"] == pytest.approx(summary["global_distance"] + summary["weighted_structural_distance"], abs=1e-5)
    assert summary["verdict"] == ("genuine" if summary["distance"] <= summary["threshold"] else "forged")
    # The threshold re-decides the same distance.
    strict = client.predict(**pair, threshold=0.0, api_name="/verify")
    lenient = client.predict(**pair, threshold=100.0, api_name="/verify")
    assert (strict["verdict"], lenient["verdict"]) == ("forged", "genuine")
    assert strict["distance"] == pytest.approx(summary["distance"], abs=1e-6)


def test_correspondences_are_the_heaviest_plan_entries(client: Client, pair: dict) -> None:
    result = client.predict(**pair, top_k=12, api_name="/correspondences")
    rows, cols = result["grid"]
    matches = result["matches"]
    assert 0 < len(matches) <= 12
    masses = [m["mass"] for m in matches]
    assert masses == sorted(masses, reverse=True) and 0 < sum(masses) <= 1 + 1e-6
    for m in matches:
        for side in ("reference_patch", "query_patch"):
            patch = m[side]
            assert 0 <= patch["token"] < rows * cols and divmod(patch["token"], cols) == (patch["row"], patch["col"])
        assert math.isfinite(m["cost"]) and -1e-6 <= m["cost"] <= 2 + 1e-6
    token = matches[0]["reference_patch"]["token"]
    one = client.predict(**pair, top_k=5, reference_patch=token, api_name="/correspondences")["matches"]
    assert one and {m["reference_patch"]["token"] for m in one} == {token}


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_attribute_returns_stats_and_a_map(client: Client, pair: dict, method: str) -> None:
    result = client.predict(**pair, method=method, target="total", side="query", steps=4, api_name="/attribute")
    assert result["method"] == method and result["side"] == "query"
    stats = result["stats"]
    assert stats["shape"] == [224, 224]
    assert all(math.isfinite(stats[k]) for k in ("min", "max", "mean", "sum", "abs_sum")) and stats["abs_sum"] > 0
    if method == "integrated_gradients":
        assert result["steps"] == 4 and math.isfinite(result["convergence_delta"])
    else:
        assert result["convergence_delta"] is None
    pixels = cv2.imdecode(np.frombuffer(base64.b64decode(result["map_png_base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels.shape == (224, 224) and pixels.max() > pixels.min()


def test_dsi_knows_which_stages_have_a_frequency_split(client: Client, pair: dict) -> None:
    first = client.predict(**pair, stage=0, block=0, api_name="/dsi")
    last = client.predict(**pair, stage=3, block=0, api_name="/dsi")
    assert (first["pool_size"], first["frequency_split"]) == (4, True)
    assert (last["pool_size"], last["frequency_split"]) == (1, False)
    energy = last["query"]["mean_energy"]
    assert energy["semantic_input"] == pytest.approx(energy["detail_input"])  # no pooling: the same features
    profile = first["reference"]["frequency_profile"]["detail_input"]
    assert len(profile["frequency"]) == len(profile["power"]) > 1


def test_bad_inputs_give_clear_errors_and_the_app_keeps_serving(client: Client, pair: dict, tmp_path: Path) -> None:
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text, not a picture")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((120, 300), 255, np.uint8))
    huge = tmp_path / "huge.png"
    huge.write_bytes(os.urandom(21 * 1024 * 1024))  # over the app's 20 MB upload limit
    cases = [
        (dict(pair, reference=handle_file(str(not_an_image))), "/verify", "not an image we can read"),
        (dict(pair, query=handle_file(str(blank))), "/verify", "Query image: No ink found"),
        (dict(pair, query=None), "/verify", "No query image"),
        (dict(pair, method="magic"), "/attribute", "method must be one of"),
        (dict(pair, stage=7), "/dsi", "stage must be a whole number from 0 to 3"),
        (dict(pair, method="integrated_gradients", steps=20000), "/attribute", "steps must be a whole number from 1 to 256"),
        (dict(pair, top_k=-3), "/correspondences", "top_k must be a whole number from 1"),
        (dict(pair, reference_patch=10_000), "/correspondences", "reference_patch must be a whole number from -1"),
    ]
    for arguments, endpoint, message in cases:
        with pytest.raises(Exception, match=message):
            client.predict(**arguments, api_name=endpoint)
    with pytest.raises(Exception):  # noqa: B017 (rejected by the server's upload limit, before our code)
        client.predict(**dict(pair, query=handle_file(str(huge))), api_name="/verify")
    assert client.predict(**pair, api_name="/verify")["verdict"] in ("genuine", "forged")


def test_drawing_pad_input_is_checked_before_the_model() -> None:
    with pytest.raises(ValueError, match="drawing pad is empty"):
        chosen_image("query", None, blank_canvas(), DRAW)
    with pytest.raises(ValueError, match="No reference signature"):
        chosen_image("reference", None, blank_canvas(), UPLOAD)
    drawn = blank_canvas()
    composite = drawn["background"].copy()
    cv2.line(composite, (40, 150), (600, 120), (26, 26, 46), 4)
    drawn["composite"] = composite
    assert chosen_image("query", None, drawn, DRAW) is composite
    assert chosen_image("query", "upload.png", drawn, UPLOAD) == "upload.png"


def test_examples_are_labelled_pairs() -> None:
    rows, labels = example_pairs(EXAMPLES)
    assert len(rows) == len(labels) == 8
    assert labels[:2] == ["writer 1: genuine pair", "writer 1: forgery"]
    assert labels[-2:] == ["paper vs phone: same person", "paper vs phone: another person"]
    assert all(Path(p).is_file() for row in rows for p in row)


@pytest.mark.slow  # a fresh interpreter has to import torch
def test_offline_hub_weights_fail_with_a_message_not_a_traceback() -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    run = subprocess.run(
        [sys.executable, str(REPO / "app.py"), "--weights", "hf://nobody-here/no-such-dsn-checkpoint", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode != 0
    assert "offline" in run.stderr and "Traceback" not in run.stderr


def test_threshold_redecides_without_running_the_model() -> None:
    import dsn
    from dsn.inference import analyze_pair
    from dsn.ui.tabs.verify import rethreshold

    model = dsn.load()
    analysis = analyze_pair(model, EXAMPLES / "writer2_reference.png", EXAMPLES / "writer2_genuine.png")
    judged, banner, bar, summary = rethreshold(analysis, 0.0)
    assert judged.verification is analysis.verification  # same tensors: nothing was recomputed
    assert summary["verdict"] == "forged" and "Forged" in banner and bar is not None
    assert rethreshold(analysis, 100.0)[3]["verdict"] == "genuine"
    assert rethreshold(None, 0.5)[0] is None


def test_header_names_the_checkpoint_without_the_servers_paths(tmp_path: Path) -> None:
    from dsn.loading import source_label as label
    from dsn.model.weights import CHECKPOINTS_DIR

    assert label(str(CHECKPOINTS_DIR / "dsnet-tiny-cedar")) == "dsnet-tiny-cedar"
    assert label(str(tmp_path / "runs" / "mine")) == "mine"  # outside the project: the folder's name only
    assert label("hf://owner/repo@v1") == "hf://owner/repo@v1"
    assert label(None) == "random initialisation (untrained)"


def test_header_quotes_the_checkpoints_headline_numbers() -> None:
    from dsn.ui.app import header_metrics

    measured = {"test.eer": 0.1625, "test.auc": 0.92437, "val.eer": 0.2038, "val.far": 0.3, "test_info.n_pairs": 4260}
    assert header_metrics(measured) == " · measured: test EER 16.25 % (ROC AUC 0.924), val EER 20.38 %"
    measured |= {"cross_dataset.bhsig-bengali.metrics.eer": 0.2705, "cross_dataset.bhsig-bengali.metrics.auc": 0.8}
    assert header_metrics(measured, "cedar") == (
        " · measured: CEDAR test EER 16.25 % (ROC AUC 0.924), BHSig-Bengali test EER 27.05 %, val EER 20.38 %"
    )
    assert header_metrics({"val.eer": 0.25}) == " · measured: val EER 25.00 %"
    assert header_metrics({}) == ""


def test_the_verdict_says_how_close_the_call_was_in_words() -> None:
    from dsn.ui.tabs.verify import plain_reading, verdict_html

    base = {"verdict": "genuine", "distance": 0.38, "threshold": 0.40, "margin": 0.02, "global_distance": 0.3,
            "weighted_structural_distance": 0.08, "ink_tokens_reference": 12, "ink_tokens_query": 9, "tokens": 49,
            "seconds": 0.1, "untrained": False, "input_warnings": {"reference": [], "query": []}}  # fmt: skip
    # without validation distances: the margin only, and no claim of certainty
    assert plain_reading(base) == (
        "The distance is 0.020 below the threshold: accepted as the reference writer's. "
        "This checkpoint carries no validation distances to say how often such a call is wrong."
    )
    # with them: the distance placed among genuine and forged pairs
    spread = {"percent": [0.0, 50.0, 100.0], "genuine": [0.1, 0.3, 0.6], "forged": [0.2, 0.6, 1.0]}
    accepted = plain_reading(base, spread)  # 0.38: (0.38 - 0.2) / 0.4 x 50 = 22 % of forgeries were at most this far
    assert accepted.endswith("On the validation writers, 22 % of forgeries came this close: weak evidence.")
    clear = plain_reading(dict(base, distance=0.19, margin=0.21), spread)
    assert "0 % of forgeries came this close: forgeries rarely get this close" in clear
    far = dict(base, verdict="forged", distance=0.7, margin=-0.3)
    assert plain_reading(far, spread).endswith("0 % of genuine pairs were this far apart: genuine pairs are rarely this far apart.")
    assert "clear margin" not in plain_reading(far) and "clear margin" not in accepted
    page = verdict_html(base)
    assert "verdict-reading" in page and "<abbr title=" in page and "of the 49 patches" in page


def test_verify_is_not_stuck_behind_an_attribution(client: Client, pair: dict) -> None:
    """Attributions run in their own lane: a verify submitted after a long one answers while it still runs."""
    heavy = client.submit(**pair, method="integrated_gradients", target="total", side="query", steps=256, api_name="/attribute")
    job = _running("Integrated Gradients")  # waits until it computes, however slow the machine
    summary = client.predict(**pair, api_name="/verify")
    assert summary["verdict"] in ("genuine", "forged")
    assert not job.finished.is_set(), "verify waited for the attribution to finish"
    assert heavy.result()["steps"] == 256


def _running(label: str, seconds: float = 120.0):
    """The running job with this label once it has started computing (its progress checks grow)."""
    from dsn.ui.jobs import JOBS

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        jobs = [job for job in JOBS.running() if job.label == label and job.checks > 0]
        if jobs:
            return jobs[0]
        time.sleep(0.1)
    raise AssertionError(f"no {label!r} job started")


def _assert_stops(job, seconds: float = 60.0) -> None:
    """The job's thread returns, and its progress checks stop growing: the computation has really ended."""
    from dsn.ui.jobs import JOBS

    assert job.finished.wait(seconds), "the stopped attribution kept computing"
    checks = job.checks
    time.sleep(1.0)
    assert job.checks == checks
    assert job not in JOBS.running()


def _assert_progresses(job, seconds: float = 60.0) -> None:
    """The job keeps computing: its progress checks grow (waited on, not slept for)."""
    start = job.checks
    deadline = time.monotonic() + seconds
    while job.checks <= start:
        assert time.monotonic() < deadline and not job.finished.is_set(), "the job stopped making progress"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_cancelled_attribution_stops_computing(client: Client, pair: dict) -> None:
    heavy = client.submit(**pair, method="integrated_gradients", target="total", side="query", steps=256, api_name="/attribute")
    job = _running("Integrated Gradients")
    assert not job.finished.is_set()
    heavy.cancel()
    _assert_stops(job)
    assert job.reason == "cancelled"
    # The lane is free again: the next attribution runs to its end.
    assert client.predict(**pair, method="saliency", target="total", side="query", steps=1, api_name="/attribute")["method"] == "saliency"


@pytest.mark.slow
def test_a_visitor_who_leaves_stops_their_work(client: Client, pair: dict) -> None:
    """What the app runs when a tab closes (``demo.unload``) stops that visitor's attribution, and nobody else's."""
    import gradio as gr

    from dsn.ui.app import forget_visitor

    heavy = client.submit(**pair, method="integrated_gradients", target="total", side="query", steps=256, api_name="/attribute")
    job = _running("Integrated Gradients")
    forget_visitor(gr.Blocks(), gr.Request(session_hash="someone-else"))  # stops synchronously, if at all
    assert not job.stopped
    _assert_progresses(job)
    forget_visitor(gr.Blocks(), gr.Request(session_hash=client.session_hash))
    _assert_stops(job)
    assert job.reason == "left"
    with pytest.raises(Exception):  # noqa: B017 (the client reports the server's error as its own type)
        heavy.result()


def test_the_explanation_checks_answer_as_json(client: Client, pair: dict) -> None:
    verdict = client.predict(**pair, api_name="/verify")
    bands = client.predict(**pair, api_name="/frequency")["bands"]
    assert [b["band"] for b in bands] == ["original", "LF", "LMF", "LHF"]
    assert bands[0]["distance"] == pytest.approx(verdict["distance"], abs=1e-6)
    plan = client.predict(**pair, api_name="/plan_check")
    assert len(plan["patches"]) == len(plan["share"]) == len(plan["change"]) == verdict["ink_tokens_reference"]
    assert -1.0 <= plan["spearman"] <= 1.0
    curves = client.predict(**pair, side="query", methods="saliency", steps=1, api_name="/faithfulness")
    assert set(curves["curves"]) == {"saliency", "random"} and len(curves["fractions"]) == 21
    sanity = client.predict(**pair, side="query", methods="saliency", steps=1, api_name="/sanity")
    assert len(sanity["spearman"]["saliency"]) == len(sanity["steps"]) == 12 and "saliency" in sanity["verdicts"]
    with pytest.raises(Exception, match="methods must be a comma-separated subset"):
        client.predict(**pair, side="query", methods="magic", steps=1, api_name="/sanity")
    with pytest.raises(Exception, match="steps must be a whole number from 1 to 64"):
        client.predict(**pair, side="query", methods="saliency", steps=500, api_name="/sanity")


def test_a_file_reference_outside_the_uploads_reveals_no_server_path(client: Client) -> None:
    """A hand-made request naming ``file:///etc/passwd`` is refused without the server's working directory."""
    import httpx

    probe = {"path": "file:///etc/passwd", "meta": {"_type": "gradio.FileData"}}
    base = client.src.rstrip("/")
    started = httpx.post(f"{base}/gradio_api/call/verify", json={"data": [probe, probe, None]}, timeout=30)
    started.raise_for_status()
    answer = httpx.get(f"{base}/gradio_api/call/verify/{started.json()['event_id']}", timeout=60).text
    assert "event: error" in answer
    assert os.getcwd() not in answer and str(REPO) not in answer and "passwd" not in answer


def test_the_first_hint_says_where_the_examples_are() -> None:
    """The examples sit under the Verify button (left column on a laptop, above the verdict on a phone), never "below" the hint."""
    from dsn.ui.tabs.verify import WAITING_HTML

    assert "under the <b>Verify</b> button" in WAITING_HTML and "below" not in WAITING_HTML


def test_threshold_boxes_show_the_three_decimals_the_texts_quote() -> None:
    from dsn.ui.inputs import dataset_threshold_slider

    assert dataset_threshold_slider(0.46089, 0.001, "t", "t").value == 0.461


def test_reports_name_the_files_the_visitor_gave() -> None:
    from dsn.ui.inputs import input_names

    values = ["/tmp/gradio/abc/my signature.png", None, UPLOAD, None, {"composite": None}, DRAW, 0.4]
    assert input_names(values) == {"reference": "my signature.png", "query": "drawn on the Draw pad"}


def test_references_judge_each_rule_at_its_val_chosen_threshold(client: Client, pair: dict) -> None:
    """/references: each distance equals /verify's, and each rule is judged at the shipped default's own threshold."""
    model = dsn.load()
    references = [EXAMPLES / name for name in ("writer1_reference.png", "writer1_genuine.png", "writer2_reference.png")]
    result = client.predict(
        query=pair["query"], references=[handle_file(str(path)) for path in references], threshold=None, api_name="/references"
    )
    single = client.predict(reference=handle_file(str(references[0])), query=pair["query"], api_name="/verify")
    assert result["references"][0]["distance"] == pytest.approx(single["distance"], abs=1e-5)
    assert result["decided_by"] == model.config.reference_rule
    for rule in ("mean", "min"):
        expected = model.config.reference_threshold(rule, 3)
        assert expected is not None, "the shipped default has reference-set thresholds"
        assert result["rules"][rule]["threshold"] == pytest.approx(expected, abs=1e-9)
        assert result["rules"][rule]["accepted"] == (result["rules"][rule]["distance"] <= expected)
    assert result["accepted"] == result["rules"][result["decided_by"]]["accepted"]
    with pytest.raises(Exception, match="at least one genuine reference"):
        client.predict(query=pair["query"], references=[], threshold=None, api_name="/references")
