"""Train a character-level GPT on a text file (nanoGPT's Shakespeare recipe), then sample from it.

    python examples/train_char_gpt.py ../shared/data/tinyshakespeare.txt                 # a few minutes
    python examples/train_char_gpt.py ../shared/data/tinyshakespeare.txt --max-iters 2000  # val loss ~1.9

The recipe: first 90% of the characters train, the last 10% validate; 4 layers, 4 heads, width 128,
block 64, batch 12, no dropout, no biases; AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices),
100 warm-up steps, cosine decay to 1e-4, gradient clipping at 1.0. This is `minigen train gpt` with its
defaults; checkpoints go to OUT/best and OUT/last (re-run with --resume to continue an interrupted run).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from minigen.models.gpt import GPT  # noqa: E402
from minigen.tokenizers import load_tokenizer  # noqa: E402
from minigen.training.gpt import GPTTrainConfig, train_gpt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="a UTF-8 text file, e.g. ../shared/data/tinyshakespeare.txt")
    parser.add_argument("--out", default="out-char-gpt")
    parser.add_argument("--max-iters", type=int, default=500)
    parser.add_argument("--eval-interval", type=int, default=250)
    parser.add_argument("--eval-iters", type=int, default=50)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()

    config = GPTTrainConfig(text=args.text, out=args.out, max_iters=args.max_iters,
                            lr_decay_iters=max(args.max_iters, 100), eval_interval=args.eval_interval,
                            eval_iters=args.eval_iters, resume=args.resume)
    _, metrics = train_gpt(config)
    print(f"best validation loss {metrics['best_val_loss']:.4f}, {metrics['tokens_per_second']:,.0f} tokens/s")

    best = os.path.join(args.out, "best")
    model, tokenizer = GPT.from_pretrained(best), load_tokenizer(best)
    prompt = np.array([tokenizer.encode("ROMEO:")])
    # crop_context: past block_size, each character is predicted from the last 64, as nanoGPT samples
    out = model.generate(prompt, max_new_tokens=200, do_sample=True, temperature=0.8, top_k=40, seed=0,
                         crop_context=True)
    print("\n" + tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
