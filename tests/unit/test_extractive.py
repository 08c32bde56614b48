"""The offline extractive model: grounded quotes with citations, honest when it has none."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, SystemMessage

from rillet_runtime.graph.rag import is_small_talk
from rillet_runtime.llm.extractive import NO_SOURCES, PREAMBLE, ExtractiveChatModel, extract_answer
from rillet_runtime.prompt import QuotedSource, parse_sources, render_system_prompt
from rillet_runtime.retrieval import Passage

PASSAGES = [
    Passage("a#0", "Setup", "Install the operator with Helm. The weather is nice.", "a.md"),
    Passage("b#0", "Scaling", "The autoscaler follows the latency target.", "b.md"),
]


def test_sources_survive_the_prompt_round_trip() -> None:
    parsed = parse_sources(render_system_prompt(PASSAGES))
    assert [(s.n, s.id, s.title, s.text) for s in parsed] == [
        (1, "a#0", "Setup", PASSAGES[0].text),
        (2, "b#0", "Scaling", PASSAGES[1].text),
    ]


def test_quotes_the_matching_sentence_with_its_citation() -> None:
    sources = parse_sources(render_system_prompt(PASSAGES))
    answer = extract_answer("how do I install the operator?", sources)
    assert answer == PREAMBLE + "Install the operator with Helm. [1]"


def test_says_so_when_nothing_matches() -> None:
    sources = [QuotedSource(1, "x", "X", "Nothing relevant here.")]
    assert extract_answer("kubernetes?", sources) == NO_SOURCES
    assert extract_answer("kubernetes?", []) == NO_SOURCES


async def test_streams_word_by_word_like_a_provider() -> None:
    model = ExtractiveChatModel()
    messages = [
        SystemMessage(content=render_system_prompt(PASSAGES)),
        HumanMessage(content="install operator"),
    ]
    chunks = [chunk async for chunk in model.astream(messages)]
    assert len(chunks) > 5
    assert "".join(str(c.content) for c in chunks) == model.invoke(messages).content


def test_small_talk_is_recognised() -> None:
    assert is_small_talk("Hello!")
    assert is_small_talk("thanks rillet")
    assert not is_small_talk("hello, how do I install the operator?")
