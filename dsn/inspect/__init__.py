"""Looking inside a decision: pair analyses, attributions, figures, reference sets, the dataset explorer."""
