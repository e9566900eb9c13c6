"""Training: the train step (`step`; `accumulate` for micro-batches) and its builder with the metrics (`engine`),
optimizer and lr schedule (`optim`), losses (`loss`), callbacks (`callbacks`), checkpoint files (`checkpoint`),
data-parallel checks (`distributed`) and the run that ties them together (`trainer.run_training`)."""
