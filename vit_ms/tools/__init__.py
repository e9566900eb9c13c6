"""Tools around the recipe: the benchmark (`python -m vit_ms.benchmark`) and the FLOP count it reports."""
