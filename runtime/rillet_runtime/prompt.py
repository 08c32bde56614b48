"""How retrieved passages are put in front of a model, and read back by the offline one."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from rillet_runtime.retrieval import Passage

SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer from the sources below when they are relevant, "
    "cite them as [n], and say so when they do not contain the answer."
)

_SOURCE = re.compile(r'<source n="(\d+)" id="([^"]*)" title="([^"]*)">\n(.*?)\n</source>', re.S)


@dataclass(frozen=True)
class QuotedSource:
    n: int
    id: str
    title: str
    text: str


def render_system_prompt(passages: Sequence[Passage]) -> str:
    if not passages:
        return SYSTEM_PROMPT
    blocks = "\n".join(
        f'<source n="{n}" id="{html.escape(p.id)}" title="{html.escape(p.title)}">\n'
        f"{p.text}\n</source>"
        for n, p in enumerate(passages, start=1)
    )
    return f"{SYSTEM_PROMPT}\n\n<sources>\n{blocks}\n</sources>"


def parse_sources(text: str) -> list[QuotedSource]:
    return [
        QuotedSource(int(n), html.unescape(id_), html.unescape(title), body)
        for n, id_, title, body in _SOURCE.findall(text)
    ]
