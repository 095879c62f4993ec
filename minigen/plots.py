"""Pictures of training: attention heat maps and loss curves.

matplotlib is optional. With it, the functions here write PNG files; without it, they fall back to
plain text (an attention table, a CSV of the curves) so that a run on a bare install still leaves
something to look at. Figures are drawn on a `matplotlib.figure.Figure` without pyplot, so no global
backend or window is involved.
"""
import os

import numpy as np


def _figure_class():
    """matplotlib's Figure, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def _labels(tokens, name, size):
    # A space would be invisible as a label: show it as an open box.
    labels = [str(t).replace(" ", "\u2423") for t in tokens]
    if len(labels) != size:
        raise ValueError(f"{name} has {len(labels)} labels but the attention matrix has {size} along that axis")
    return labels


def _check_attention(weights, src_tokens, tgt_tokens):
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"weights must be a 2-D (target, source) attention matrix, got shape {weights.shape}")
    return (weights, _labels(src_tokens, "src_tokens", weights.shape[1]),
            _labels(tgt_tokens, "tgt_tokens", weights.shape[0]))


def attention_table(weights, src_tokens, tgt_tokens, digits=2):
    """The attention matrix as a text table: one row per target token, one column per source token.

    weights: (T, S) array, row t the attention of target step t over the source positions.
    Each cell shows the weight with `digits` decimals; the largest weight of a row is starred.
    """
    weights, src, tgt = _check_attention(weights, src_tokens, tgt_tokens)
    width = max([digits + 3] + [len(s) for s in src])
    row_head = max([1] + [len(t) for t in tgt])
    lines = [" " * row_head + " " + " ".join(s.rjust(width) + " " for s in src)]
    for label, row in zip(tgt, weights):
        best = int(np.argmax(row)) if row.size else -1
        cells = [f"{w:.{digits}f}".rjust(width) + ("*" if j == best else " ") for j, w in enumerate(row)]
        lines.append(label.rjust(row_head) + " " + " ".join(cells))
    return "\n".join(line.rstrip() for line in lines)


def save_attention(weights, src_tokens, tgt_tokens, path, title=None):
    """Write an attention heat map of `weights` (T, S) to `path` and return the path written.

    With matplotlib the file is a PNG (source tokens along x, target tokens along y). Without it,
    the text of :func:`attention_table` goes to the same path with the suffix `.txt`.
    """
    weights, src, tgt = _check_attention(weights, src_tokens, tgt_tokens)
    path = os.fspath(path)
    Figure = _figure_class()
    if Figure is None:
        text_path = os.path.splitext(path)[0] + ".txt"
        header = f"{title}\n" if title else ""
        with open(text_path, "w", encoding="utf-8") as f:
            f.write(header + attention_table(weights, src, tgt) + "\n")
        return text_path
    fig = Figure(figsize=(max(4.0, 0.32 * len(src) + 1.5), max(3.0, 0.32 * len(tgt) + 1.2)))
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=max(1e-9, float(weights.max(initial=0.0))),
                      aspect="auto")
    ax.set_xticks(range(len(src)), src, fontsize=8)
    ax.set_yticks(range(len(tgt)), tgt, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def save_loss_curves(curves, path, title=None, xlabel="step", ylabel="loss", log_y=False):
    """Plot named curves to a PNG at `path` and return the path written.

    curves: {name: (x_values, y_values)}, e.g. {"train": (steps, losses), "valid": (steps, losses)}.
    Without matplotlib the curves go to `path` with the suffix `.csv` (columns name, x, y).
    """
    if not isinstance(curves, dict) or not curves:
        raise ValueError(f"curves must be a non-empty dict {{name: (x, y)}}, got {curves!r:.80}")
    checked = {}
    for name, pair in curves.items():
        if len(pair) != 2:
            raise ValueError(f"curves[{name!r}] must be an (x, y) pair, got {len(pair)} items")
        x, y = np.asarray(pair[0], dtype=np.float64), np.asarray(pair[1], dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape:
            raise ValueError(f"curves[{name!r}]: x and y must be 1-D of the same length, "
                             f"got shapes {x.shape} and {y.shape}")
        checked[str(name)] = (x, y)
    path = os.fspath(path)
    Figure = _figure_class()
    if Figure is None:
        csv_path = os.path.splitext(path)[0] + ".csv"
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write(f"name,{xlabel},{ylabel}\n")
            for name, (x, y) in checked.items():
                f.writelines(f"{name},{a:g},{b:g}\n" for a, b in zip(x, y))
        return csv_path
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for name, (x, y) in checked.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None, markersize=3)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
