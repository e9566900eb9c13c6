"""Tools around the recipe: the benchmark (`python -m vit_ms.benchmark`) and the FLOP count it reports; the
pictures (`figures`: headless matplotlib; `plot`: training curves, `python -m vit_ms.plot`; `confusion`: the
confusion matrix; `attention_figure`: attention maps)."""
