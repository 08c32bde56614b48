"""The input caps every chat endpoint shares: `limits.max_messages` messages and
`limits.max_input_chars` characters over all of them. Past either, 422 in the one error
shape, naming the field, before the request costs a stream slot, a lease or a model call.
(The native `message` also has a fixed schema cap, 32,000 characters; the lower one holds.)"""

from __future__ import annotations

from collections.abc import Sequence

from rillet_runtime.api.errors import ApiError
from rillet_runtime.settings import LimitsSettings


def check_input(texts: Sequence[str], limits: LimitsSettings, field: str) -> None:
    """`texts`: the request's messages' text, as the model will see them."""
    if len(texts) > limits.max_messages:
        message = f"{field}: {len(texts)} messages; at most {limits.max_messages}"
        raise ApiError(422, "invalid_request", message, param=field)
    chars = sum(len(text) for text in texts)
    if chars > limits.max_input_chars:
        message = f"{field}: {chars} characters of input; at most {limits.max_input_chars}"
        raise ApiError(422, "invalid_request", message, param=field)
