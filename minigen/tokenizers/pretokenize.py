"""GPT-2's pre-tokenization, exact, with the standard library's `re`.

GPT-2 splits text into words with

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

written for the `regex` package. Python's `re` has no \\p{...} classes, so they are built here from
`unicodedata`: every code point whose general category starts with 'L' (letters) or 'N' (numbers),
compressed to ranges. `\\s` is replaced too: `regex` means Unicode White_Space by it, while `re` also
matches U+001C..U+001F. Letters and numbers follow the Unicode version of this Python's `unicodedata`.
"""
import functools
import itertools
import re
import sys
import unicodedata

# Unicode's White_Space property (a fixed list since Unicode 6.3).
WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"


def _escape(code_point):
    return f"\\U{code_point:08x}"


def _category_ranges(major):
    """Class body (no brackets) of all code points whose general category starts with `major`."""
    category = unicodedata.category
    is_member = (category(chr(cp))[0] == major for cp in range(sys.maxunicode + 1))
    parts, start = [], 0
    for member, run in itertools.groupby(is_member):
        length = sum(1 for _ in run)
        if member:
            end = start + length - 1
            parts.append(_escape(start) if length == 1 else f"{_escape(start)}-{_escape(end)}")
        start += length
    return "".join(parts)


@functools.lru_cache(maxsize=None)
def gpt2_pattern():
    """The compiled GPT-2 pre-tokenization pattern (built on first use, about 0.3 s, then cached)."""
    letters, numbers = _category_ranges("L"), _category_ranges("N")
    space, non_space = f"[{WHITESPACE}]", f"[^{WHITESPACE}]"
    return re.compile(
        "'s|'t|'re|'ve|'m|'ll|'d"
        f"| ?[{letters}]+| ?[{numbers}]+| ?[^{WHITESPACE}{letters}{numbers}]+"
        f"|{space}+(?!{non_space})|{space}+"
    )


def pretokenize(text):
    """Split `text` into GPT-2 pre-tokens; their concatenation is `text`."""
    return gpt2_pattern().findall(text)
