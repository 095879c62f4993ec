"""One optimisation step, shared by every training loop."""
import math

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
