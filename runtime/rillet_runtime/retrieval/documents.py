"""Files -> sections -> chunks with content-derived ids.

A chunk's id hashes its source name and its text, so ingesting unchanged content again
produces the same ids (nothing to embed or write), and an edited section produces a new
id while the stale one is deleted. Ids are ASCII hex: every vector store accepts them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from rillet_runtime.retrieval.text import token_spans

MARKDOWN_SUFFIXES = (".md", ".markdown")
TEXT_SUFFIXES = (".txt",)
HTML_SUFFIXES = (".html", ".htm")
CORPUS_SUFFIXES = MARKDOWN_SUFFIXES + TEXT_SUFFIXES + HTML_SUFFIXES

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")


@dataclass(frozen=True)
class Passage:
    """A chunk's text, read by id for the hits only."""

    id: str
    title: str
    text: str
    source: str


@dataclass(frozen=True)
class Chunk:
    id: str
    title: str
    text: str
    source: str

    @property
    def metadata(self) -> dict[str, str]:
        """What an index stores beside the vector, and what filters can name."""
        return {"source": self.source, "title": self.title}


@dataclass(frozen=True)
class Section:
    title: str
    text: str


def _digest(text: str, chars: int = 16) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def chunk_id(source: str, title: str, text: str) -> str:
    content = _digest(title + "\0" + text)
    return f"{_digest(source)}-{content}"


def markdown_sections(text: str, default_title: str) -> list[Section]:
    """One section per heading; the document's first `# ` heading names the document."""
    doc_title = default_title
    sections: list[tuple[str, list[str]]] = [(doc_title, [])]
    for line in text.splitlines():
        found = _HEADING.match(line)
        if found:
            if found.group(1) == "#" and not any(s[1] for s in sections):
                doc_title = found.group(2).strip()
            sections.append((found.group(2).strip(), []))
        else:
            sections[-1][1].append(line)
    return [
        Section(doc_title if heading == doc_title else f"{doc_title}: {heading}", body)
        for heading, lines in sections
        if (body := "\n".join(lines).strip())
    ]


class _HTMLSections(HTMLParser):
    """Headings start sections; script, style and navigation chrome are dropped."""

    _SKIP = frozenset({"script", "style", "nav", "header", "footer", "noscript", "template"})
    _BLOCK = frozenset({"p", "div", "li", "br", "tr", "pre", "blockquote", "section"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page_title = ""
        self.sections: list[tuple[str, list[str]]] = [("", [])]
        self._skipping = 0
        self._in_title = False
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag == "title":
            self._in_title = True
        elif re.fullmatch(r"h[1-6]", tag):
            self._heading = []
        elif tag in self._BLOCK:
            self.sections[-1][1].append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag == "title":
            self._in_title = False
        elif re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.sections.append((" ".join("".join(self._heading).split()), []))
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._skipping:
            return
        if self._in_title:
            self.page_title += data
        elif self._heading is not None:
            self._heading.append(data)
        else:
            self.sections[-1][1].append(data)


def html_sections(text: str, default_title: str) -> list[Section]:
    parser = _HTMLSections()
    parser.feed(text)
    parser.close()
    doc_title = " ".join(parser.page_title.split()) or default_title
    sections = []
    for heading, parts in parser.sections:
        paragraphs = [" ".join(p.split()) for p in "".join(parts).split("\n\n")]
        body = "\n\n".join(p for p in paragraphs if p)
        if body:
            title = f"{doc_title}: {heading}" if heading and heading != doc_title else doc_title
            sections.append(Section(title, body))
    return sections


def read_sections(path: Path) -> list[Section]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix in HTML_SUFFIXES:
        return html_sections(text, path.stem)
    if path.suffix in MARKDOWN_SUFFIXES:
        return markdown_sections(text, path.stem)
    return [Section(path.stem, text.strip())] if text.strip() else []


def split_tokens(text: str, max_tokens: int, overlap: int) -> list[str]:
    """Windows of at most max_tokens, each starting `overlap` tokens before the last ended.

    A window ends at the last paragraph or sentence break inside it when there is one in
    its second half, so chunks rarely stop mid-sentence.
    """
    spans = token_spans(text)
    if len(spans) <= max_tokens:
        return [text.strip()] if text.strip() else []
    pieces: list[str] = []
    start = 0
    while start < len(spans):
        end = min(start + max_tokens, len(spans))
        if end < len(spans):
            for i in range(end - 1, start + max_tokens // 2, -1):
                gap = text[spans[i][1] : spans[i + 1][0]]
                if "\n\n" in gap or (text[spans[i][0] : spans[i][1]] in ".!?" and gap):
                    end = i + 1
                    break
        pieces.append(text[spans[start][0] : spans[end - 1][1]].strip())
        if end == len(spans):
            break
        start = max(end - overlap, start + 1)
    return pieces


def chunk_sections(
    sections: Sequence[Section], source: str, max_tokens: int, overlap: int
) -> list[Chunk]:
    chunks: list[Chunk] = []
    seen: set[str] = set()
    for section in sections:
        for piece in split_tokens(section.text, max_tokens, overlap):
            id_ = chunk_id(source, section.title, piece)
            if id_ not in seen:  # a repeated section is indexed once
                seen.add(id_)
                chunks.append(Chunk(id_, section.title, piece, source))
    return chunks


def corpus_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """Each file with the name it is cited by (relative to the folder given)."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        if root.is_file():
            found.append((root, root.name))
        elif root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.suffix.lower() in CORPUS_SUFFIXES and path.is_file():
                    found.append((path, path.relative_to(root).as_posix()))
        else:
            raise FileNotFoundError(f"{root}: no such file or folder")
    return found


def iter_chunks(
    files: Sequence[tuple[Path, str]], max_tokens: int, overlap: int
) -> Iterator[Chunk]:
    """The chunks of `corpus_files`' files, in order."""
    for path, name in files:
        yield from chunk_sections(read_sections(path), name, max_tokens, overlap)


def default_corpus_paths() -> list[Path]:
    """The project's own docs: bundled in the wheel, or the checkout's docs/ folder."""
    bundled = Path(__file__).resolve().parents[1] / "_corpus"
    if bundled.is_dir():
        return [bundled]
    checkout_docs = Path(__file__).resolve().parents[3] / "docs"
    return [checkout_docs] if checkout_docs.is_dir() else []
