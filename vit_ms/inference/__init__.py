"""Using trained weights: building the model for inference (`loader`), scoring a split (`evaluate`), labelling
images (`predict`), exporting MindIR/ONNX (`export`) and running exported files (`exported`)."""
