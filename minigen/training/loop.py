"""The training loop every model family runs, in nanoGPT's train.py shape.

    while the budget lasts:
        evaluate at step 0, every eval_interval steps and at the end (the hook keeps checkpoints)
        after SIGINT / SIGTERM: save last/ and stop
        lr = schedule(step)
        loss, tokens = one batch's loss
        backward, clip, update

What differs between families (their batches, their loss, what evaluation measures and keeps) comes in as
functions; the budget and the progress line come in as a Progress.
"""
from .run import TrainingInterrupted
from .step import optimization_step


def fit(optimizer, params, progress, batch_loss, schedule, evaluate=None, eval_interval=1, step=0, grad_clip=1.0,
        advice="lower the learning rate", on_step=None, stop=None, save_last=None):
    """Train from `step` until the budget of `progress` is used; returns the number of steps then taken.

    - `batch_loss(step)` -> (loss Tensor, tokens fed, {extra progress fields}) for the next batch;
    - `schedule(step)` -> the learning rate of that step;
    - `evaluate(step)`, when given, runs at step 0, at every multiple of `eval_interval` and once at the end;
      when it returns True the run ends there (early stopping, see Patience);
    - `on_step(step, loss_value)` runs after each update (`step` counts it);
    - with `stop` (a StopSignals), a signal lets the current step (and an evaluation due after it) finish,
      then `save_last(step)` saves and returns the path, and TrainingInterrupted is raised.
    A loss that is not finite raises FloatingPointError naming the step, followed by `advice`."""
    while True:
        done = progress.fraction_done(step) >= 1.0
        if evaluate is not None and (done or step % eval_interval == 0) and evaluate(step) is True:
            done = True
        if done:
            return step
        if stop is not None and stop.signum:  # checked after evaluating, so that a signal during it costs no step
            progress.end_line()
            raise TrainingInterrupted(stop.signum, step, save_last(step))
        lr = schedule(step)
        loss, tokens, extra = batch_loss(step)
        loss_value = optimization_step(optimizer, loss, lr, params, grad_clip, step, advice)
        step += 1
        progress.update(step, loss_value, tokens, lr=lr, **extra)
        if on_step is not None:
            on_step(step, loss_value)


class Patience:
    """Early stopping on a validation metric: `update(step, value)` records one evaluation and returns True once
    `patience` evaluations in a row have not beaten the best by more than `min_delta` (lower is better, or
    higher with `higher_is_better`). `best` and `best_step` are the best value and the step it was reached at."""

    def __init__(self, patience, higher_is_better=False, min_delta=0.0):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        self.patience, self.sign, self.min_delta = patience, -1.0 if higher_is_better else 1.0, min_delta
        self.best, self.best_step, self.waited = None, None, 0

    def update(self, step, value):
        if self.best is None or self.sign * (self.best - value) > self.min_delta:
            self.best, self.best_step, self.waited = value, step, 0
            return False
        self.waited += 1
        return self.waited >= self.patience
