"""Pre-train a character GPT on a text, then fine-tune it on one speaker's lines with its embeddings frozen.

    python examples/finetune_gpt.py ../shared/data/tinyshakespeare.txt [--speaker ROMEO]

Step 1 is `minigen train gpt --text FILE`; step 2 is `minigen train gpt --text SPEAKER.txt --init-from
OUT/pretrain --freeze embeddings`. The validation loss on the speaker's lines is printed before
fine-tuning (step 0 of the second run) and after, then the fine-tuned model writes a new speech.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from minigen.models.gpt import GPT  # noqa: E402
from minigen.tokenizers import load_tokenizer  # noqa: E402
from minigen.training.gpt import GPTTrainConfig, train_gpt  # noqa: E402


def speeches_of(text, speaker):
    """Every speech of `speaker` in a play formatted as 'NAME:\\nlines\\n\\n'."""
    blocks = re.split(r"\n\s*\n", text)
    return "\n\n".join(b for b in blocks if b.startswith(speaker + ":")) + "\n\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text", help="a UTF-8 play, e.g. ../shared/data/tinyshakespeare.txt")
    parser.add_argument("--speaker", default="ROMEO")
    parser.add_argument("--out", default="out-finetune")
    parser.add_argument("--pretrain-iters", type=int, default=300)
    parser.add_argument("--finetune-iters", type=int, default=100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    pretrain = os.path.join(args.out, "pretrain")
    train_gpt(GPTTrainConfig(text=args.text, out=pretrain, max_iters=args.pretrain_iters,
                             lr_decay_iters=args.pretrain_iters, eval_interval=args.pretrain_iters, eval_iters=20))

    with open(args.text, encoding="utf-8") as f:
        speaker_text = speeches_of(f.read(), args.speaker)
    speaker_file = os.path.join(args.out, f"{args.speaker}.txt")
    with open(speaker_file, "w", encoding="utf-8") as f:
        f.write(speaker_text)
    print(f"\nfine-tuning on {len(speaker_text):,} characters of {args.speaker}")
    finetune = os.path.join(args.out, "finetune")
    _, metrics = train_gpt(GPTTrainConfig(
        text=speaker_file, out=finetune, init_from=pretrain, freeze=["embeddings"], max_iters=args.finetune_iters,
        learning_rate=3e-4, min_lr=3e-5, warmup_iters=10, lr_decay_iters=args.finetune_iters,
        eval_interval=args.finetune_iters, eval_iters=20))
    before, after = metrics["val_history"][0][2], metrics["val_history"][-1][2]
    print(f"validation loss on {args.speaker}'s lines: {before:.4f} before fine-tuning, {after:.4f} after")

    best = os.path.join(finetune, "best")
    model, tokenizer = GPT.from_pretrained(best), load_tokenizer(best)
    out = model.generate(np.array([tokenizer.encode(args.speaker + ":\n")]), max_new_tokens=150, do_sample=True,
                         temperature=0.8, top_k=40, seed=0, crop_context=True)
    print("\n" + tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
