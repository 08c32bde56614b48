"""`extractive`: the offline default model. It is not a language model and says so.

It answers by quoting the sentences of the retrieved sources that share the most rare
words with the question, each with its citation. No download, no network, deterministic:
enough to see the whole pipeline stream a grounded answer on a fresh machine.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from rillet_runtime.offload import cpu_bound
from rillet_runtime.prompt import QuotedSource, parse_sources
from rillet_runtime.retrieval import terms

PREAMBLE = "From the indexed documents (offline extractive answer, no language model):\n\n"
NO_SOURCES = (
    "Hello! I am Rillet's offline extractive responder: I answer only by quoting the "
    "documents I index, and none of them matched this message. Ask me about them "
    "(for example: How do I install Rillet?), or configure a language model with "
    "model.provider for open conversation."
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`*\[(])")
_TOKEN = re.compile(r"\S+\s*|\s+")
_FENCE = re.compile(r"```.*?```", re.S)
_MAX_CODE_CHARS = 400


def _units(text: str) -> list[str]:
    """Sentences of prose, and code blocks kept whole (a command is an answer)."""
    units: list[str] = []
    position = 0
    for fence in _FENCE.finditer(text):
        units.extend(_sentences(text[position : fence.start()]))
        units.append(fence.group(0))
        position = fence.end()
    units.extend(_sentences(text[position:]))
    return units


def _sentences(prose: str) -> list[str]:
    found: list[str] = []
    for paragraph in re.split(r"\n\s*\n", prose):
        if paragraph.lstrip().startswith("|"):
            found.extend(row.strip() for row in paragraph.splitlines() if _is_table_row(row))
            continue
        joined = " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
        found.extend(s.strip() for s in _SENTENCE_END.split(joined) if len(s.strip()) > 2)
    return found


def _is_table_row(row: str) -> bool:
    return row.strip().startswith("|") and not set(row.strip()) <= set("|-: ")


def extract_answer(question: str, sources: Sequence[QuotedSource], max_units: int = 4) -> str:
    """The best-matching units, in source order, each cited as [n].

    A unit scores by the rare question words it shares (half for code, whose string
    literals match too easily), plus what its source's title shares: a section titled
    like the question vouches for all its sentences. At most one short code block.
    """
    query = set(terms(question))
    candidates = [
        (src, i, unit)
        for src in sources
        for i, unit in enumerate(_units(src.text))
        if not unit.startswith("```") or len(unit) <= _MAX_CODE_CHARS
    ]
    if not query or not candidates:
        return NO_SOURCES
    doc_freq = Counter(t for _, _, unit in candidates for t in set(terms(unit)))
    total = len(candidates)

    def overlap(text: str) -> float:
        return sum(math.log(1 + total / max(doc_freq[t], 1)) for t in query & set(terms(text)))

    title_bonus = {src.n: overlap(src.title) for src in sources}
    scored = sorted(
        (
            (_unit_score(unit, overlap) + title_bonus[src.n], src, i, unit)
            for src, i, unit in candidates
        ),
        key=lambda s: (-s[0], s[1].n, s[2]),
    )
    best: list[tuple[float, QuotedSource, int, str]] = []
    has_code = False
    for candidate in scored:
        is_code = candidate[3].startswith("```")
        if candidate[0] <= 0 or len(best) == max_units:
            break
        if is_code and has_code:
            continue
        has_code = has_code or is_code
        best.append(candidate)
    if not best:
        return NO_SOURCES
    best.sort(key=lambda s: (s[1].n, s[2]))
    lines = [
        f"{unit}\n[{src.n}]" if unit.startswith("```") else f"{unit} [{src.n}]"
        for _, src, _, unit in best
    ]
    return PREAMBLE + "\n\n".join(lines)


def _unit_score(unit: str, overlap: Callable[[str], float]) -> float:
    return overlap(unit) / 2 if unit.startswith("```") else overlap(unit)


def _question(messages: Sequence[BaseMessage]) -> str:
    return next((m.text for m in reversed(messages) if isinstance(m, HumanMessage)), "")


def _answer_for(messages: Sequence[BaseMessage]) -> tuple[str, int]:
    question = _question(messages)
    sources = [s for m in messages if m.type == "system" for s in parse_sources(m.text)]
    prompt_words = sum(len(m.text.split()) for m in messages)
    return extract_answer(question, sources), prompt_words


class ExtractiveChatModel(BaseChatModel):
    """A LangChain chat model, so it streams inside any graph like a real provider."""

    model_name: str = "rillet-extractive"

    @property
    def _llm_type(self) -> str:
        return "rillet-extractive"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text, prompt_words = _answer_for(messages)
        usage = _usage(prompt_words, len(_TOKEN.findall(text)))
        message = AIMessage(content=text, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from _chunks(*_answer_for(messages))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        # The question's length drives the cost (its terms against every sentence).
        answer = await cpu_bound(len(_question(messages)), _answer_for, messages)
        for chunk in _chunks(*answer):
            yield chunk


def _usage(prompt_words: int, output_tokens: int) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=prompt_words,
        output_tokens=output_tokens,
        total_tokens=prompt_words + output_tokens,
    )


def _chunks(text: str, prompt_words: int) -> Iterator[ChatGenerationChunk]:
    tokens = _TOKEN.findall(text)
    for token in tokens:
        yield ChatGenerationChunk(message=AIMessageChunk(content=token))
    yield ChatGenerationChunk(
        message=AIMessageChunk(content="", usage_metadata=_usage(prompt_words, len(tokens))),
        generation_info={"finish_reason": "stop"},
    )
