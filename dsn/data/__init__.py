"""Images in, model inputs out: preprocessing of any upload, dataset folders and splits, synthetic signatures."""
