"""Generate with a GPT-2 checkpoint directory, as with Hugging Face's GPT2LMHeadModel.

    python examples/gpt2_generate.py path/to/gpt2        # a directory saved by transformers' save_pretrained
    python examples/gpt2_generate.py                     # no download possible: a tiny GPT-2 made on the spot

The directory holds config.json, model.safetensors, vocab.json and merges.txt. The snippet:

    model = GPT.from_pretrained(directory)
    tokenizer = load_tokenizer(directory)
    ids = np.array([tokenizer.encode("Once upon a time")])
    out = model.generate(ids, max_length=50, num_return_sequences=1)
    print(tokenizer.decode(out[0].tolist()))
"""
import argparse
import io
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import minigen  # noqa: E402
from minigen.data import random_text_batch  # noqa: E402
from minigen.models.gpt import GPT, GPTConfig  # noqa: E402
from minigen.optim import AdamW  # noqa: E402
from minigen.tokenizers import ByteLevelBPETokenizer, load_tokenizer  # noqa: E402
from minigen.training.loop import fit  # noqa: E402
from minigen.training.progress import Progress  # noqa: E402

STORY = ("Once upon a time there was a little fox who lived in the woods. Every morning the fox ran to the river. "
         "One day the fox met a bear at the river, and the bear said hello. The fox and the bear became friends. ")


def make_tiny_gpt2(directory):
    """A GPT-2-shaped checkpoint with a byte-level BPE, trained for a few seconds on one short story."""
    tokenizer = ByteLevelBPETokenizer.train([STORY], vocab_size=320, special_tokens=["<|endoftext|>"])
    eos = tokenizer.token_to_id("<|endoftext|>")
    minigen.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=64,
                          bos_token_id=eos, eos_token_id=eos))
    ids = np.array(tokenizer.encode(STORY * 3))
    optimizer = AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)

    def batch_loss(step):
        x, y = random_text_batch(ids, 64, 8, rng)
        return model(x, y)[1], x.size, {}
    losses = []
    fit(optimizer, list(model.parameters()), Progress(total_steps=100, stream=io.StringIO()), batch_loss,
        schedule=lambda step: 3e-3, grad_clip=0, on_step=lambda step, loss: losses.append(loss))
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    print(f"(made a tiny GPT-2 in {directory}: {model.num_parameters():,} parameters, final loss {losses[-1]:.3f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", help="a GPT-2 checkpoint directory")
    parser.add_argument("--prompt", default="Once upon a time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.directory
        if directory is None:
            directory = tmp
            make_tiny_gpt2(directory)
        model = GPT.from_pretrained(directory)
        tokenizer = load_tokenizer(directory)
        ids = np.array([tokenizer.encode(args.prompt)])
        out = model.generate(ids, max_length=50, num_return_sequences=1)
        print(tokenizer.decode(out[0].tolist()))


if __name__ == "__main__":
    main()
