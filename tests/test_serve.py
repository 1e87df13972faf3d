"""The server, tested with real clients: OpenAI's own Python client and raw
HTTP, against a server started on localhost (no mocks).

Every greedy answer must equal what the engine generates for the same
request alone; many clients at once must all get their answers; bad input
gets the right status and OpenAI's error shape, and the server keeps
serving."""

import http.client
import json
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
import torch

from llmbook.finetune import add_special_tokens, resize_vocab
from llmbook.generate import generate
from llmbook.model import GPT, GPTConfig
from llmbook.serve import LocalServer, chat_prompt
from llmbook.serve.app import Message
from llmbook.tokenizer import EOT, Tokenizer, train_bpe

TEXT = (
    "ROMEO: But soft, what light through yonder window breaks?\n"
    "JULIET: O Romeo, Romeo, wherefore art thou Romeo?\n"
) * 20
NAME = "tiny"


@pytest.fixture(scope="module")
def tokenizer():
    vocab, merges = train_bpe(TEXT, 300, special_tokens=[EOT])
    return add_special_tokens(Tokenizer(vocab, merges, special_tokens=[EOT]))


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    sizes = dict(vocab_size=300, block_size=64, n_layer=2, n_head=2)
    gpt = GPT(GPTConfig.preset("tiny", n_embd=32, **sizes))
    with torch.no_grad():
        gpt.wte.weight.mul_(20.0)  # far from uniform: no argmax ties
    gen = torch.Generator().manual_seed(0)
    return resize_vocab(gpt, tokenizer.vocab_size, gen).eval()


class Server(LocalServer):
    """llmbook.serve's server on localhost, with a client or two."""

    def __init__(self, model, tokenizer, **kw):
        super().__init__(model, tokenizer, NAME, **kw)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused")

    def post(self, path: str, body: bytes) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path,
            body,
            {"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(model, tokenizer):
    s = Server(model, tokenizer)
    yield s
    s.stop()


def alone(model, tokenizer, text, n, stops):
    """The engine's greedy answer to one prompt, alone, as text."""
    ids = generate(
        model, tokenizer.encode(text), n, temperature=0, stop_ids=stops
    )
    ids = ids[:-1] if ids and ids[-1] in stops else ids
    return tokenizer.decode(ids)


PROMPTS = ["ROMEO: But", "JULIET: O Romeo", "What light", "yonder window"]


def test_models_and_health(server):
    assert [m.id for m in server.client().models.list()] == [NAME]
    with urllib.request.urlopen(server.url + "/health") as r:
        assert json.loads(r.read())["status"] == "ok"


def test_completion_equals_the_engine_alone(server, model, tokenizer):
    client = server.client()
    for prompt in PROMPTS:
        got = client.completions.create(
            model=NAME, prompt=prompt, max_tokens=12, temperature=0
        )
        want = alone(model, tokenizer, prompt, 12, [tokenizer.eot_id])
        assert got.choices[0].text == want
        assert got.usage.prompt_tokens == len(tokenizer.encode(prompt))
        chunks = client.completions.create(
            model=NAME,
            prompt=prompt,
            max_tokens=12,
            temperature=0,
            stream=True,
        )
        assert "".join(c.choices[0].text for c in chunks) == want


def test_chat_uses_the_instruction_format(server, model, tokenizer):
    client = server.client()
    messages = [{"role": "user", "content": "Who is Romeo?"}]
    text, stops = chat_prompt(tokenizer, [Message(**m) for m in messages])
    assert text == "<|instruction|>Who is Romeo?<|response|>"
    want = alone(model, tokenizer, text, 16, stops)
    got = client.chat.completions.create(
        model=NAME, messages=messages, max_tokens=16, temperature=0
    )
    assert got.choices[0].message.content == want
    stream = client.chat.completions.create(
        model=NAME,
        messages=messages,
        max_tokens=16,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert "".join(pieces) == want


def test_many_clients_at_once_each_get_their_own_answer(model, tokenizer):
    """More streaming clients than rows: they wait, join as rows free up,
    and every answer equals the same request alone; none is lost."""
    server = Server(model, tokenizer, max_batch=3)
    try:
        asks = [PROMPTS[i % len(PROMPTS)] + " " * (i // 4) for i in range(8)]
        answers = [None] * len(asks)

        def ask(i):
            stream = server.client().completions.create(
                model=NAME,
                prompt=asks[i],
                max_tokens=20,
                temperature=0,
                stream=True,
            )
            answers[i] = "".join(c.choices[0].text for c in stream)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        for i, prompt in enumerate(asks):
            eot = [tokenizer.eot_id]
            assert answers[i] == alone(model, tokenizer, prompt, 20, eot), i
    finally:
        server.stop()


def test_bad_input_gets_the_right_status_and_a_message(server):
    client = server.client()
    status, body = server.post("/v1/completions", b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = server.post("/v1/completions", b'{"model": "tiny"}')
    assert status == 400 and "prompt" in body["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-9", prompt="hi")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=NAME, prompt="hi", max_tokens=-1)
    with pytest.raises(openai.BadRequestError, match="ask for at most"):
        client.completions.create(model=NAME, prompt="hi", max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="context is 64"):
        client.completions.create(model=NAME, prompt="Romeo " * 200)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=NAME, prompt="hi", temperature=-1)
    # and it still serves
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=2)


def test_a_client_that_leaves_mid_stream_frees_its_row(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps(
        dict(
            model=NAME,
            prompt="ROMEO:",
            max_tokens=40,
            stream=True,
            temperature=0,
        )
    )
    conn.request(
        "POST", "/v1/completions", body, {"Content-Type": "application/json"}
    )
    response = conn.getresponse()
    assert response.status == 200
    response.fp.readline()  # the first event: it is running
    conn.sock.close()  # gone, mid-stream
    conn.close()
    client = server.client()
    assert client.completions.create(model=NAME, prompt="hi", max_tokens=3)
    deadline = time.time() + 10
    while server.batcher.load()["active"] and time.time() < deadline:
        time.sleep(0.05)
    assert server.batcher.load() == dict(active=0, waiting=0)


def test_a_full_queue_answers_503(model, tokenizer):
    """One row, no waiting room, and a batcher that does not run (so that
    the first request holds the row for as long as the test needs)."""
    server = Server(model, tokenizer, max_batch=1, max_waiting=0, start=False)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port)
        body = json.dumps(
            dict(model=NAME, prompt="ROMEO:", max_tokens=4, stream=True)
        )
        conn.request(
            "POST",
            "/v1/completions",
            body,
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 200  # it holds the one row
        with pytest.raises(openai.APIStatusError) as e:
            server.client().with_options(max_retries=0).completions.create(
                model=NAME, prompt="hi", max_tokens=2
            )
        assert e.value.status_code == 503
        assert "try again later" in str(e.value)
        conn.close()
    finally:
        server.stop()


def test_the_chat_page_streams_an_answer_in_a_real_browser(
    server, model, tokenizer
):
    """Headless Chromium (the website test's) types into the chat page and
    sees the answer the engine gives, streamed; nothing leaves localhost."""
    import os
    import tempfile
    from pathlib import Path

    chromium = os.environ.get("LLMBOOK_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.skip(f"no Chromium at {chromium}: bash .ci/install --browser")
    sync_api = pytest.importorskip("playwright.sync_api")
    text, stops = chat_prompt(tokenizer, [Message(role="user", content="Hi")])
    want = alone(model, tokenizer, text, 32, stops)  # half the context
    flags = ["--headless", "--no-sandbox", "--disable-dev-shm-usage"]
    outside = []
    with tempfile.TemporaryDirectory() as profile:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=flags
            )
            browser.route(
                lambda url: not url.startswith(server.url),
                lambda route: (
                    outside.append(route.request.url),
                    route.abort(),
                ),
            )
            page = browser.new_page()
            errors = []
            page.on(
                "console",
                lambda m: errors.append(m.text) if m.type == "error" else 0,
            )
            page.goto(server.url + "/")
            page.fill("#message", "Hi")
            page.click("#send")
            answer = page.locator("#log .assistant")
            page.wait_for_selector(
                "#log .assistant[data-done=true]", state="attached"
            )
            assert want and answer.text_content() == want
            browser.close()
    assert not errors and not outside
