"""Checkpoints as published artefacts: model cards, Hub uploads, conversion of the authors' checkpoints."""
