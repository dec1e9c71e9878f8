"""Checks of the explanations themselves: are the maps the model's, and do they track the distance?

All methods side by side (``explanation_grid``), the randomisation cascade (``sanity``), deletion and
insertion curves (``faithfulness``), the transport plan against patch erasure (``plan_check``), the pair
under frequency filters (``frequency``), their figures (``figures``) and one offline report (``pair_report``).
The per-pair views these check live in ``dsn.inspect``; ``python -m dsn sanity ...`` and the app's
"Check the explanations" tab drive this package.
"""
