"""Serving one trained model: a local page with predictions and attention maps, and a JSON API with batching.

    python -m vit_ms.serve --ckpt runs/demo/best.ckpt        # http://127.0.0.1:8000/

Modules: `cli` (arguments, binding, start), `model` (the one model, loaded through vit_ms.inference and compiled
for its batch sizes), `batcher` (concurrent images into one model call), `uploads` (request bodies into memory
within limits), `run_info` (the run directory's curves, plan and per-class table), `app` (routes, token, error
answers), `static/` (the page: plain HTML, CSS and JavaScript, no build step, nothing fetched from elsewhere).
"""
