"""The guided tour: for every view, what it shows, what to look for, and one question for students.

Kept in one place so the panels read as one story, in the same order as
``notebooks/tour.ipynb``.
"""

from __future__ import annotations

import gradio as gr

GUIDE = {
    "verdict": (
        "The distance between the two signatures: a global part (how unlike the two images are as a whole) plus λ times "
        "a structural part (how expensive it is to match the reference's ink patches to the query's). Below the "
        "threshold, the query is accepted as the reference writer's.",
        "How far the distance is from the threshold (a close call or a clear one), and which part carries it.",
        "If only the structural part is large, what kind of difference between the signatures would you expect to see?",
    ),
    "correspondences": (
        "The optimal-transport plan: each line moves mass from a reference ink patch to a query ink patch; its colour is "
        "how unlike the two patches are. The structural distance is the sum of mass times cost.",
        "Patches with expensive matches (bright lines), and reference patches whose mass spreads over many query patches.",
        "Click a patch that looks the same in both signatures: are its matches cheap? What does that say about the plan?",
    ),
    "detail": (
        "Inside one Detail-Semantics Integrator: the pooled, low-frequency (semantic) input, the high-frequency residual "
        "(detail), and what the DetailConv, SalientConv and attention branches made of them.",
        "Where the detail energy sits: on the strokes' edges and crossings, or spread over the whole signature.",
        "Why might a forger copy the semantic part of a signature well but not its detail part?",
    ),
    "attributions": (
        "Which pixels of one image push the distance up (red, towards forged) or down (blue), with the other image fixed. "
        "Integrated Gradients and Gradient SHAP start from blank paper; their convergence δ says how well the map adds up.",
        "Whether the strongest pixels lie on ink the two signatures do not share, and whether two methods agree.",
        "Integrated Gradients is zero wherever the paper is blank. Is that a property of the model or of the method?",
    ),
    "checks": (
        "Tests of the explanations themselves. Side by side: every method on one scale. Sanity check: the maps as the "
        "network is destroyed block by block. Faithfulness: the distance as ink is removed in the order a map ranks it. "
        "Correspondence check: each reference patch erased and the pair verified again. Frequency: the pair with only "
        "some spatial frequencies kept.",
        "A method whose map does not change when the weights are random; a deletion curve no lower than random order; "
        "a plan whose expensive patches are not the ones that matter when erased.",
        "A map can look convincing and still fail the sanity check. What would it be showing instead?",
    ),
    "references": (
        "One query against several genuine signatures of the same writer, decided by the mean or the minimum distance, "
        "each at a threshold chosen on validation writers for that many references.",
        "How much the distances vary between the writer's own signatures: that spread is the writer's natural variation.",
        "Why does the minimum rule need a lower threshold the more references there are, and what would it accept without one?",
    ),
    "dataset": (
        "The standard protocol on a dataset split: every genuine-genuine and genuine-forged pair of each test writer, "
        "the error rates at the threshold, and the errors themselves, which open in the pair views.",
        "Writers with many errors, and whether false accepts are skilled forgeries that look alike to you too.",
        "The threshold was chosen on other writers. Why not choose it on these, and what would the EER then hide?",
    ),
}


def how_to_read(view: str) -> gr.Accordion:
    """A closed "How to read this" panel for ``view``; call inside the view's layout."""
    shows, look_for, question = GUIDE[view]
    with gr.Accordion("How to read this", open=False, elem_classes="dsn-guide") as panel:
        gr.Markdown(f"**What it shows.** {shows}\n\n**What to look for.** {look_for}\n\n**A question for students.** {question}")
    return panel
