"""Looking inside one decision: the pair analysis, attributions, figures and panels, reference sets, the embedding map.

Checks of these explanations live in ``dsn.checks``; the dataset explorer's backend in ``dsn.evaluation.explorer``.
"""
