"""Tools around the recipe: the benchmark (`python -m vit_ms.benchmark`), the FLOP count and the machine's matmul
rate it reports, the data-pipeline benchmark and the one-step profile."""
