"""Training: the train step with gradient accumulation and its builder (`step`), the eval network and metrics
(`metrics`), optimizer and lr schedule (`optim`), losses (`loss`), the training loop that owns the run's state and
the order of everything between steps (`loop`, with `progress`, `divergence`, `saving`, `stopping`, `curves`,
`tensorboard`), how `Model.train` is called with or without dataset sink mode (`sink`), checkpoint files
(`checkpoint`), data-parallel checks (`distributed`) and the run that ties them together
(`trainer.run_training`)."""
