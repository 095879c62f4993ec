"""Multi-turn chat with a GPT checkpoint, and the `minigen chat` command.

A conversation is a list of turns rendered as `<prefix><text><separator>`, e.g.

    User: hello<\\n>Bot: hi there<\\n>User: what is my name?<\\n>Bot: 

and the model continues after the bot prefix until it writes the separator. The model sees only its
context window, so before every reply the oldest turns are dropped until the history, the new prompt and
`max_new_tokens` fit in block_size (if even the last user turn does not fit, its beginning is cut).
"""
import sys

import numpy as np


class ChatSession:
    """Keeps a conversation and generates the bot's replies with `model.generate`.

    user_prefix, bot_prefix, separator: how turns were written in the training text.
    max_new_tokens: the longest reply; by default half the model's context (at most 64 tokens), so the
    rest holds the conversation. Other keywords (do_sample, temperature, top_k, ...) go to generate."""

    def __init__(self, model, tokenizer, user_prefix="User: ", bot_prefix="Bot: ", separator="\n",
                 max_new_tokens=None, **generate_kwargs):
        if not separator:
            raise ValueError("separator must be a non-empty string that ends a turn")
        block_size = model.config.block_size
        if max_new_tokens is None:
            max_new_tokens = max(1, min(64, block_size // 2))
        # the prompt keeps at least one token: block_size - max_new_tokens + 1 (see prompt_ids)
        if not isinstance(max_new_tokens, int) or not 1 <= max_new_tokens <= block_size:
            raise ValueError(f"max_new_tokens must be an integer in [1, block_size={block_size}], "
                             f"got {max_new_tokens!r}")
        self.model, self.tokenizer = model, tokenizer
        self.user_prefix, self.bot_prefix, self.separator = user_prefix, bot_prefix, separator
        self.max_new_tokens, self.generate_kwargs = max_new_tokens, generate_kwargs
        separator_ids = tokenizer.encode(separator)
        # a one-token separator ends generation early; otherwise the reply is cut at it afterwards
        self.eos_token_id = separator_ids[0] if len(separator_ids) == 1 else None
        self.turns = []  # token ids of each finished turn, oldest first

    def reset(self):
        """Forget the conversation."""
        self.turns = []

    def prompt_ids(self, user_text):
        """The prompt for a reply to `user_text`: as many recent turns as fit, the user turn, the bot prefix."""
        new_turn = self.tokenizer.encode(self.user_prefix + user_text + self.separator)
        tail = self.tokenizer.encode(self.bot_prefix)
        budget = self.model.config.block_size - self.max_new_tokens + 1  # the last new token needs no forward pass
        prompt = new_turn + tail
        if len(prompt) > budget:
            return prompt[len(prompt) - budget:]
        history = []
        for turn in reversed(self.turns):
            if len(history) + len(turn) + len(prompt) > budget:
                break
            history = turn + history
        return history + prompt

    def reply(self, user_text):
        """The bot's answer to `user_text`; both turns join the history."""
        prompt = self.prompt_ids(user_text)
        kwargs = {"eos_token_id": self.eos_token_id, **self.generate_kwargs}
        out = self.model.generate(np.array([prompt]), max_new_tokens=self.max_new_tokens, **kwargs)
        text = self.tokenizer.decode([int(t) for t in out[0, len(prompt):]])
        answer = text.split(self.separator, 1)[0]
        self.turns.append(self.tokenizer.encode(self.user_prefix + user_text + self.separator))
        self.turns.append(self.tokenizer.encode(self.bot_prefix + answer + self.separator))
        return answer


def _run_chat(args):
    from .models.gpt import GPT
    from .tokenizers import load_tokenizer
    from .training.run import load_model_dir
    directory = load_model_dir(args.checkpoint)
    model, tokenizer = GPT.from_pretrained(directory), load_tokenizer(directory)
    session = ChatSession(model, tokenizer, user_prefix=args.user_prefix, bot_prefix=args.bot_prefix,
                          separator=args.separator.encode().decode("unicode_escape"),
                          max_new_tokens=args.max_new_tokens, min_new_tokens=args.min_new_tokens,
                          do_sample=args.do_sample, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                          seed=args.seed)
    interactive = sys.stdin.isatty()
    if interactive:
        print("(empty line or Ctrl-D ends; /reset forgets the conversation)", file=sys.stderr)
    for line in sys.stdin:
        text = line.rstrip("\n")
        if interactive and not text:
            break
        if text == "/reset":
            session.reset()
            continue
        print(args.bot_prefix + session.reply(text), flush=True)
    return 0


def register(sub, train_sub):
    p = sub.add_parser("chat", help="multi-turn chat with a GPT checkpoint (reads lines from stdin)")
    p.add_argument("--checkpoint", required=True, help="model directory (or a training output directory)")
    p.add_argument("--user-prefix", default="User: ", help="how user turns begin in the training text")
    p.add_argument("--bot-prefix", default="Bot: ", help="how bot turns begin in the training text")
    p.add_argument("--separator", default="\\n", help="the text that ends a turn (escapes such as \\n allowed)")
    p.add_argument("--max-new-tokens", type=int, default=None,
                   help="the longest reply (default: half the model's context, at most 64)")
    p.add_argument("--min-new-tokens", type=int, default=None, help="no end of turn before this many tokens")
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=_run_chat)
