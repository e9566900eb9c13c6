"""Weights read: the published-weights table and download cache, readers and converters for each source,
fitting to a model, and our own training checkpoints.

    weights = read_weights("model.safetensors")                # vit_ms.weights.load: our names, numpy arrays
    report = load_pretrained(model, "vit_b16.augreg_in21k_ft_in1k")

Modules: `hub` (the PRETRAINED table, download cache), `sources` (read files, rename each source's keys),
`fit` (architecture from shapes, position-embedding resampling, the strict key check), `load` (the pipeline
into a model), `verify` (the layout checks), `timm_layout` (our names in timm's), `checkpoint` (reading our own
training checkpoints: the file, its metadata, the raw/EMA choice; train.py writes them with
vit_ms.train.checkpoint). Opening any of these as a model for use is vit_ms.loader; the command that converts
weights in and out is vit_ms.convert.
"""
