"""The one error a bad retrieval configuration raises: it names the setting."""

from __future__ import annotations


class RetrievalConfigError(ValueError):
    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
