"""Seq2Seq decoding speed, minigen against PyTorch, on the dates test set.

    python benchmarks/bench_seq2seq.py [--rounds 3] [--passes 5] [--model DIR] [--quick]

The model has `minigen train seq2seq`'s default shape (bidirectional GRU encoder, hidden 256, Bahdanau
attention, GRUCell decoder with input feeding, embeddings 64): the trained model in DIR (a run's best/ or
last/), or by default random weights from seed 0. PyTorch's side is benchmarks/torch_reference.Seq2Seq with
the very same weights, decoding with a plain greedy loop or a batched beam search under torch.no_grad();
minigen's is `Seq2Seq.generate`. Three modes:

- greedy: batches of 250 sources, longest first (as minigen's evaluation batches them);
- beam: num_beams=4 (Hugging Face's rules: length_penalty 1, early_stopping False), batches of 250;
- greedy-1: one source at a time, the first 200 test sources.

Every measurement runs in its own process: one untimed pass over the sources (first calls, kernels), then
`--passes` timed passes, the median reported. The sides alternate mode by mode and round by round. The tokens
of the two sides are compared: with the same weights they should agree row for row (a near-tie between two
tokens can differ in float32).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

MODES = {"greedy": dict(batch=250, beams=1, sources=1000), "beam": dict(batch=250, beams=4, sources=1000),
         "greedy-1": dict(batch=1, beams=1, sources=200)}
SIDES = ("minigen", "torch")
# Dates targets are 10 characters: bos + 10 + eos = 12 tokens. Untrained weights rarely pick eos and run to it.
MAX_LENGTH = 16
SHAPE = dict(embedding_size=64, hidden_size=256)


def model_and_sources(directory, sources):
    """minigen's Seq2Seq (trained from `directory`, or random from seed 0) and the first `sources` test pairs'
    ids (N, S) and lengths (N,), longest first."""
    import minigen
    from minigen.data import load_task
    from minigen.models.seq2seq import Seq2Seq, Seq2SeqConfig
    data = load_task("dates", n_train=0, n_valid=0, n_test=1000, seed=0)
    if directory:
        model = Seq2Seq.from_pretrained(directory)
    else:
        minigen.manual_seed(0)
        config = Seq2SeqConfig(len(data.src_vocab), len(data.tgt_vocab), **SHAPE, pad_id=data.tgt_vocab.pad_id,
                               bos_id=data.tgt_vocab.bos_id, eos_id=data.tgt_vocab.eos_id)
        model = Seq2Seq(config, data.src_vocab, data.tgt_vocab)
    texts = sorted((source for source, _ in data.test[:sources]), key=len, reverse=True)
    ids, mask = model.encode_sources(texts)
    return model.eval(), ids, mask.sum(axis=1)


def torch_twin(model):
    """benchmarks/torch_reference.Seq2Seq holding minigen `model`'s weights."""
    import torch
    from benchmarks.torch_reference import Seq2Seq
    c = model.config
    twin = Seq2Seq(c.src_vocab_size, c.tgt_vocab_size, c.embedding_size, c.hidden_size, c.pad_id).eval()
    renamed = {"decoder.0.": "decoder.", "attention.": ""}
    state = {}
    for name, value in model.state_dict().items():
        for old, new in renamed.items():
            name = name.replace(old, new) if name.startswith(old) else name
        state[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    twin.load_state_dict(state, strict=True)
    return twin


def decoder(side, model, beams):
    """decode(ids, lengths) -> int64 sequences (N, L) for this side."""
    c = model.config
    if side == "minigen":
        def decode(ids, lengths):
            mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
            return model.generate(ids, attention_mask=mask, num_beams=beams, max_length=MAX_LENGTH)
        return decode
    import torch
    twin = torch_twin(model)

    def decode(ids, lengths):
        ids, lengths = torch.from_numpy(ids), torch.from_numpy(lengths)
        if beams == 1:
            out = twin.greedy(ids, lengths, c.bos_id, c.eos_id, c.pad_id, MAX_LENGTH)
        else:
            out = twin.beam_search(ids, lengths, beams, c.bos_id, c.eos_id, c.pad_id, MAX_LENGTH)
        return out.numpy()
    return decode


def worker(args):
    mode = MODES[args.mode]
    model, ids, lengths = model_and_sources(args.model, mode["sources"])
    decode = decoder(args.side, model, mode["beams"])
    batches = [slice(i, i + mode["batch"]) for i in range(0, len(ids), mode["batch"])]

    def one_pass():
        out = []
        for b in batches:
            width = int(lengths[b].max())
            out.append(decode(ids[b, :width], lengths[b]))
        return out

    one_pass()  # untimed: first calls, kernels
    seconds = []
    for _ in range(args.passes):
        start = time.perf_counter()
        sequences = one_pass()
        seconds.append(time.perf_counter() - start)
    tokens = np.full((len(ids), MAX_LENGTH), -1, dtype=np.int64)
    row = 0
    for s in sequences:
        tokens[row:row + len(s), :s.shape[1]] = s
        row += len(s)
    np.save(args.tokens, tokens)
    print(json.dumps({"seconds": statistics.median(seconds), "spread": [min(seconds), max(seconds)],
                      "sources": len(ids)}))


def run_worker(side, mode, args, tokens_path):
    command = [sys.executable, __file__, "--worker", "--side", side, "--mode", mode, "--passes", str(args.passes),
               "--tokens", tokens_path] + (["--model", args.model] if args.model else [])
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side and mode (default 3)")
    parser.add_argument("--passes", type=int, default=5, help="timed passes over the sources per process")
    parser.add_argument("--model", help="a trained Seq2Seq directory (default: random weights, seed 0)")
    parser.add_argument("--modes", nargs="+", choices=tuple(MODES), default=list(MODES))
    parser.add_argument("--quick", action="store_true", help="one round of one pass: a smoke test")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=tuple(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--tokens", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or args.passes < 1:
        parser.error(f"--rounds and --passes must be >= 1, got {args.rounds} and {args.passes}")
    if args.model and not os.path.isdir(args.model):
        parser.error(f"--model: no directory at {args.model!r}")
    if args.worker:
        return worker(args)
    if args.quick:
        args.rounds, args.passes = 1, 1
    results = {(m, s): [] for m in args.modes for s in SIDES}
    agree = {}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for mode in args.modes:
                for side in SIDES if round_ % 2 == 0 else SIDES[::-1]:
                    path = os.path.join(directory, f"{mode}-{side}.npy")
                    results[mode, side].append(run_worker(side, mode, args, path))
                tokens = [np.load(os.path.join(directory, f"{mode}-{side}.npy"), allow_pickle=False)
                          for side in SIDES]
                agree[mode] = float((tokens[0] == tokens[1]).all(axis=1).mean())
    weights = f"trained weights from {args.model}" if args.model else "random weights (seed 0)"
    print(f"Seq2Seq decoding on the dates test set, {weights}, max_length {MAX_LENGTH}; sources/s, median of "
          f"{args.rounds} processes x {args.passes} passes (slowest-fastest process); load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  {'mode':28} {'minigen':>22} {'PyTorch':>22} {'ratio':>7}  same tokens")
    for mode in args.modes:
        cells, rates = [], {}
        for side in SIDES:
            per_run = sorted(MODES[mode]["sources"] / r["seconds"] for r in results[mode, side])
            rates[side] = statistics.median(per_run)
            cells.append(f"{rates[side]:8,.0f} ({per_run[0]:,.0f}-{per_run[-1]:,.0f})")
        m = MODES[mode]
        label = f"{mode} (batch {m['batch']}, beams {m['beams']}, {m['sources']} sources)"
        print(f"  {label:28} {cells[0]:>22} {cells[1]:>22} {rates['minigen'] / rates['torch']:6.2f}x  "
              f"{100 * agree[mode]:.1f}% of rows")


if __name__ == "__main__":
    main()
