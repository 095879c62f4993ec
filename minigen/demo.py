"""`minigen demo`: the two families side by side on the dates task.

Trains a GRU encoder-decoder with Bahdanau attention and a small GPT that reads ``source <sep>`` and
completes ``target <eos>``, each for a fixed number of steps chosen to converge, then compares them on the
same test set: parameters, training time and speed, exact match (greedy and beam search) and decoding speed.
The kernels are loaded (compiled on a first run) by two untimed steps of each model before any clock starts,
so the results are the same on any machine and only the measured times vary. `--max-time` optionally caps
each model's training seconds (a capped run may then stop before converging). The output directory must be
new or empty; `--overwrite` replaces an earlier demo's. Writes into it:

    demo.json        the comparison table, the samples and the names of the files below
    loss.png         validation and training loss of both models against training time
                     (loss.csv without matplotlib)
    attention.png    the Seq2Seq attention map of one date (attention.txt without matplotlib)
    seq2seq/, gpt/   the trained models: `minigen translate --checkpoint DIR/seq2seq "March 3, 2021"`,
                     `minigen generate --checkpoint DIR/gpt --prompt "March 3, 2021<sep>"`
"""
import contextlib
import io
import json
import os
import shlex
import shutil
import time

from . import kernels, plots
from .data import load_task
from .training.pairs_gpt import complete, pairs_tokenizer, train_pairs_gpt
from .training.seq2seq import save_attention_map, train_seq2seq, translate_pairs

TASK = "dates"
QUICK_STEPS = 400
ATTENTION_EXAMPLE = "Wednesday the 3rd of March 2021"
SAMPLES = 5

# Steps at which both models converge (about 80 seconds each on 2 idle cores); --quick trains small models
# for a few seconds, far from converged.
SPLITS = {"full": dict(n_train=20000, n_valid=500, n_test=1000), "quick": dict(n_train=1000, n_valid=50, n_test=50)}
SEQ2SEQ = {"full": dict(hidden_size=128, embedding_size=32, batch_size=64, eval_interval=250, max_steps=3000),
           "quick": dict(hidden_size=32, embedding_size=16, batch_size=32, eval_interval=100, max_steps=QUICK_STEPS)}
GPT = {"full": dict(n_layer=2, n_head=4, n_embd=64, batch_size=32, learning_rate=6e-3, eval_interval=500,
                    max_steps=12000),
       "quick": dict(n_layer=1, n_head=2, n_embd=32, batch_size=32, eval_interval=100, max_steps=QUICK_STEPS)}

# (key in the results, label in the table, format)
ROWS = [("parameters", "parameters", "{:,}"),
        ("train_seconds", "training time (s)", "{:.1f}"),
        ("steps", "training steps", "{:,}"),
        ("tokens_per_second", "training tokens/s", "{:,.0f}"),
        ("valid_loss", "valid loss (per target token)", "{:.4f}"),
        ("test_exact_match", "test exact match, greedy", "{:.1%}"),
        ("test_exact_match_beam", "test exact match, beam 4", "{:.1%}"),
        ("decode_sequences_per_second", "greedy decoding (sequences/s)", "{:,.0f}"),
        ("decode_tokens_per_second", "greedy decoding (tokens/s)", "{:,.0f}")]
COLUMNS = (("seq2seq", "Seq2Seq GRU+Bahdanau"), ("gpt", "GPT"))


def _seq2seq_decoding_speed(model, pairs, max_length):
    """Greedy decoding speed of a Seq2Seq over ``pairs``, measured as the GPT's is (batches of 250, at most
    the longest target + eos generated), after an untimed batch (the kernels' first calls)."""
    translate_pairs(model, pairs[:250], max_length=2)
    start = time.perf_counter()
    outputs = translate_pairs(model, pairs, max_length=max_length)
    seconds = time.perf_counter() - start
    generated = sum(len(text) + 1 for text in outputs)  # characters + eos
    return {"decode_seconds": round(seconds, 3), "decode_sequences_per_second": round(len(pairs) / seconds, 1),
            "decode_tokens_per_second": round(generated / seconds, 1)}


def format_table(results):
    """The comparison as a markdown table: one row per measure, one column per model."""
    lines = ["| | " + " | ".join(title for _, title in COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for key, label, fmt in ROWS:
        cells = [fmt.format(results[name][key]) if results[name].get(key) is not None else "-"
                 for name, _ in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _loss_curves(histories):
    curves = {}
    for name, title in COLUMNS:
        history = histories[name]
        curves[f"{title} valid"] = ([h["seconds"] for h in history], [h["valid_loss"] for h in history])
        trained = [h for h in history if h["train_loss"] is not None]
        if trained:
            curves[f"{title} train"] = ([h["seconds"] for h in trained], [h["train_loss"] for h in trained])
    return curves


def _sample_sources(test, metrics):
    """SAMPLES test sources to show: first those some model got wrong (at most SAMPLES - 2), then the
    first test sources."""
    wrong = [error["source"] for m in metrics for error in m["test_errors"]]
    picked = list(dict.fromkeys(wrong))[:SAMPLES - 2]
    for source, _ in test:
        if len(picked) == SAMPLES:
            break
        if source not in picked:
            picked.append(source)
    return picked


def _format_samples(samples):
    rows = [["source", "Seq2Seq", "GPT", "reference"]]
    rows += [[repr(s["source"])] + [s[k] + (" x" if s[k] != s["reference"] else "") for k in ("seq2seq", "gpt")]
             + [s["reference"]] for s in samples]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _prepare_out(out, overwrite):
    """Refuse to mix this run's files with others': `out` must be new or empty, or an earlier demo's with overwrite."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} is an existing file; expected a directory (or a new path)")
    if os.path.isdir(out) and os.listdir(out):
        if not os.path.isfile(os.path.join(out, "demo.json")):
            raise ValueError(f"--out {out!r} is a non-empty directory that holds no demo; expected a new or "
                             f"empty directory")
        if not overwrite:
            raise FileExistsError(f"--out {out!r} holds an earlier demo; choose another --out, or replace it "
                                  f"with --overwrite")
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _warm_up(size, seed):
    """Two untimed steps of each model, with validation and decoding, so that loading (or, on a first run,
    compiling) the kernels is not counted in the training times."""
    tiny = dict(n_train=2 * SEQ2SEQ[size]["batch_size"], n_valid=4, n_test=4)
    with contextlib.redirect_stdout(io.StringIO()):
        train_seq2seq(TASK, seed=seed, log=None, **{**SEQ2SEQ[size], **tiny, "max_steps": 2, "eval_interval": 1})
        train_pairs_gpt(TASK, seed=seed, log=None, **{**GPT[size], **tiny, "max_steps": 2, "eval_interval": 1})


def run_demo(out="demo-out", quick=False, seed=0, max_time=None, overwrite=False, log=print):
    """Train both models on the dates task, compare them and write the report into ``out``.

    Each model trains for its fixed number of steps; max_time optionally caps each one's training seconds.
    Returns the summary that is also written to ``out/demo.json``."""
    size = "quick" if quick else "full"
    if max_time is not None and not max_time > 0:
        raise ValueError(f"--max-time must be a positive number of seconds, got {max_time}")
    _prepare_out(out, overwrite)
    data = load_task(TASK, seed=seed, **SPLITS[size])
    # bos + the longest target + eos: decoding never needs more, for either model
    max_length = max(len(target) for _, target in data.train + data.valid + data.test) + 2
    cap = f", at most {max_time:g} s each" if max_time else ""
    log(f"minigen demo: Seq2Seq against GPT on the {TASK} task, e.g. {data.test[0][0]!r} -> "
        f"{data.test[0][1]!r}; {SEQ2SEQ[size]['max_steps']:,} and {GPT[size]['max_steps']:,} training steps{cap}, "
        f"backend {kernels.get_backend()}")
    log("loading the kernels (compiling them on a first run) ...")
    _warm_up(size, seed)

    log("\n[1/2] Seq2Seq: bidirectional GRU encoder, GRU decoder with Bahdanau attention")
    seq2seq, s2s_metrics = train_seq2seq(TASK, max_time=max_time or 0, seed=seed, log=log, max_length=max_length,
                                         **SPLITS[size], **SEQ2SEQ[size])
    s2s_metrics.update(_seq2seq_decoding_speed(seq2seq, data.test, max_length))
    seq2seq.save_pretrained(os.path.join(out, "seq2seq"))

    log("\n[2/2] GPT: decoder-only transformer, prompt 'source<sep>' -> completion 'target<eos>'")
    gpt, gpt_metrics = train_pairs_gpt(TASK, out=os.path.join(out, "gpt"), max_time=max_time, seed=seed, log=log,
                                       **SPLITS[size], **GPT[size])

    results = {"seq2seq": s2s_metrics, "gpt": gpt_metrics}
    table = format_table(results)
    log(f"\nResults on {len(data.test)} test dates ({kernels.get_backend()} backend):\n{table}")

    sources = _sample_sources(data.test, [s2s_metrics, gpt_metrics])
    gpt_outputs, _ = complete(gpt, pairs_tokenizer(data), sources, max_new_tokens=max_length - 1)
    references = dict(data.test)
    samples = [{"source": s, "seq2seq": o, "gpt": g, "reference": references[s]}
               for s, o, g in zip(sources, seq2seq.translate(sources, max_length=max_length), gpt_outputs)]
    log("\nSamples (x marks a wrong output):\n" + _format_samples(samples))

    files = [plots.save_loss_curves(_loss_curves({k: v["history"] for k, v in results.items()}),
                                    os.path.join(out, "loss.png"), title=f"{TASK}: loss per target token",
                                    xlabel="training time (s)", log_y=True),
             save_attention_map(seq2seq, ATTENTION_EXAMPLE, os.path.join(out, "attention.png"), max_length)]
    summary = {"task": TASK, "seed": seed, "quick": quick, "max_time": max_time, "backend": kernels.get_backend(),
               "steps": {"seq2seq": SEQ2SEQ[size]["max_steps"], "gpt": GPT[size]["max_steps"]},
               "test_examples": len(data.test),
               "table": {name: {key: results[name].get(key) for key, _, _ in ROWS} for name, _ in COLUMNS},
               "markdown": table, "samples": samples, "files": [os.path.basename(f) for f in files]}
    with open(os.path.join(out, "demo.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    log(f"\nWrote {', '.join(summary['files'] + ['demo.json'])} and the models seq2seq/, gpt/ to {out}/")
    seq2seq_dir, gpt_dir = shlex.quote(os.path.join(out, "seq2seq")), shlex.quote(os.path.join(out, "gpt"))
    log(f"Try:  minigen translate --checkpoint {seq2seq_dir} --show-attention \"March 3, 2021\"\n"
        f"      minigen generate --checkpoint {gpt_dir} --prompt \"March 3, 2021<sep>\" --max-new-tokens 11")
    return summary


def _run(args):
    run_demo(out=args.out, quick=args.quick, seed=args.seed, max_time=args.max_time, overwrite=args.overwrite)
    return 0


def register(sub, train_sub):
    """Add `minigen demo` to the command line."""
    p = sub.add_parser("demo", help="compare Seq2Seq and GPT on the dates task (a few minutes)",
                       description="Train a GRU + Bahdanau Seq2Seq and a small GPT on the dates task, print a "
                                   "comparison table and samples, and write plots and demo.json.")
    p.add_argument("--out", default="demo-out", help="output directory, new or empty")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo's output in --out")
    p.add_argument("--quick", action="store_true", help="a run of a few seconds with small models, far from converged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-time", type=float, default=None,
                   help="cap on each model's training seconds (default: none, the fixed steps run to the end)")
    p.set_defaults(func=_run)
