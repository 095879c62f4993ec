"""Optimizers and learning-rate schedules with torch.optim's names and update rules.

    opt = mg.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    sched = mg.optim.lr_scheduler.WarmupCosineLR(opt, warmup_iters=100, lr_decay_iters=2000, min_lr=1e-4)
    loss.backward(); opt.step(); sched.step(); opt.zero_grad()
"""
from .optimizers import SGD, Adam, AdamW, Optimizer, adamw_param_groups
from .serialization import optimizer_state_from_arrays, optimizer_state_to_arrays
from . import lr_scheduler
