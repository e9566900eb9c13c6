"""Weights from outside: the published-weights table and download cache, readers and converters for each
source, fitting to a model, and the converter's command line.

    weights = read_weights("model.safetensors")                # vit_ms.weights.load: our names, numpy arrays
    report = load_pretrained(model, "vit_b16.augreg_in21k_ft_in1k")

Modules: `hub` (the PRETRAINED table, download cache), `sources` (read files, rename each source's keys),
`fit` (architecture from shapes, position-embedding resampling, the strict key check), `load` (the pipeline
into a model), `to_checkpoint` (the code of python -m vit_ms.convert). Our own training checkpoints are
`vit_ms.train.checkpoint`.
"""
