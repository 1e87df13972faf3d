"""Text out, as it is produced: token ids to text without splitting
characters."""

from __future__ import annotations

import codecs

__all__ = ["TextStream"]


class TextStream:
    """Turn token ids into text as they arrive, without splitting characters.

    A byte-level BPE token can end in the middle of a multi-byte UTF-8
    character (an accented letter, an emoji); decoding it alone would print a
    replacement character. With a tokenizer that has ``decode_bytes`` (ours),
    the bytes go through an incremental UTF-8 decoder, which holds back an
    unfinished character until its last byte arrives. With only ``decode``
    (e.g. tiktoken), ids wait until their text no longer ends in U+FFFD, at
    most ``max_pending`` of them (then invalid bytes are let through).
    """

    def __init__(self, tokenizer, max_pending: int = 8):
        self._bytes = getattr(tokenizer, "decode_bytes", None)
        self._decode = tokenizer.decode
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.max_pending = max_pending
        self.pending: list[int] = []

    def push(self, token_id: int) -> str:
        """Add one id; return the text that is now complete (maybe '')."""
        if self._bytes is not None:
            return self._utf8.decode(self._bytes([int(token_id)]))
        self.pending.append(int(token_id))
        text = self._decode(self.pending)
        if text.endswith("\ufffd") and len(self.pending) < self.max_pending:
            return ""
        self.pending = []
        return text

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation)."""
        if self._bytes is not None:
            return self._utf8.decode(b"", final=True)
        text = self._decode(self.pending) if self.pending else ""
        self.pending = []
        return text
