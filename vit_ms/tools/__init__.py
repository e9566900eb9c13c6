"""Libraries of the measuring commands, not entry points: the benchmark's measurements (`model_bench`,
`data_bench`, `scan_bench`, `distill_bench`, `profile_step`; run as `python -m vit_ms.benchmark`), the FLOP count
and the machine's matmul rate it reports (`flops`, `machine`, `timing`), the doctor's checks (`selfcheck`;
`python -m vit_ms.doctor`), the dry run of the train step for Ascend chips (`dryrun`, with the stand-in CANN
libraries of `cann_standins`) and the augmentation's comparison with timm (`augment_parity`)."""
