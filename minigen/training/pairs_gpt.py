"""Training a GPT on the (source, target) pairs of a built-in task, as prompt -> completion.

Each pair becomes one sequence ``source <sep> target <eos>`` of characters, with ``<sep>`` and
``<eos>`` special tokens of a CharTokenizer. The loss covers only the completion (the target and
its eos): the prompt's positions get the label -100, as Hugging Face does when fine-tuning on
prompts. Evaluation prompts the model with ``source <sep>`` and decodes with ``model.generate``,
the prompts batched with left padding and an attention mask.

    model, metrics = train_pairs_gpt("dates", max_time=60)
    print(metrics["test_exact_match"])
"""
import io
import os
import time

import numpy as np

from .. import kernels, optim, random
from ..data import IGNORE_INDEX, exact_match, load_task
from ..models.gpt import GPT, GPTConfig
from ..optim import adamw_param_groups
from ..optim.lr_scheduler import get_lr_warmup_cosine
from .loop import fit
from .step import evaluating
from ..tokenizers import CharTokenizer
from .progress import Progress
from .run import write_metrics

SEP_TOKEN, EOS_TOKEN = "<sep>", "<eos>"


def pairs_tokenizer(data):
    """The CharTokenizer of a task: every character either side can hold, then ``<sep>`` and ``<eos>``."""
    return CharTokenizer.from_text(data.src_vocab.chars + data.tgt_vocab.chars,
                                   special_tokens=[SEP_TOKEN, EOS_TOKEN])


def encode_prompt(tokenizer, source):
    """Token ids of the prompt ``source <sep>``."""
    return tokenizer.encode(source) + [tokenizer.token_to_id(SEP_TOKEN)]


def encode_pair(tokenizer, source, target):
    """(ids, prompt_length) of ``source <sep> target <eos>``."""
    prompt = encode_prompt(tokenizer, source)
    return prompt + tokenizer.encode(target) + [tokenizer.token_to_id(EOS_TOKEN)], len(prompt)


def pairs_batch(examples, pad_id):
    """Inputs and labels (B, T) int64 for a list of (ids, prompt_length), right-padded.

    ``x = ids[:-1]`` and ``y = ids[1:]``, with y set to -100 where it predicts a prompt token or padding,
    so the loss is the completion's alone."""
    length = max(len(ids) for ids, _ in examples) - 1
    x = np.full((len(examples), length), pad_id, dtype=np.int64)
    y = np.full((len(examples), length), IGNORE_INDEX, dtype=np.int64)
    for row, (ids, prompt_length) in enumerate(examples):
        n = len(ids) - 1
        x[row, :n] = ids[:-1]
        y[row, prompt_length - 1:n] = ids[prompt_length:]
    return x, y


def left_pad(prompts, pad_id):
    """(input_ids, attention_mask) for a list of prompts, padded on the left as decoder-only generation needs."""
    length = max(len(p) for p in prompts)
    ids = np.full((len(prompts), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), length), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, length - len(prompt):] = prompt
        mask[row, length - len(prompt):] = 1
    return ids, mask


def complete(model, tokenizer, sources, max_new_tokens, num_beams=1, batch_size=250):
    """The model's completion of each source, decoded with ``generate`` (greedy, or beam search with
    ``num_beams`` > 1) and cut at ``<eos>``. Returns (texts in the order of ``sources``, number of
    tokens generated, eos included).

    Sources of similar length share a batch, so that little of it is left padding."""
    if isinstance(sources, str):
        raise TypeError(f"sources must be a list of str, got the single str {sources!r}")
    if len(sources) == 0:
        raise ValueError("sources is empty; expected at least one source string")
    eos = tokenizer.token_to_id(EOS_TOKEN)
    prompts = [encode_prompt(tokenizer, s) for s in sources]
    order = np.argsort([len(p) for p in prompts], kind="stable")
    texts, generated = [None] * len(sources), 0
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        ids, mask = left_pad([prompts[i] for i in index], eos)
        out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, num_beams=num_beams,
                             eos_token_id=eos, pad_token_id=eos)
        for i, row in zip(index, out[:, ids.shape[1]:]):
            ends = np.flatnonzero(row == eos)
            stop = int(ends[0]) if ends.size else len(row)
            generated += min(stop + 1, len(row))
            texts[i] = tokenizer.decode(row[:stop])
    return texts, generated


def length_bucketed_batches(lengths, batch_size, rng, pool_batches=50):
    """One epoch of index batches: shuffled, sorted by length inside pools of ``pool_batches`` batches
    (less padding), then the batch order shuffled. The last incomplete batch is dropped."""
    lengths = np.asarray(lengths)
    order = rng.permutation(len(lengths))
    pool = pool_batches * batch_size
    order = np.concatenate([c[np.argsort(lengths[c], kind="stable")]
                            for c in (order[i:i + pool] for i in range(0, len(order), pool))])
    batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def pairs_loss(model, examples, pad_id, batch_size=128):
    """Mean completion loss over ``examples`` (per token, as the training loss), in eval mode."""
    total, count = 0.0, 0
    with evaluating(model):
        for start in range(0, len(examples), batch_size):
            x, y = pairs_batch(examples[start:start + batch_size], pad_id)
            n = int((y != IGNORE_INDEX).sum())
            total += model(x, y)[1].item() * n
            count += n
    return total / count


def _check_options(max_time, max_steps, n_eval, warmup, **positive_ints):
    if max_time is None and max_steps is None:
        raise ValueError("give max_time (seconds) or max_steps, or both; got neither")
    if max_time is not None and (isinstance(max_time, bool) or not isinstance(max_time, (int, float))
                                 or not max_time > 0):
        raise ValueError(f"max_time must be a positive number of seconds or None, got {max_time!r}")
    if max_steps is not None:
        positive_ints["max_steps"] = max_steps
    for name, value in positive_ints.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if n_eval is not None and (isinstance(n_eval, bool) or not isinstance(n_eval, (int, np.integer)) or n_eval < 0):
        raise ValueError(f"n_eval must be None (the whole test split) or an int >= 0, got {n_eval!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be a fraction in [0, 1), got {warmup!r}")


def train_pairs_gpt(task="dates", out=None, max_time=90.0, max_steps=None, seed=0, n_layer=2, n_head=4,
                    n_embd=64, dropout=0.0, batch_size=32, learning_rate=6e-3, min_lr=3e-4, warmup=0.03,
                    weight_decay=0.1, grad_clip=1.0, n_train=20000, n_valid=1000, n_test=1000, n_eval=None,
                    eval_interval=100, num_beams=4, task_options=None, log=print):
    """Train a character GPT on a built-in task's pairs as ``source <sep> target <eos>``; returns (model, metrics).

    Training stops at ``max_time`` seconds or ``max_steps`` steps, whichever comes first (None: no
    limit of that kind; one must be set). AdamW (weight decay on 2-D weights only) follows nanoGPT's
    linear warm-up over the first ``warmup`` fraction of the budget's steps, then cosine decay to ``min_lr``
    at its end (with a time budget, the steps are those projected at the pace so far).
    Batches hold pairs of similar length. Every ``eval_interval`` steps the completion loss is
    measured on up to 256 validation pairs. At the end the first ``n_eval`` test sources (all by
    default, none with 0) are decoded greedily and with beam search of ``num_beams`` beams (skipped
    for 1 beam).
    ``task_options`` go to ``load_task`` (e.g. ``{"min_len": 4, "max_len": 32}`` for reverse).
    Messages go to ``log`` (``print``); ``log=None`` silences them and the progress line.

    metrics: parameters, steps, train_seconds, tokens_per_second (real input tokens fed), valid_loss,
    test_exact_match, test_exact_match_beam, decode_seconds, decode_tokens_per_second,
    decode_sequences_per_second (greedy), samples [source, output, reference], test_errors (the first
    20 wrong greedy outputs) and history (one dict per validation: step, seconds, train_loss, valid_loss).
    With ``out``, the model (save_pretrained layout), its tokenizer and metrics.json are written there,
    so ``minigen generate --checkpoint OUT --prompt "March 3, 2021<sep>"`` completes a prompt.
    """
    _check_options(max_time, max_steps, n_eval, warmup, batch_size=batch_size, eval_interval=eval_interval,
                   num_beams=num_beams)
    data = load_task(task, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=seed, **(task_options or {}))
    if len(data.train) < batch_size:
        raise ValueError(f"batch_size {batch_size} is larger than the {len(data.train)} training pairs (n_train)")
    tokenizer = pairs_tokenizer(data)
    eos = tokenizer.token_to_id(EOS_TOKEN)
    train = [encode_pair(tokenizer, s, t) for s, t in data.train]
    valid = [encode_pair(tokenizer, s, t) for s, t in data.valid[:256]]
    longest_pair = max(len(s) + len(t) for s, t in data.train + data.valid + data.test)
    random.manual_seed(seed)
    # block_size: the longest pair with its <sep> and <eos>
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=longest_pair + 2, n_layer=n_layer,
                          n_head=n_head, n_embd=n_embd, dropout=dropout, bias=False, eos_token_id=eos))
    optimizer = optim.AdamW(adamw_param_groups(model, weight_decay), lr=learning_rate, betas=(0.9, 0.99))
    rng = np.random.default_rng(seed)
    quiet = log is None
    log = log or (lambda *args: None)
    log(f"GPT (prompt -> completion) on {task}: {model.num_parameters():,} parameters, "
        f"{len(train):,} training pairs, block size {model.config.block_size}")
    # Quiet runs still count tokens in a Progress, whose lines go nowhere.
    progress = Progress(total_steps=max_steps, max_time=max_time, stream=io.StringIO() if quiet else None)
    params = list(model.parameters())
    lengths = [len(ids) for ids, _ in train]
    history, recent_losses, batches = [], [], []

    def evaluate(step):
        history.append({"step": step, "seconds": round(progress.elapsed, 1),
                        "train_loss": float(np.mean(recent_losses)) if recent_losses else None,
                        "valid_loss": pairs_loss(model, valid, eos)})
        recent_losses.clear()
        log(f"step {step}: valid loss {history[-1]['valid_loss']:.4f}")

    def schedule(step):
        planned = progress.planned_steps(step)
        warmup_steps = int(warmup * planned)
        return get_lr_warmup_cosine(step, learning_rate, warmup_steps, max(warmup_steps, planned), min_lr)

    def batch_loss(step):
        if not batches:
            batches.extend(length_bucketed_batches(lengths, batch_size, rng))
        x, y = pairs_batch([train[i] for i in batches.pop()], eos)
        # tokens fed: the real input positions (eos only ever pads an input)
        return model(x, y)[1], int((x != eos).sum()), {}

    step = fit(optimizer, params, progress, batch_loss, schedule, evaluate, eval_interval, grad_clip=grad_clip,
               advice=f"lower learning_rate (now {learning_rate})",
               on_step=lambda step, loss_value: recent_losses.append(loss_value))
    train_seconds = progress.elapsed
    metrics = {"model": "gpt", "task": task, "parameters": model.num_parameters(), "steps": step,
               "train_seconds": round(train_seconds, 2),
               "tokens_per_second": round(progress.tokens_per_second(), 1),
               "valid_loss": history[-1]["valid_loss"], "backend": kernels.get_backend(),
               "config": model.config.to_dict()}
    if n_eval != 0:
        metrics.update(evaluate_pairs(model, tokenizer, data.test[:n_eval], num_beams, log))
    metrics["history"] = history
    if out is not None:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_metrics(metrics, os.path.join(out, "metrics.json"))
    return model, metrics


def evaluate_pairs(model, tokenizer, pairs, num_beams=4, log=print):
    """Exact match of greedy (and, with num_beams > 1, beam search) completions of ``pairs``, and the
    greedy decoding speed. Up to max(len(target)) + 1 new tokens are generated (the eos included)."""
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    max_new_tokens = max(len(tokenizer.encode(t)) for t in references) + 1
    # untimed: the first calls of the kernels a batch's prompt and its decoding steps use (compiled on a
    # first run, loaded from the cache after it) are not decoding speed
    complete(model, tokenizer, sources[:250], 2)
    start = time.perf_counter()
    greedy, generated = complete(model, tokenizer, sources, max_new_tokens)
    seconds = time.perf_counter() - start
    result = {"test_examples": len(pairs), "test_exact_match": exact_match(greedy, references),
              "decode_seconds": round(seconds, 3), "decode_tokens_per_second": round(generated / seconds, 1),
              "decode_sequences_per_second": round(len(pairs) / seconds, 1)}
    log(f"greedy: exact match {result['test_exact_match']:.3f}, {result['decode_sequences_per_second']:,.0f} "
        f"sequences/s")
    if num_beams > 1:
        start = time.perf_counter()
        beam, _ = complete(model, tokenizer, sources, max_new_tokens, num_beams=num_beams)
        result["test_exact_match_beam"] = exact_match(beam, references)
        result["beam_sequences_per_second"] = round(len(pairs) / (time.perf_counter() - start), 1)
        log(f"beam search ({num_beams} beams): exact match {result['test_exact_match_beam']:.3f}")
    result["samples"] = [list(p) for p in zip(sources[:10], greedy[:10], references[:10])]
    result["test_errors"] = [{"source": s, "target": t, "prediction": p}
                             for s, t, p in zip(sources, references, greedy) if p != t][:20]
    return result
