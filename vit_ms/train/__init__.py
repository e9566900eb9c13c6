"""Training: the train step (`step`; `accumulate` for micro-batches) and its builder with the metrics (`engine`),
optimizer and lr schedule (`optim`), losses (`loss`), the training loop that owns the run's state and the order
of everything between steps (`loop`, with `progress`, `divergence`, `saving`, `stopping`, `curves`,
`tensorboard`), how `Model.train` is called with or without dataset sink mode (`sink`), checkpoint files
(`checkpoint`), data-parallel checks (`distributed`) and the run that ties them together
(`trainer.run_training`)."""
