"""The command line: ``python -m llmbook.serve --checkpoint CKPT [--host H]
[--port P]`` serves a checkpoint over HTTP (localhost by default)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import uvicorn

from llmbook.checkpoint import load_model
from llmbook.generate import StaticCacheEngine
from llmbook.serve.app import create_app
from llmbook.serve.batcher import Batcher

__all__ = ["main", "LocalServer"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llmbook.serve",
        description="Serve an llmbook checkpoint with OpenAI's API "
        "(/v1/models, /v1/completions, /v1/chat/completions, streaming or "
        "not) and a chat page at /, with continuous batching.",
        epilog="exit status: 0 stopped (Ctrl-C); 2 bad input (a flag, the "
        "checkpoint file)",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file")
    parser.add_argument("--host", default="127.0.0.1", help="default: local")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--max-batch", type=int, default=8, help="requests decoded at once"
    )
    parser.add_argument(
        "--name", default=None, help="the model's name (default: the file's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    args = parser.parse_args(argv)
    path = Path(args.checkpoint)
    if args.max_batch < 1:
        print(
            f"{parser.prog}: error: --max-batch must be >= 1", file=sys.stderr
        )
        return 2
    try:
        model, tokenizer = load_model(path, device=args.device)
    except ValueError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    batcher = Batcher(StaticCacheEngine(model), args.max_batch).start()
    name = args.name or path.stem
    try:
        uvicorn.run(
            create_app(batcher, tokenizer, name),
            host=args.host,
            port=args.port,
            log_level="warning",
        )
    finally:
        batcher.close()
    return 0


class LocalServer:
    """The server of ``main`` on 127.0.0.1, a free port, in a thread of its
    own, for a notebook or a test to be its clients: ``url``, ``port``,
    ``batcher``; ``stop()`` ends it. ``start=False`` leaves the batcher
    stopped (requests then wait in its queue)."""

    def __init__(
        self,
        model,
        tokenizer,
        name: str = "book",
        max_batch: int = 8,
        max_waiting: int = 64,
        start: bool = True,
    ):
        engine = StaticCacheEngine(model)
        self.batcher = Batcher(engine, max_batch, max_waiting)
        if start:
            self.batcher.start()
        app = create_app(self.batcher, tokenizer, name)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="error"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.batcher.close()
