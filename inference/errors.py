"""The error a photo or video that cannot be scored carries: one stable code, one message.

Its own module so that the photo path (``engine``) and the video path (``video``) raise the same error
without importing each other.
"""

from __future__ import annotations

from flexguard.models.vocabulary import ErrorCode


class ImageError(ValueError):
    """A photo or video that cannot be scored; ``code`` is stable for clients to branch on."""

    def __init__(self, code: ErrorCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message
