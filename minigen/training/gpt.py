"""Training a GPT on a text file, nanoGPT style, and the `train gpt` / `generate` commands.

The loop (loop.fit): sample random blocks from the first 90% of the tokens, AdamW with warm-up + cosine
decay, gradient clipping, evaluation every `eval_interval` steps on both splits. Two checkpoints are kept in
the output directory, each written atomically: `last/` (everything needed to resume bit-identically:
weights, optimizer moments, step, RNG states) and `best/` (the lowest validation loss so far). Both are
Hugging Face GPT-2 directories, so `GPT.from_pretrained(out/'best')` loads either. SIGINT and SIGTERM
save `last/` after the current step (see run.py); `metrics.json` and `loss.png` are written at the end.
"""
import argparse
import math
import os
import shlex
from dataclasses import dataclass, asdict, field

import numpy as np

from .. import optim, random
from ..data.batching import random_text_batch, split_train_val
from ..io import gpt2
from ..io.checkpoint import load_checkpoint, save_checkpoint
from .. import plots
from ..models.gpt import GPT, GPTConfig
from ..optim import adamw_param_groups
from ..models.gpt_tasks import FIM_TOKENS, fim_batch, fim_sentinel_ids
from ..optim.lr_scheduler import get_lr_warmup_cosine
from .loop import fit
from .progress import Progress
from .step import evaluating
from .run import add_run_arguments, train_in_run_directory, jsonable, load_model_dir, run_record, write_metrics


@dataclass
class GPTTrainConfig:
    """Options of a training run, named as nanoGPT's so its recipes carry over."""
    text: str = ""
    out: str = "out-gpt"
    tokenizer: str = "char"
    bpe_vocab_size: int = 1024
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    dropout: float = 0.0
    bias: bool = False
    max_iters: int = 2000
    learning_rate: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 200
    seed: int = 1337
    max_time: float = 0.0
    init_from: str = ""
    resume: bool = False
    overwrite: bool = False
    freeze: list = field(default_factory=list)
    dtype: str = "float32"
    fim_rate: float = 0.0

    def check(self):
        for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_iters < 0 or self.eval_interval < 1:
            raise ValueError(f"--max-iters must be >= 0 and --eval-interval >= 1, "
                             f"got {self.max_iters}, {self.eval_interval}")
        if self.learning_rate <= 0 or self.min_lr < 0:
            raise ValueError(f"--learning-rate must be > 0 and --min-lr >= 0, got {self.learning_rate}, {self.min_lr}")
        if self.lr_decay_iters < self.warmup_iters:
            raise ValueError(f"--lr-decay-iters must be >= --warmup-iters, "
                             f"got {self.lr_decay_iters} < {self.warmup_iters}")
        if not 0.0 <= self.fim_rate <= 1.0:
            raise ValueError(f"--fim-rate must be in [0, 1], got {self.fim_rate}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"--tokenizer must be 'char' or 'bpe', got {self.tokenizer!r}")


def build_tokenizer(kind, text, bpe_vocab_size, fim=False):
    """A char or byte-level BPE tokenizer trained on `text`; with `fim`, the fill-in-the-middle sentinels
    are added as special tokens."""
    from ..tokenizers import ByteLevelBPETokenizer, CharTokenizer
    specials = list(FIM_TOKENS) if fim else []
    if kind == "char":
        return CharTokenizer.from_text(text, special_tokens=specials)
    return ByteLevelBPETokenizer.train([text], vocab_size=bpe_vocab_size, special_tokens=["<|endoftext|>"] + specials)


def read_text(path):
    if not path:
        raise ValueError("--text is required: a UTF-8 text file to train on")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--text: no such file {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"--text {path!r} is not UTF-8 text (byte {e.start}: {e.reason}); "
                         f"expected a UTF-8 text file") from None
    if not text.strip():
        raise ValueError(f"--text: {path!r} is empty")
    return text


def tokenizer_files(tokenizer):
    """The tokenizer's files as {name: bytes}, to store inside checkpoints."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        out = {}
        for name in os.listdir(tmp):
            with open(os.path.join(tmp, name), "rb") as f:
                out[name] = f.read()
        return out


def estimate_loss(model, splits, cfg, step):
    """Mean loss over `eval_iters` batches of each split, in eval mode (the model's mode is restored);
    batches drawn from a seed tied to the step, so that evaluation does not disturb the training RNG
    (and resumed runs evaluate identically)."""
    out = {}
    with evaluating(model):
        for name, data in splits.items():
            rng = np.random.default_rng([cfg.seed, step, len(name)])
            losses = [model(*random_text_batch(data, cfg.block_size, cfg.batch_size, rng))[1].item()
                      for _ in range(cfg.eval_iters)]
            out[name] = float(np.mean(losses))
    return out


def freeze_parameters(model, freeze):
    """Freeze parts of a model for fine-tuning: 'embeddings' and/or 'blocks:N' (the lowest N blocks)."""
    for item in freeze:
        if item == "embeddings":
            model.transformer.wte.weight.requires_grad = False
            model.transformer.wpe.weight.requires_grad = False
        elif item.startswith("blocks:") and item[7:].isdigit():
            for block in list(model.transformer.h)[:int(item[7:])]:
                block.requires_grad_(False)
        else:
            raise ValueError(f"--freeze: expected 'embeddings' or 'blocks:N', got {item!r}")


def _save(path, model, optimizer, tokenizer_blobs, cfg, step, best_val, rng, history):
    arrays, meta = optim.optimizer_state_to_arrays(optimizer)
    manifest = {"step": step, "best_val_loss": best_val, "train_config": asdict(cfg), "optimizer": meta,
                "batch_rng": rng.bit_generator.state, "global_rng": random.get_rng_state(),
                "run": run_record(cfg.seed), **history}
    save_checkpoint(path, tensors=gpt2.state_dict_to_hf(model.state_dict(), model.config.tie_word_embeddings,
                                                        model.config.bias),
                    config=gpt2.config_to_hf(model.config.to_dict()), manifest=jsonable(manifest),
                    optimizer_tensors=arrays, extra_files=tokenizer_blobs)


def _resume_checkpoint(last_dir):
    """The checkpoint to resume from: last/ (or the copy a save killed mid-swap left beside it), else None."""
    try:
        return load_checkpoint(last_dir)
    except FileNotFoundError:
        return None


def _model_from_checkpoint(ckpt):
    config = GPTConfig(**gpt2.config_from_hf(ckpt.config, os.path.join(ckpt.path, "config.json")))
    model = GPT(config)
    model.load_state_dict(gpt2.state_dict_from_hf(ckpt.tensors, config.bias))
    return model


def _set_dropout(model, p):
    """Override the dropout of a loaded model (fine-tuning often wants another rate than pre-training)."""
    model.config.dropout = p
    for module in model.modules():
        if isinstance(getattr(module, "dropout", None), float):
            module.dropout = p


def train_gpt(cfg, log=print):
    """Run a training job described by a GPTTrainConfig; returns (model, metrics dict).

    An `out` that already holds a run needs `resume` or `overwrite` (FileExistsError otherwise).
    Raises FloatingPointError naming the step when the loss stops being finite (last/ then still holds
    the last good checkpoint), and TrainingInterrupted after saving last/ on SIGINT or SIGTERM."""
    cfg.check()
    if cfg.init_from and not os.path.isdir(cfg.init_from):
        raise FileNotFoundError(f"--init-from: no such directory {cfg.init_from!r} (expected a model directory "
                                f"or a training output directory)")
    # before the (possibly slow) model build, not at the first checkpoint save
    return train_in_run_directory(cfg.out, cfg.resume, cfg.overwrite, lambda run, stop: _train(cfg, run, stop, log))


def _train(cfg, run, stop, log):
    from ..tokenizers import load_tokenizer
    last_dir = os.path.join(run.out, "last")  # where it is once the run is in place, for messages
    random.manual_seed(cfg.seed)
    text = read_text(cfg.text)
    ckpt = _resume_checkpoint(run.path("last")) if cfg.resume else None
    if ckpt is not None:
        tokenizer, model = load_tokenizer(ckpt.path), _model_from_checkpoint(ckpt)
    elif cfg.init_from:
        source = load_model_dir(cfg.init_from)
        tokenizer, model = load_tokenizer(source), GPT.from_pretrained(source)
        _set_dropout(model, cfg.dropout)
    else:
        tokenizer = build_tokenizer(cfg.tokenizer, text, cfg.bpe_vocab_size, cfg.fim_rate > 0)
        model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                              n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias))
    if cfg.block_size > model.config.block_size:
        raise ValueError(f"--block-size {cfg.block_size} exceeds the model's block_size {model.config.block_size}")
    model.to(np.dtype(cfg.dtype)).train()
    freeze_parameters(model, cfg.freeze)
    fim_ids = fim_sentinel_ids(tokenizer) if cfg.fim_rate > 0 else None
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    train_ids, val_ids = split_train_val(ids, 0.1)
    for name, part in (("training", train_ids), ("validation", val_ids)):
        if len(part) <= cfg.block_size:
            raise ValueError(f"--text: the {name} split has {len(part)} tokens, not more than --block-size "
                             f"{cfg.block_size}; use a longer text or a smaller block size")
    optimizer = optim.AdamW(adamw_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate,
                            betas=(cfg.beta1, cfg.beta2))
    rng = np.random.default_rng(cfg.seed)
    step, best_val = 0, math.inf
    history = {"loss_history": [], "val_history": []}
    if ckpt is not None:
        optim.optimizer_state_from_arrays(optimizer, ckpt.optimizer_tensors, ckpt.manifest["optimizer"])
        step = ckpt.manifest["step"]
        best_val = ckpt.manifest["best_val_loss"] if ckpt.manifest["best_val_loss"] is not None else math.inf
        history = {k: ckpt.manifest.get(k, []) for k in history}
        rng.bit_generator.state = ckpt.manifest["batch_rng"]
        random.set_rng_state(ckpt.manifest["global_rng"])
        log(f"resumed from {ckpt.path} at step {step}")
    blobs = tokenizer_files(tokenizer)
    log(f"GPT with {model.num_parameters():,} parameters; {len(train_ids):,} training tokens, "
        f"{len(val_ids):,} validation tokens; vocabulary {tokenizer.vocab_size}")
    progress = Progress(total_steps=cfg.max_iters, max_time=cfg.max_time or None, start_step=step)
    log = progress.wrap(log)
    splits = {"train": train_ids, "val": val_ids}
    losses = {}
    params = [p for p in model.parameters() if p.requires_grad]
    advice = f"the last good checkpoint in {last_dir} is intact (lower --learning-rate?)"

    def save(name, step):
        _save(run.path(name), model, optimizer, blobs, cfg, step, best_val, rng, history)
        return run.path(name)

    def evaluate(step):
        nonlocal best_val, losses
        losses = estimate_loss(model, splits, cfg, step)
        history["val_history"].append([step, losses["train"], losses["val"]])
        log(f"step {step}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        if not math.isfinite(losses["val"]):
            raise FloatingPointError(f"validation loss became {losses['val']} at step {step}; {advice}")
        if losses["val"] < best_val:
            best_val = losses["val"]
            save("best", step)
        save_last(step)

    def save_last(step):
        path = save("last", step)
        run.committed()
        return path

    def batch_loss(step):
        x, y = random_text_batch(train_ids, cfg.block_size, cfg.batch_size, rng)
        if fim_ids is not None:
            x, y = fim_batch(x, y, fim_ids, rng, cfg.fim_rate)
        return model(x, y)[1], x.size, {}

    def schedule(step):
        return get_lr_warmup_cosine(step, cfg.learning_rate, cfg.warmup_iters, cfg.lr_decay_iters, cfg.min_lr)

    step = fit(optimizer, params, progress, batch_loss, schedule, evaluate, cfg.eval_interval, step=step,
               grad_clip=cfg.grad_clip, advice=advice, on_step=lambda step, loss: history["loss_history"].append(loss),
               stop=stop, save_last=save_last)
    record = run_record(cfg.seed)
    metrics = {"iters": step, "train_seconds": round(progress.elapsed, 2),
               "tokens_per_second": round(progress.tokens_per_second(), 1),
               "train_loss": losses.get("train"), "val_loss": losses.get("val"), "best_val_loss": best_val,
               "parameters": model.num_parameters(), "backend": record["backend"], "run": record,
               "config": asdict(cfg), **history}
    write_metrics(metrics, run.path("metrics.json"))
    _plot_losses(history, run.path("loss.png"))
    prompt = next((line[:20] for line in text.splitlines() if line.strip()), text[:20])
    log(f"saved {run.path('best')} (val loss {best_val:.4f}); try: minigen generate --checkpoint "
        f"{shlex.quote(run.out)} --prompt {shlex.quote(prompt)}")
    return model, metrics


def _plot_losses(history, path):
    losses = history["loss_history"]
    curves = {"train": (list(range(1, len(losses) + 1)), losses)} if losses else {}
    curves["validation"] = ([row[0] for row in history["val_history"]], [row[2] for row in history["val_history"]])
    plots.save_loss_curves(curves, path, title="GPT training", log_y=True)


# ----- command line -------------------------------------------------------------------------------
def _add_train_args(p):
    d = GPTTrainConfig()
    p.add_argument("--text", required=True, help="UTF-8 text file; first 90%% trains, last 10%% validates")
    p.add_argument("--out", required=True,
                   help="output directory: checkpoints best/ and last/, metrics.json, loss.png")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default=d.tokenizer)
    p.add_argument("--bpe-vocab-size", type=int, default=d.bpe_vocab_size)
    for name in ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_iters", "warmup_iters",
                 "lr_decay_iters", "eval_interval", "eval_iters", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("dropout", "learning_rate", "min_lr", "beta1", "beta2", "weight_decay", "grad_clip", "max_time"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--fim-rate", type=float, default=d.fim_rate,
                   help="fraction of training windows rearranged for fill-in-the-middle (PSM); adds the sentinel "
                        "tokens to a new tokenizer")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=d.bias)
    p.add_argument("--init-from", default="", help="fine-tune: start from this checkpoint directory")
    add_run_arguments(p)
    p.add_argument("--freeze", action="append", default=[], help="'embeddings' or 'blocks:N' (repeatable)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=d.dtype)


def _run_train(args):
    fields_ = {k: v for k, v in vars(args).items() if k in GPTTrainConfig.__dataclass_fields__}
    train_gpt(GPTTrainConfig(**fields_))
    return 0


def _run_generate(args):
    from ..tokenizers import load_tokenizer
    directory = load_model_dir(args.checkpoint)
    model = GPT.from_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    ids = np.asarray([tokenizer.encode(args.prompt)], dtype=np.int64)
    if ids.shape[1] == 0:
        raise ValueError("--prompt must not be empty")
    out = model.generate(ids, max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                         min_length=args.min_length, min_new_tokens=args.min_new_tokens,
                         do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_beams=args.num_beams, num_return_sequences=args.num_return_sequences, seed=args.seed,
                         repetition_penalty=args.repetition_penalty, crop_context=args.crop_context)
    for i, row in enumerate(out):
        if len(out) > 1:
            print(f"--- {i + 1} ---")
        print(tokenizer.decode([int(t) for t in row]))
    return 0


def add_generation_args(p):
    """Hugging Face `generate` keywords as command-line options."""
    p.add_argument("--max-length", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=None, help="overrides --max-length")
    p.add_argument("--min-length", type=int, default=0, help="no end-of-text before this length, prompt included")
    p.add_argument("--min-new-tokens", type=int, default=None, help="no end-of-text before this many new tokens")
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--num-beams", type=int, default=1)
    p.add_argument("--num-return-sequences", type=int, default=1)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--crop-context", action=argparse.BooleanOptionalAction, default=True,
                   help="past the model's block_size, condition on the last block_size tokens (as nanoGPT)")


def register(sub, train_sub):
    p = train_sub.add_parser("gpt", help="train or fine-tune a GPT on a text file")
    _add_train_args(p)
    p.set_defaults(func=_run_train)
    g = sub.add_parser("generate", help="generate text with a GPT checkpoint")
    g.add_argument("--checkpoint", required=True, help="model directory (or a training output directory)")
    g.add_argument("--prompt", required=True)
    add_generation_args(g)
    g.set_defaults(func=_run_generate)
