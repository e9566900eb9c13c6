"""Training, one job a module:

    trainer      the run that ties everything together: run_training, resume, the build of datasets/model/step
    loop         the training loop and its one state (`TrainState`: every counter of the run), the order of
                 everything between steps, progress lines, the divergence check, the `Model.train` legs
    step         one optimizer step (`TrainStep`) over one batch or several accumulated micro-batches:
                 forward, backward, overflow check, clip, update, EMA; and its builder from the plan
    metrics      the eval network, top-1/top-5/loss across ranks, `mindspore.train.Model`
    saving       what the run writes: checkpoints now or waiting for the next sane loss, pruning, metrics.jsonl
    stopping     SIGTERM/SIGINT: the signal watcher and the graceful stop
    losses       cross-entropy, soft targets, DeiT's distillation loss and the frozen teacher cell
    pictures     curves.png and TensorBoard scalars after every epoch
    optim        the optimizer, the lr schedule and the parameter groups
    checkpoint   writing checkpoint files atomically, the resume state, where a run resumes (reading them:
                 vit_ms.weights.checkpoint)
    ema          the exponential moving average of the weights
    runlock      one training per run directory
    distributed  data-parallel checks across ranks

Follow one step in `step.py` (the step itself) and `loop.py` (`TrainLoop.after_steps`: what follows it); one
epoch in `loop.py` (`TrainLoop.end_epoch`) and `saving.py`; one resume in `trainer.py` (`load_resume`,
`restore`, `check_resume_changes`) and `checkpoint.py`.
"""
