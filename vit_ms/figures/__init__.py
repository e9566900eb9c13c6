"""Pictures vit_ms writes, drawn headless with matplotlib: `canvas` (figures without pyplot, saved atomically),
`run_curves` (training curves from metrics.jsonl; `python -m vit_ms.plot`), `confusion` (confusion.png) and
`attention` (attention-map panels). Low in the layers (it needs only `vit_ms.errors`), so training, evaluation
and inference all draw through it."""
