"""Training a Seq2Seq model on a built-in task, and the `train seq2seq` / `translate` commands.

The loop (loop.fit): length-bucketed padded batches, teacher forcing (optionally decaying: scheduled
sampling), cross-entropy that skips padding, AdamW with nanoGPT's warm-up then cosine decay (to min_lr at
the end of the budget), gradient clipping, and a budget of steps and/or seconds. At step 0 and every
`eval_interval` steps the model is validated the way it will be used: free-running greedy decoding, scored
by exact match on the validation set. The best model so far is kept
(`OUT/best`, an atomic checkpoint directory that `Seq2Seq.from_pretrained` and `minigen translate` load).
At the end the best model is tested (greedy and beam search) and `OUT/metrics.json`, `OUT/loss.png` and
`OUT/attention.png` (an attention map of one test example; text files without matplotlib) are written.
Throughput (`tokens_per_second`) counts source and target tokens (eos included) over the whole loop,
periodic validation included.

    model, metrics = train_seq2seq("dates", out="runs/dates", max_time=300)
"""
import shlex
from dataclasses import asdict, dataclass, fields

import numpy as np

from .. import optim, random
from ..optim.lr_scheduler import get_lr_warmup_cosine
from ..data import Seq2SeqBatches, character_error_rate, exact_match, load_task, token_accuracy
from ..io.checkpoint import load_checkpoint
from ..models.seq2seq import ATTENTIONS, CELLS, Seq2Seq, Seq2SeqConfig
from .loop import fit
from .step import evaluating
from .. import plots
from .progress import Progress
from .run import StopSignals, add_run_arguments, train_in_run_directory, load_model_dir, run_record, write_metrics


@dataclass
class Seq2SeqTrainConfig:
    """Options of a training run. The defaults are the demo's model and step count on `dates` (its
    90-second runs reached 100% test exact match in about 3,400 steps). Training stops at `max_steps` or after
    `max_time` seconds, whichever comes first (0 disables a limit; at least one must be set). The learning
    rate warms up over `warmup_steps`, then decays to `min_lr` over the steps the budget allows (with a
    time budget, those projected at the pace so far); teacher forcing runs over the fraction of the budget used."""
    task: str = "dates"
    out: str | None = None
    max_time: float = 0.0
    max_steps: int = 3000
    seed: int = 0
    n_train: int = 20000
    n_valid: int = 500
    n_test: int = 1000
    embedding_size: int = 32
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "gru"
    bidirectional: bool = True
    attention: str = "bahdanau"
    dropout: float = 0.0
    batch_size: int = 64
    learning_rate: float = 3e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    teacher_forcing: float = 1.0
    teacher_forcing_final: float | None = None
    eval_interval: int = 250
    num_beams: int = 4
    max_length: int = 64
    resume: bool = False
    overwrite: bool = False

    def check(self):
        for name in ("n_train", "n_valid", "n_test", "batch_size", "eval_interval", "num_beams", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0 or self.max_time < 0 or (self.max_steps == 0 and self.max_time == 0):
            raise ValueError(f"set a budget: max_steps >= 1 and/or max_time > 0 seconds, got max_steps="
                             f"{self.max_steps}, max_time={self.max_time}")
        if not self.learning_rate > 0 or not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"need learning_rate > 0 and 0 <= min_lr <= learning_rate, got {self.learning_rate}, "
                             f"{self.min_lr}")
        for name in ("teacher_forcing", "teacher_forcing_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"warmup_steps, weight_decay and grad_clip must be >= 0, got {self.warmup_steps}, "
                             f"{self.weight_decay}, {self.grad_clip}")


def teacher_forcing_ratio(fraction, cfg):
    """Scheduled sampling: the ratio moves linearly from teacher_forcing to teacher_forcing_final."""
    final = cfg.teacher_forcing if cfg.teacher_forcing_final is None else cfg.teacher_forcing_final
    return cfg.teacher_forcing + (final - cfg.teacher_forcing) * min(fraction, 1.0)


# ----- evaluation ----------------------------------------------------------------------------------
def _batches_by_length(pairs, size):
    """Index batches of `pairs` with similar source lengths (less padding), covering every pair once."""
    order = np.argsort([len(source) for source, _ in pairs], kind="stable")
    return [order[i:i + size] for i in range(0, len(order), size)]


def translate_pairs(model, pairs, num_beams=1, max_length=64, batch_size=250):
    """The model's translation of every source in `pairs` (greedy with num_beams=1), in order."""
    out = [None] * len(pairs)
    for index in _batches_by_length(pairs, batch_size):
        texts = model.translate([pairs[i][0] for i in index], num_beams=num_beams, max_length=max_length)
        for i, text in zip(index, texts):
            out[i] = text
    return out


def teacher_forced_loss(model, pairs, batch_size=250):
    """Mean per-token cross-entropy of the targets (eos included) under teacher forcing, in eval mode."""
    total, count = 0.0, 0
    batches = Seq2SeqBatches(pairs, model.src_vocab, model.tgt_vocab, batch_size=batch_size, shuffle=False)
    with evaluating(model):
        for batch in batches:
            logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"])
            tokens = int((batch["tgt_out"] != -100).sum())
            total += model.loss(logits, batch["tgt_out"]).item() * tokens
            count += tokens
    return total / count


def evaluate(model, pairs, num_beams=1, max_length=64):
    """Exact match, token accuracy and character error rate of decoded `pairs` against their targets."""
    preds = translate_pairs(model, pairs, num_beams, max_length)
    refs = [target for _, target in pairs]
    return {"exact_match": exact_match(preds, refs), "token_accuracy": token_accuracy(preds, refs),
            "cer": character_error_rate(preds, refs), "predictions": preds}


def attention_map(model, source, max_length=64, unk="error"):
    """(weights (T, S), source tokens, output tokens) of greedy decoding of one source string."""
    ids, mask = model.encode_sources([source], unk=unk)
    out = model.generate(ids, attention_mask=mask, max_length=max_length, output_attentions=True)
    weights = np.stack([a[0] for a in out.attentions])
    return (weights, [model.src_vocab.id_to_token(i) for i in ids[0]],
            [model.tgt_vocab.id_to_token(i) for i in out.sequences[0, 1:]])


def save_attention_map(model, source, path, max_length=64):
    """Write the attention map of one source (PNG, or text without matplotlib); return the path written."""
    weights, src_tokens, tgt_tokens = attention_map(model, source, max_length)
    return plots.save_attention(weights, src_tokens, tgt_tokens, path, title=f"{source!r}")


# ----- training ------------------------------------------------------------------------------------
def train_seq2seq(task="dates", out=None, max_time=0.0, seed=0, log=print, **options):
    """Train a Seq2Seq model on a built-in task; returns (model, metrics).

    options are the fields of Seq2SeqTrainConfig (hidden_size=..., attention='none', max_steps=...).
    Messages go to `log` (None silences them). With `out`, the best/ and last/ checkpoints, metrics.json, loss.png and attention.png are written
    there; an `out` that already holds a run needs resume=True or overwrite=True, and SIGINT / SIGTERM
    save last/ after the current step and raise TrainingInterrupted."""
    known = {f.name for f in fields(Seq2SeqTrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"train_seq2seq: unknown option(s) {unknown}; expected some of {sorted(known)}")
    cfg = Seq2SeqTrainConfig(task=task, out=out, max_time=max_time, seed=seed, **options)
    cfg.check()
    log = log or (lambda *args: None)
    if cfg.out is None:  # nothing to save: a signal stops the process as usual
        return _train(cfg, None, StopSignals(), log)
    return train_in_run_directory(cfg.out, cfg.resume, cfg.overwrite, lambda run, stop: _train(cfg, run, stop, log))


def _train(cfg, run, stop, log):
    random.manual_seed(cfg.seed)
    data = load_task(cfg.task, n_train=cfg.n_train, n_valid=cfg.n_valid, n_test=cfg.n_test, seed=cfg.seed)
    model = Seq2Seq(Seq2SeqConfig(len(data.src_vocab), len(data.tgt_vocab), embedding_size=cfg.embedding_size,
                                  hidden_size=cfg.hidden_size, num_layers=cfg.num_layers, cell=cfg.cell,
                                  bidirectional=cfg.bidirectional, attention=cfg.attention, dropout=cfg.dropout,
                                  pad_id=data.tgt_vocab.pad_id, bos_id=data.tgt_vocab.bos_id,
                                  eos_id=data.tgt_vocab.eos_id), data.src_vocab, data.tgt_vocab)
    log(f"{cfg.task}: {len(data.train):,} train / {len(data.valid):,} valid / {len(data.test):,} test pairs; "
        f"Seq2Seq ({cfg.cell}, attention={cfg.attention}) with {model.num_parameters():,} parameters")
    params = list(model.parameters())
    optimizer = optim.AdamW(optim.adamw_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    batches = Seq2SeqBatches(data.train, data.src_vocab, data.tgt_vocab, batch_size=cfg.batch_size,
                             shuffle=True, seed=cfg.seed, bucket=True)
    # t: the state a resumed run continues from; epoch_rng is the batch order's generator as the epoch began
    t = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "history": [], "best": None, "recent_losses": [],
         "train_seconds": 0.0, "epoch_rng": batches.rng.bit_generator.state}
    best_state = None
    last = _resume_checkpoint(run) if cfg.resume else None
    if last is not None:
        model.load_state_dict(last.tensors)
        optim.optimizer_state_from_arrays(optimizer, last.optimizer_tensors, last.manifest["optimizer"])
        random.set_rng_state(last.manifest["global_rng"])
        t.update({key: last.manifest[key] for key in t})
        batches.rng.bit_generator.state = t["epoch_rng"]
        if t["best"] is not None:
            best_state = Seq2Seq.from_pretrained(run.path("best")).state_dict()
        log(f"resumed from {last.path} at step {t['step']}")
    progress = Progress(total_steps=cfg.max_steps or None, max_time=cfg.max_time or None, start_step=t["step"],
                        start_seconds=t["train_seconds"])
    log = progress.wrap(log)

    def save_last(step):
        t["train_seconds"] = progress.elapsed
        arrays, meta = optim.optimizer_state_to_arrays(optimizer)
        manifest = {**t, "global_rng": random.get_rng_state(), "optimizer": meta, "train_config": asdict(cfg),
                    "run": run_record(cfg.seed)}
        model.save_pretrained(run.path("last"), step=step, extra_manifest=manifest, optimizer_tensors=arrays)
        run.committed()
        return run.path("last")

    def validate(step):
        nonlocal best_state
        best, recent = t["best"], t["recent_losses"]
        if t["history"] and t["history"][-1]["step"] == step:  # a resumed run evaluated this step before
            return
        result = {"step": step, "seconds": round(progress.elapsed, 1),
                  "train_loss": float(np.mean(recent)) if recent else None,
                  "valid_loss": teacher_forced_loss(model, data.valid),
                  "valid_exact_match": evaluate(model, data.valid, 1, cfg.max_length)["exact_match"]}
        t["history"].append(result)
        recent.clear()
        log(f"step {step}: valid loss {result['valid_loss']:.4f}, valid exact match "
            f"{100 * result['valid_exact_match']:.2f}%")
        if best is None or (result["valid_exact_match"], -result["valid_loss"]) > \
                (best["valid_exact_match"], -best["valid_loss"]):
            t["best"] = result
            best_state = model.state_dict()
            if run is not None:
                model.save_pretrained(run.path("best"), step=step, extra_manifest={"valid": result})
        if run is not None:
            save_last(step)

    def epochs():
        """Batches, epoch after epoch; a resumed run re-enters its unfinished epoch and skips what it fed."""
        while True:
            if t["batch_in_epoch"] == 0:
                t["epoch"] += 1
                t["epoch_rng"] = batches.rng.bit_generator.state
            for position, batch in enumerate(batches, 1):
                if position > t["batch_in_epoch"]:
                    t["batch_in_epoch"] = position
                    yield batch
            t["batch_in_epoch"] = 0

    stream = epochs()

    def batch_loss(step):
        batch = next(stream)
        ratio = teacher_forcing_ratio(progress.fraction_done(step), cfg)
        logits = model(batch["src"], batch["src_lengths"], batch["tgt_in"], teacher_forcing_ratio=ratio)
        tokens = int(batch["src_lengths"].sum() + batch["tgt_lengths"].sum())
        return model.loss(logits, batch["tgt_out"]), tokens, ({"tf": ratio} if ratio < 1.0 else {})

    def schedule(step):
        decay_steps = max(cfg.warmup_steps, progress.planned_steps(step))
        return get_lr_warmup_cosine(step, cfg.learning_rate, cfg.warmup_steps, decay_steps, cfg.min_lr)

    def on_step(step, loss_value):
        t["step"] = step
        t["recent_losses"].append(loss_value)

    fit(optimizer, params, progress, batch_loss, schedule, validate, cfg.eval_interval, step=t["step"],
        grad_clip=cfg.grad_clip, advice="lower --learning-rate", on_step=on_step, stop=stop, save_last=save_last)
    train_seconds = progress.elapsed
    model.load_state_dict(best_state)
    metrics = _test(model, data, cfg, t, train_seconds, progress.tokens_per_second())
    log(f"test exact match {100 * metrics['test_exact_match']:.2f}% greedy, "
        f"{100 * metrics['test_exact_match_beam']:.2f}% beam {cfg.num_beams}; token accuracy "
        f"{100 * metrics['test_token_accuracy']:.2f}%, CER {metrics['test_cer']:.4f}")
    if run is not None:
        _write_reports(model, data, cfg, metrics, run, log)
    return model, metrics


def _resume_checkpoint(run):
    """The last/ checkpoint of the run being resumed, or None when it has none (a new run then starts)."""
    try:
        return load_checkpoint(run.path("last"))
    except FileNotFoundError:
        return None


def _test(model, data, cfg, t, train_seconds, tokens_per_second):
    greedy = evaluate(model, data.test, 1, cfg.max_length)
    beam = evaluate(model, data.test, cfg.num_beams, cfg.max_length)
    best, record = t["best"], run_record(cfg.seed)
    return {"task": cfg.task, "steps": t["step"], "epochs": t["epoch"], "best_step": best["step"],
            "train_seconds": round(train_seconds, 2), "tokens_per_second": round(tokens_per_second, 1),
            "valid_loss": best["valid_loss"], "valid_exact_match": best["valid_exact_match"],
            "test_exact_match": greedy["exact_match"], "test_exact_match_beam": beam["exact_match"],
            "num_beams": cfg.num_beams, "test_token_accuracy": greedy["token_accuracy"],
            "test_cer": greedy["cer"], "attention": cfg.attention, "cell": cfg.cell,
            "parameters": model.num_parameters(), "backend": record["backend"], "run": record,
            "config": asdict(cfg), "history": t["history"],
            "test_errors": [{"source": source, "target": target, "prediction": prediction}
                            for (source, target), prediction in zip(data.test, greedy["predictions"])
                            if prediction != target][:20]}


def _write_reports(model, data, cfg, metrics, run, log):
    write_metrics(metrics, run.path("metrics.json"))
    history = metrics["history"]
    curves = {"valid": ([h["step"] for h in history], [h["valid_loss"] for h in history])}
    trained = [h for h in history if h["train_loss"] is not None]
    if trained:
        curves["train"] = ([h["step"] for h in trained], [h["train_loss"] for h in trained])
    plots.save_loss_curves(curves, run.path("loss.png"), title=f"Seq2Seq on {cfg.task}", log_y=True)
    if cfg.attention != "none":
        path = save_attention_map(model, data.test[0][0], run.path("attention.png"), cfg.max_length)
        log(f"attention map of {data.test[0][0]!r} written to {path}")
    log(f"metrics written to {run.path('metrics.json')}")
    log(f"saved {run.path('best')} (valid exact match {100 * metrics['valid_exact_match']:.2f}%); try: "
        f"minigen translate --checkpoint {shlex.quote(run.out)} {shlex.quote(data.test[0][0])}")


# ----- command line --------------------------------------------------------------------------------
def _add_train_args(p):
    import argparse
    from ..data import TASKS
    d = Seq2SeqTrainConfig()
    p.add_argument("--task", choices=TASKS, default=d.task)
    p.add_argument("--out", required=True, help="output directory: checkpoints best/ and last/, metrics.json, plots")
    p.add_argument("--cell", choices=sorted(CELLS), default=d.cell)
    p.add_argument("--attention", choices=ATTENTIONS, default=d.attention)
    p.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=d.bidirectional)
    for name in ("max_steps", "seed", "n_train", "n_valid", "n_test", "embedding_size", "hidden_size", "num_layers",
                 "batch_size", "warmup_steps", "eval_interval", "num_beams", "max_length"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("max_time", "dropout", "learning_rate", "min_lr", "weight_decay", "grad_clip", "teacher_forcing"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--teacher-forcing-final", type=float, default=None,
                   help="scheduled sampling: the teacher forcing ratio reached at the end of training")
    add_run_arguments(p)


def _run_train(args):
    options = {k: v for k, v in vars(args).items() if k in Seq2SeqTrainConfig.__dataclass_fields__}
    train_seq2seq(**options)
    return 0


def _run_translate(args):
    model = Seq2Seq.from_pretrained(load_model_dir(args.checkpoint))
    kwargs = dict(num_beams=args.num_beams, num_return_sequences=args.num_return_sequences,
                  max_length=args.max_length, min_length=args.min_length, unk=args.unk)
    if args.do_sample:
        kwargs.update(do_sample=True, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                      seed=args.seed)
    results = model.translate(args.sources, **kwargs)
    for source, result in zip(args.sources, results):
        if args.num_return_sequences == 1:
            print(result)
        else:
            print(f"{source}:")
            for rank, text in enumerate(result, 1):
                print(f"  {rank}. {text}")
        if args.show_attention or args.attention_png:
            _show_attention(model, source, args)
    return 0


def _show_attention(model, source, args):
    if model.attention is None:
        print("(this model has no attention: it was trained with --attention none)")
        return
    weights, src_tokens, tgt_tokens = attention_map(model, source, args.max_length, args.unk)
    if args.show_attention:
        print(plots.attention_table(weights, src_tokens, tgt_tokens))
    if args.attention_png:
        print(f"attention map written to {plots.save_attention(weights, src_tokens, tgt_tokens, args.attention_png)}")


def register(sub, train_sub):
    """Add `train seq2seq` and `translate` to the minigen command."""
    p = train_sub.add_parser("seq2seq", help="train a Seq2Seq model on a built-in task (dates, reverse, ...)")
    _add_train_args(p)
    p.set_defaults(func=_run_train)
    t = sub.add_parser("translate", help="decode source strings with a Seq2Seq checkpoint",
                       description="Unknown source characters raise an error naming them (--unk error, the "
                                   "default) or are mapped to <unk> (--unk replace).")
    t.add_argument("sources", nargs="+", help="source strings, e.g. 'the 3rd of March, 2021'")
    t.add_argument("--checkpoint", required=True, help="model directory (or a training output directory)")
    t.add_argument("--num-beams", type=int, default=1)
    t.add_argument("--num-return-sequences", type=int, default=1)
    t.add_argument("--max-length", type=int, default=64, help="the longest output, in tokens with bos and eos")
    t.add_argument("--min-length", type=int, default=0, help="no eos before this length, bos included")
    t.add_argument("--do-sample", action="store_true")
    t.add_argument("--temperature", type=float, default=1.0)
    t.add_argument("--top-k", type=int, default=50)
    t.add_argument("--top-p", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--unk", choices=["error", "replace"], default="error",
                   help="unknown source characters: raise an error (default) or map them to <unk>")
    t.add_argument("--show-attention", action="store_true", help="print the attention table of each source")
    t.add_argument("--attention-png", metavar="PATH",
                   help="write the attention heat map there (PNG; a text table without matplotlib)")
    t.set_defaults(func=_run_translate)
