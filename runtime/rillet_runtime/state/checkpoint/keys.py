"""Where checkpoints live in Redis. Every key of a thread carries the hash tag `{thread}`,
so a thread lives in one cluster slot and one Lua script can touch all of it. Per thread and
namespace:

    rillet:cp:{t}:ns            SET    namespaces of the thread
    rillet:cp:{t}:info          HASH   bytes: what the thread holds (kept by the scripts);
                                       pruned\\0<ns>: the newest checkpoint id retention dropped
    rillet:cp:{t}:<ns>:idx      ZSET   checkpoint ids (score 0, ordered by id: newest last)
    rillet:cp:{t}:<ns>:cps      HASH   <id> checkpoint, <id>\\0m metadata, <id>\\0p parent,
                                       <id>\\0v the blob fields it references, <id>\\0r its run
    rillet:cp:{t}:<ns>:blobs    HASH   <channel>\\0<version> -> value, written once per version
    rillet:cp:{t}:<ns>:writes   HASH   <id>\\0<task>\\0<idx> -> pending write
    rillet:cp:{t}:<ns>:wfields  ZSET   the writes' fields, for lookup by checkpoint id
    rillet:cp:run:{r}           SET    <thread>\\0<ns>\\0<id> of each checkpoint a run wrote
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ROOT = "rillet:cp"
# The keys of one namespace, in the order `ThreadKeys.ns` returns them; the scripts' list too.
NS_SUFFIXES = (":idx", ":cps", ":blobs", ":writes", ":wfields")
NS_SET_PATTERN = f"{ROOT}:{{*}}:ns"  # every thread's namespace set, for listing all threads


def escape(part: str) -> str:
    """Keep `{`, `}` and `:` out of key parts so the hash tag and the layout stay intact."""
    return part.replace("%", "%25").replace("{", "%7B").replace("}", "%7D").replace(":", "%3A")


def unescape(part: str) -> str:
    return part.replace("%3A", ":").replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


def text(value: bytes | str) -> str:
    """Keys and members come back from Redis as bytes."""
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class ThreadKeys:
    thread_id: str

    @property
    def prefix(self) -> str:
        return f"{ROOT}:{{{escape(self.thread_id)}}}:"

    @property
    def ns_set(self) -> str:
        return self.prefix + "ns"

    @property
    def info(self) -> str:
        return self.prefix + "info"

    def ns(self, checkpoint_ns: str) -> list[str]:
        """idx, cps, blobs, writes, wfields of one namespace."""
        base = self.prefix + escape(checkpoint_ns)
        return [base + suffix for suffix in NS_SUFFIXES]

    def all_keys(self, namespaces: Sequence[str]) -> list[str]:
        return [self.ns_set, self.info, *(key for ns in namespaces for key in self.ns(ns))]


def thread_of_ns_set(key: bytes | str) -> str:
    """The thread id back from its namespace set's key."""
    return unescape(text(key)[len(ROOT) + 2 : -len("}:ns")])


def run_key(run_id: str) -> str:
    return f"{ROOT}:run:{{{escape(run_id)}}}"


def run_member(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> str:
    return f"{thread_id}\0{checkpoint_ns}\0{checkpoint_id}"


def parse_run_member(member: bytes | str) -> tuple[str, str, str]:
    """thread id, namespace and checkpoint id of a run-index member."""
    thread_id, checkpoint_ns, checkpoint_id = text(member).split("\0")
    return thread_id, checkpoint_ns, checkpoint_id
