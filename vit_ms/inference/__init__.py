"""Using trained weights, opened by vit_ms.loader: scoring a split (`evaluate`), labelling images (`predict`),
attention maps (`attention_maps`), writing MindIR/ONNX files (`to_mindir_onnx`, the code of
`python -m vit_ms.export`) and running them (`exported_runner`)."""
