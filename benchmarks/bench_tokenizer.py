"""Tokenizer speed: BPE training time, then encode and decode MB/s of both tokenizers.

    python benchmarks/bench_tokenizer.py [path/to/text.txt] [--vocab-size 1000]

The default text is ../shared/data/tinyshakespeare.txt beside the repository. MB are megabytes of
the text's UTF-8 encoding. BPE encoding is timed twice: with an empty word cache, then warm.
"""
import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from minigen.tokenizers import ByteLevelBPETokenizer, CharTokenizer  # noqa: E402


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_path = os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt")
    parser.add_argument("path", nargs="?", default=default_path)
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args()
    with open(args.path, encoding="utf-8") as f:
        text = f.read()
    megabytes = len(text.encode("utf-8")) / 1e6
    print(f"text: {args.path} ({megabytes:.2f} MB, {len(text):,} characters)")

    bpe, seconds = timed(ByteLevelBPETokenizer.train, [text], args.vocab_size, ["<|endoftext|>"])
    print(f"BPE train  vocab {bpe.vocab_size}: {seconds:.2f} s ({len(bpe.merges)} merges)")
    char = CharTokenizer.from_text(text)

    for name, tokenizer in (("char", char), ("BPE", bpe)):
        ids, seconds = timed(tokenizer.encode, text)
        label = "encode (cold cache)" if tokenizer is bpe else "encode"
        print(f"{name:4} {label:20}: {megabytes / seconds:6.2f} MB/s  ({len(ids):,} tokens, "
              f"{len(text) / len(ids):.2f} characters/token)")
        if tokenizer is bpe:
            ids, seconds = timed(tokenizer.encode, text)
            print(f"{name:4} {'encode (warm cache)':20}: {megabytes / seconds:6.2f} MB/s")
        decoded, seconds = timed(tokenizer.decode, ids)
        assert decoded == text, "round trip failed"
        print(f"{name:4} {'decode':20}: {megabytes / seconds:6.2f} MB/s")


if __name__ == "__main__":
    main()
