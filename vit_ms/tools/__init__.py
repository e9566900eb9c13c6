"""Tools around the recipe: the benchmark (`python -m vit_ms.benchmark`), the FLOP count and the machine's matmul
rate it reports, the data-pipeline benchmark, the one-step profile, and the dry run of the train step for Ascend chips
(`dryrun`, with the stand-in CANN libraries of `cann_standins`)."""
