"""Opening a model for use: `opener.open_model` (our checkpoints, published weights, mindcv, a distillation
teacher, an exported graph's sidecar) and `exported` (exported files at run time: formats, sidecars, runners).
Kept free of imports so that `exported`'s formats reach a command's --help without loading MindSpore."""
