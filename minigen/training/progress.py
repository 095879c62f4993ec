"""A one-line progress report: step, loss, tokens/s, elapsed and ETA, refreshed at most every `every` seconds."""
import math
import sys
import time


def format_seconds(seconds):
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Prints `step 120/2000 | loss 1.9312 | lr 9.1e-04 | 15,204 tok/s | 00:42 elapsed | ETA 10:55`.

    The ETA comes from whichever limit is nearer: `total_steps` or `max_time` seconds."""

    def __init__(self, total_steps=None, max_time=None, every=1.0, stream=None):
        self.total_steps, self.max_time, self.every = total_steps, max_time, every
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.last_print = -math.inf
        self.tokens = 0

    @property
    def elapsed(self):
        return time.perf_counter() - self.start

    def tokens_per_second(self):
        return self.tokens / max(self.elapsed, 1e-9)

    def eta(self, step):
        remaining = []
        if self.total_steps and step:
            remaining.append(self.elapsed / step * (self.total_steps - step))
        if self.max_time:
            remaining.append(self.max_time - self.elapsed)
        return min(remaining) if remaining else None

    def update(self, step, loss, tokens, lr=None, force=False, **extra):
        self.tokens += tokens
        now = time.perf_counter()
        if not force and now - self.last_print < self.every:
            return
        self.last_print = now
        total = f"/{self.total_steps}" if self.total_steps else ""
        parts = [f"step {step}{total}", f"loss {loss:.4f}"]
        if lr is not None:
            parts.append(f"lr {lr:.2e}")
        parts += [f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()]
        parts.append(f"{self.tokens_per_second():,.0f} tok/s")
        parts.append(f"{format_seconds(self.elapsed)} elapsed")
        eta = self.eta(step)
        if eta is not None:
            parts.append(f"ETA {format_seconds(eta)}")
        print(" | ".join(parts), file=self.stream, flush=True)
