"""The global random state: one NumPy Generator that `manual_seed` resets."""
import numpy as np

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Seed minigen's random number generator (initialisation, dropout, sampling, batches)."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"manual_seed: seed must be an int, got {type(seed).__name__}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The current global NumPy Generator."""
    return _generator


def get_rng_state():
    """A JSON-serialisable snapshot of the global generator (saved in checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a snapshot made by get_rng_state()."""
    _generator.bit_generator.state = state
