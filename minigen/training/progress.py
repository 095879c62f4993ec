"""The progress report of training: step, loss, tokens/s, elapsed and ETA.

On a terminal it is one line rewritten in place (as tqdm does); into a file or a pipe it is a full
line at most every `every` seconds, so logs stay readable."""
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

    Steps are numbered from `start_step` and the clock from `start_seconds` (a resumed run goes on from
    where it was). The budget is `total_steps` and/or `max_time` seconds, whichever ends first. The ETA
    comes from the nearer limit, at the pace measured after this process's first step (which loads or
    compiles the kernels); before that it is not shown."""

    def __init__(self, total_steps=None, max_time=None, every=1.0, stream=None, start_step=0, start_seconds=0.0):
        self.total_steps, self.max_time, self.every = total_steps, max_time, every
        self.stream = stream or sys.stdout
        self.in_place = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter() - start_seconds
        self.process_start = time.perf_counter()
        self.last_print = -math.inf
        self.tokens = 0
        self.start_step = start_step
        self.first_step_done = None  # (time, step) when this process's first step ended
        self._open_line = 0  # width of an in-place line not yet ended

    @property
    def elapsed(self):
        return time.perf_counter() - self.start

    def tokens_per_second(self):
        """Tokens per second of this process (the tokens of a resumed run's earlier processes are not counted)."""
        return self.tokens / max(time.perf_counter() - self.process_start, 1e-9)

    def fraction_done(self, step):
        """The fraction of the budget used after `step` steps; 1.0 or more means the run is over."""
        by_steps = 0.0
        if self.total_steps is not None:  # a budget of 0 steps is used up before the first
            by_steps = step / self.total_steps if self.total_steps else 1.0
        by_time = self.elapsed / self.max_time if self.max_time else 0.0
        return max(by_steps, by_time)

    def planned_steps(self, step):
        """The number of steps the run will have taken when its budget ends: `total_steps`, or fewer when
        `max_time`, at the pace so far, ends it first; at least `step + 1`. Schedules over a budget decay
        over these steps."""
        planned = self.total_steps or math.inf
        if self.max_time and step:
            planned = min(planned, step * self.max_time / max(self.elapsed, 1e-9))
        return step + 1 if planned == math.inf else max(step + 1, int(planned))

    def eta(self, step):
        if self.first_step_done is None or step <= self.first_step_done[1]:
            return None
        since, first = self.first_step_done
        remaining = []
        if self.total_steps:
            remaining.append((time.perf_counter() - since) / (step - first) * (self.total_steps - step))
        if self.max_time:
            remaining.append(self.max_time - self.elapsed)
        return min(remaining) if remaining else None

    def update(self, step, loss, tokens, lr=None, force=False, **extra):
        """Record one step (`step` is its 1-based number in the whole run) and print when it is time."""
        self.tokens += tokens
        now = time.perf_counter()
        if self.first_step_done is None:
            self.first_step_done = (now, step)
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
        line = " | ".join(parts)
        if self.in_place:
            self.stream.write("\r" + line.ljust(self._open_line))
            self.stream.flush()
            self._open_line = len(line)
        else:
            print(line, file=self.stream, flush=True)

    def end_line(self):
        """End an in-place line, so that what is printed next starts on a line of its own."""
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = 0

    def wrap(self, log):
        """`log` that first ends an in-place progress line."""
        def logged(*args, **kwargs):
            self.end_line()
            log(*args, **kwargs)
        return logged
