"""Words for keyword search and tokens for chunking: plain regexes, no model download.

`terms` feeds BM25 and the offline embedder (stemmed, stopwords out); `tokens` counts and
cuts chunks. A regex token is a word or a punctuation mark, which for English prose
lands within about 25% of a BPE tokenizer's count: close enough to size chunks by.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "how",
        "i",
        "in",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "so",
        "that",
        "the",
        "this",
        "to",
        "was",
        "we",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def _stem(word: str) -> str:
    """Fold the commonest English endings so "installs" finds "install"; crude on purpose."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def terms(text: str) -> tuple[str, ...]:
    return tuple(_stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS)


def token_spans(text: str) -> list[tuple[int, int]]:
    """Where each token starts and ends, so a chunk is a slice of the original text."""
    return [m.span() for m in _TOKEN.finditer(text)]
