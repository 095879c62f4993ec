"""Multi-turn dialogue: build a small synthetic dialogue set, train (or fine-tune) a GPT on it, then chat.

    python examples/dialogue.py                                   # from scratch: 2000 steps, ~2 minutes
    python examples/dialogue.py --init-from DIR --out out-more     # fine-tunes the GPT checkpoint in DIR instead
    minigen chat --checkpoint out-dialogue                        # then chat yourself (lines on stdin)

Every conversation greets, learns the user's name, does a little arithmetic, is asked for the name again
and says goodbye, so a good reply needs the earlier turns: the chat session keeps them in the context
window (oldest turns dropped first). Turns are written `User: ...` / `Bot: ...`, one per line, which is
the default format of `minigen chat`. With --init-from, the checkpoint's character vocabulary must cover
the dialogue text (lowercase letters, digits and punctuation).

The turn format is learnt within a few hundred steps; recalling the name (copying it from an earlier turn)
and adding takes longer: with these settings the replies were right after about 2000 steps.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from minigen.chat import ChatSession  # noqa: E402
from minigen.models.gpt import GPT  # noqa: E402
from minigen.tokenizers import load_tokenizer  # noqa: E402
from minigen.training.gpt import GPTTrainConfig, train_gpt  # noqa: E402

NAMES = ["ada", "bob", "cy", "dora", "eve", "finn", "gus", "hal", "ida", "jo", "kim", "lu", "max", "ned", "olga",
         "pia", "quin", "rex", "sam", "tess", "uma", "vic", "wes", "xia", "yan", "zoe"]


def conversation(rng):
    """One dialogue as text: greeting, name, arithmetic, recall of the name, goodbye."""
    name = NAMES[rng.integers(len(NAMES))]
    turns = [(["hi", "hello", "hey"][rng.integers(3)], "hello! what is your name?"),
             (f"my name is {name}", f"nice to meet you, {name}.")]
    a, b = rng.integers(0, 10, 2)
    turns.append((f"what is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    turns += [("what is my name?", f"your name is {name}."), ("bye", f"goodbye, {name}!")]
    return "".join(f"User: {user}\nBot: {bot}\n" for user, bot in turns) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out-dialogue")
    parser.add_argument("--init-from", default="", help="fine-tune this GPT checkpoint instead of a new one")
    parser.add_argument("--conversations", type=int, default=3000)
    parser.add_argument("--max-iters", type=int, default=2000)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)
    path = os.path.join(args.out, "dialogues.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(conversation(rng) for _ in range(args.conversations)))

    # a 160-token window holds the name turn when the name is asked for (the greeting is dropped first)
    train_gpt(GPTTrainConfig(text=path, out=args.out, init_from=args.init_from, n_layer=3, n_embd=96,
                             block_size=160, batch_size=8, learning_rate=2e-3, min_lr=2e-4, max_iters=args.max_iters,
                             lr_decay_iters=args.max_iters, warmup_iters=50, eval_interval=args.max_iters,
                             eval_iters=10))

    best = os.path.join(args.out, "best")
    session = ChatSession(GPT.from_pretrained(best), load_tokenizer(best), max_new_tokens=32)
    for user in ("hello", "my name is zoe", "what is 3 plus 4?", "what is my name?", "bye"):
        print(f"User: {user}\nBot: {session.reply(user)}")


if __name__ == "__main__":
    main()
