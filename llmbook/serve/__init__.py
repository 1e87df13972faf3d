"""Part V, serving: the model behind OpenAI's API, with continuous batching.

- ``batcher``  ``Batcher``: requests join a running batch and leave it when
               done, on a ``StaticCacheEngine`` (one thread owns the model)
- ``app``      ``create_app``: the FastAPI app, /v1/models,
               /v1/completions, /v1/chat/completions (streaming or not),
               /health, and the chat page ``chat.html``
- ``cli``      ``python -m llmbook.serve --checkpoint CKPT``; ``LocalServer``,
               the same server in a thread (notebooks, tests)
"""

from llmbook.serve.app import chat_prompt, create_app
from llmbook.serve.batcher import Batcher, Busy, Request
from llmbook.serve.cli import LocalServer

__all__ = [
    "Batcher",
    "Busy",
    "Request",
    "create_app",
    "chat_prompt",
    "LocalServer",
]
