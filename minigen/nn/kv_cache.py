"""The keys and values a decoder has computed for past positions, kept so that each new token costs one step.

One KVCache serves every attention layer of a model: two arrays (layers, batch, heads, capacity, head_dim),
allocated once for the whole generation (prompt + new tokens, as transformers' static cache). A step writes its
keys and values in place after the filled positions and attends over the filled prefix, a view: nothing is
concatenated or copied per step. Beam search reorders the batch rows in place.
"""
import numpy as np


class KVCache:
    """Keys and values of the first `length` positions of each sequence, for `n_layer` attention layers.

    A forward pass calls `update(layer, k, v)` in every layer with the new positions' keys and values
    (batch, heads, new, head_dim), then `advance(new)` once. `capacity` positions fit; more grow the arrays
    (doubling), so a caller that knows the final length should say it."""

    def __init__(self, n_layer, batch_size, n_head, head_dim, capacity, dtype=np.float32):
        for name, value in (("n_layer", n_layer), ("batch_size", batch_size), ("n_head", n_head),
                            ("head_dim", head_dim), ("capacity", capacity)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"KVCache: {name} must be a positive integer, got {value!r}")
        shape = (n_layer, batch_size, n_head, capacity, head_dim)
        self.keys, self.values = np.empty(shape, dtype), np.empty(shape, dtype)
        self.length = 0
        # the model's weights as its decoding kernel takes them, prepared at the first step this cache serves
        # (`kernels.prepare_decode_blocks`), so that the later steps of the generation skip that work
        self.decoding_weights = None

    @property
    def capacity(self):
        return self.keys.shape[3]

    @property
    def batch_size(self):
        return self.keys.shape[1]

    def update(self, layer, k, v):
        """Store k, v (batch, heads, T, head_dim) as positions length .. length + T - 1 of `layer`; return that
        layer's keys and values up to them (views of the cache)."""
        end = self.length + k.shape[2]
        expected = self.keys.shape[1:3] + (k.shape[2], self.keys.shape[4])
        if k.shape != expected or v.shape != expected:
            raise ValueError(f"KVCache.update: keys and values must have shape {expected} (batch, heads, new "
                             f"positions, head_dim), got {k.shape} and {v.shape}")
        self.make_room(k.shape[2])
        self.keys[layer, :, :, self.length:end] = k
        self.values[layer, :, :, self.length:end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def make_room(self, steps):
        """Grow the arrays (doubling) unless `steps` more positions fit; `update` calls it, and so does a kernel's
        caller that writes them into the buffers itself (`kernels.decode_blocks`)."""
        if self.length + steps > self.capacity:
            self._grow(self.length + steps)

    def advance(self, steps):
        """Count `steps` new positions as filled, after every layer has stored them."""
        self.length += steps

    def reorder(self, index):
        """Row i becomes row index[i] (beam search follows its beams; repeated rows for several return
        sequences). Only the filled positions move; a same-sized reorder works in place."""
        index = np.asarray(index)
        if len(index) != self.batch_size:
            self._reallocate(index, self.capacity)
            return
        filled = slice(0, self.length)
        self.keys[:, :, :, filled] = self.keys[:, index, :, filled]
        self.values[:, :, :, filled] = self.values[:, index, :, filled]

    def _grow(self, needed):
        self._reallocate(np.arange(self.batch_size), max(needed, 2 * self.capacity))

    def _reallocate(self, rows, capacity):
        """New arrays of `capacity` positions holding the filled positions of the given batch rows."""
        n_layer, _, n_head, _, head_dim = self.keys.shape
        shape = (n_layer, len(rows), n_head, capacity, head_dim)
        filled = slice(0, self.length)
        for name in ("keys", "values"):
            old = getattr(self, name)
            new = np.empty(shape, old.dtype)
            new[:, :, :, filled] = old[:, rows, :, filled]
            setattr(self, name, new)
