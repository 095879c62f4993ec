"""One optimisation step and the evaluation mode, shared by every training loop."""
import math
from contextlib import contextmanager

from ..autograd import no_grad
from ..nn.utils import clip_grad_norm_


def optimization_step(optimizer, loss, lr, params, grad_clip, step, advice):
    """Backward from `loss`, clip to `grad_clip` (0 disables), and update with learning rate `lr`.

    A NaN or infinite loss stops before anything is changed, with a FloatingPointError naming the step
    followed by `advice`. Returns the loss as a float."""
    loss_value = loss.item()
    if not math.isfinite(loss_value):
        raise FloatingPointError(f"loss became {loss_value} at step {step}; {advice}")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss_value


@contextmanager
def evaluating(model):
    """Evaluation mode (no dropout) and no gradients inside the block; afterwards every module is back in its
    own mode (`Module.eval_mode`), so evaluating does not switch to training what a caller keeps in eval mode."""
    with model.eval_mode(), no_grad():
        yield model
