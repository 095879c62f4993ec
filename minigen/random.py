"""The global random state: one NumPy Generator that `manual_seed` resets."""
import numpy as np

_generator = np.random.default_rng(0)


def seeded_generator(seed, where="seed"):
    """A new NumPy Generator for the int `seed`; `where` names the caller in the TypeError for anything else.

    Any int is accepted, as torch.manual_seed does: NumPy wants a non-negative seed, so a negative one is
    taken modulo 2**64 (-1 seeds like 2**64 - 1, the same 64 bits read as unsigned)."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{where}: seed must be an int, got {seed!r} of type {type(seed).__name__}")
    seed = int(seed)
    return np.random.default_rng(seed % 2**64 if seed < 0 else seed)


def manual_seed(seed):
    """Seed minigen's random number generator (initialisation, dropout, sampling, batches).

    Any int is a valid seed; a negative one seeds like seed % 2**64 (see :func:`seeded_generator`)."""
    global _generator
    _generator = seeded_generator(seed, "manual_seed")
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
