"""Handler of the ``text`` demo model: ``{"tokens": [ids]}`` or ``{"text": "words"}``."""

from __future__ import annotations

import zlib
from typing import Any

import torch

from tsadapt.handlers.base import AdaptiveHandler, InvalidRequest
from tsadapt.handlers.models.text_encoder import MAX_TOKENS, PAD_ID, VOCAB_SIZE


def hash_tokenize(text: str) -> list[int]:
    """Deterministic word-hash tokenizer (ids 1..VOCAB_SIZE-1; 0 is padding)."""
    return [1 + zlib.crc32(word.encode()) % (VOCAB_SIZE - 1) for word in text.lower().split()]


def token_ids(body: dict[str, Any]) -> list[int]:
    """The validated token ids of one request."""
    if "tokens" not in body and "text" not in body:
        raise InvalidRequest("missing field 'tokens' (list of token ids) or 'text' (a string)")
    if "tokens" in body and "text" in body:
        raise InvalidRequest("send exactly one of the fields 'tokens' or 'text', not both")
    if "text" in body:
        if not isinstance(body["text"], str):
            raise InvalidRequest("field 'text' must be a string")
        ids = hash_tokenize(body["text"])
    else:
        ids = body["tokens"]
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise InvalidRequest("field 'tokens' must be a list of integers")
        bad = [i for i in ids if not 0 < i < VOCAB_SIZE]
        if bad:
            raise InvalidRequest(f"field 'tokens' holds ids outside 1..{VOCAB_SIZE - 1}: {bad[:5]}")
    if not ids:
        raise InvalidRequest("no tokens: the input is empty")
    if len(ids) > MAX_TOKENS:
        raise InvalidRequest(f"input too long: {len(ids)} tokens, at most {MAX_TOKENS}")
    return ids


class TextHandler(AdaptiveHandler):
    """Classifies one token sequence per request; pads the batch to its longest sequence."""

    def parse_request(self, body: dict[str, Any]) -> torch.Tensor:
        return torch.tensor(token_ids(body), dtype=torch.long)

    def collate(self, items: list[torch.Tensor]) -> torch.Tensor:
        return torch.nn.utils.rnn.pad_sequence(items, batch_first=True, padding_value=PAD_ID)

    def warmup_input(self) -> torch.Tensor:
        return torch.ones(MAX_TOKENS // 2, dtype=torch.long)
