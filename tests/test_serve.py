"""`tfree serve`: the bundled model behind the OpenAI API, spoken to by the `openai` client. One server for the
module, on a free loopback port, in a thread of this process; every call is bounded in time."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

openai = pytest.importorskip("openai")

NAME = "tfree-bundled"
PROMPT = "It is a truth universally"


@pytest.fixture(scope="module")
def server(one_thread):
    import tfree_codec
    from tfree_codec.generate.serve import Server

    lines = []
    srv = Server(tfree_codec.load(device="cpu"), "127.0.0.1", 0, model_name=NAME, max_tokens_limit=64,
                 log=lines.append)
    srv.warm_up()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    srv.lines = lines
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="-", timeout=30, max_retries=0)


def test_a_completion_is_the_library_generation(server, client):
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=6, temperature=0.7, seed=5)
    c = r.choices[0]
    assert c.text == server.lm.generate(PROMPT, max_new_tokens=6, temperature=0.7, top_p=1.0, seed=5)
    assert c.finish_reason == "length" and r.model == NAME and r.object == "text_completion"
    n = len(server.lm.codec.split(PROMPT))  # "tokens" are words
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (n, 6, n + 6)
    assert [m.id for m in client.models.list().data] == [NAME]


def test_streamed_pieces_add_up_to_the_completion(client):
    whole = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text and len([c for c in chunks if c.choices]) == 8
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 8 and not chunks[-1].choices


def test_several_prompts_choices_echo_and_stop(server, client):
    r = client.completions.create(model=NAME, prompt=["Emma was", "He said"], n=2, max_tokens=5, temperature=0.9,
                                  seed=1, echo=True, stop=["\n"])
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    for c, (p, seed) in zip(r.choices, [("Emma was", 1), ("Emma was", 2), ("He said", 1), ("He said", 2)]):
        assert c.text == p + server.lm.generate(p, max_new_tokens=5, temperature=0.9, top_p=1.0, seed=seed, stop=["\n"])
        assert "\n" not in c.text and c.finish_reason in ("stop", "length")


@pytest.mark.parametrize("kw, status, says", [
    ({"max_tokens": 0}, 400, "max_tokens must be in [1, 64]"),
    ({"max_tokens": 65}, 400, "max_tokens must be in [1, 64]"),
    ({"temperature": 3}, 400, "temperature must be in"),
    ({"top_p": 0}, 400, "top_p must be in (0, 1]"),
    ({"seed": -1}, 400, "seed must be in [0, "),
    ({"logprobs": 2}, 400, "logprobs is not supported"),
    ({"prompt": [1, 2, 3]}, 400, "prompt must be a string or a list of strings"),
    ({"prompt": ""}, 400, "prompt is empty"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop must be"),
    ({"extra_body": {"best": 1}}, 400, "unsupported parameter 'best'"),
    ({"model": "gpt-4"}, 404, "the model 'gpt-4' is not served here"),
])
def test_bad_requests_get_a_4xx_and_one_line(client, kw, status, says):
    args = {"model": NAME, "prompt": PROMPT, "max_tokens": 4, **kw}
    with pytest.raises(openai.APIStatusError) as e:
        client.completions.create(**args)
    msg = e.value.body["message"]
    assert e.value.status_code == status and says in msg and "\n" not in msg


def raw(server, method, path, body=None, headers=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    out = r.status, json.loads(r.read())
    conn.close()
    return out


def test_bad_http_gets_a_4xx_and_one_line(server):
    assert raw(server, "POST", "/v1/completions", b"{not json")[0] == 400
    status, body = raw(server, "POST", "/v1/chat/completions", b"{}")
    assert status == 404 and "/v1/completions" in body["error"]["message"]
    assert raw(server, "GET", "/nowhere")[0] == 404 and raw(server, "DELETE", "/v1/completions")[0] == 405
    assert raw(server, "POST", "/v1/completions", b"[]")[1]["error"]["message"] == "the request body must be a JSON object"
    assert raw(server, "GET", "/health") == (200, {"status": "ok"})


def test_a_client_gone_mid_stream_does_not_stop_the_server(server, client):
    body = json.dumps({"model": NAME, "prompt": PROMPT, "max_tokens": 64, "temperature": 1, "stream": True}).encode()
    s = socket.create_connection(server.server_address[:2], timeout=30)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b"data: " not in got:
        got += s.recv(4096)
    s.close()  # mid-stream: the first words are out, the rest never read
    t_end = time.monotonic() + 30
    while not any("hung up" in line for line in server.lines) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert any("hung up" in line for line in server.lines)
    r = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=3, temperature=0)
    assert r.choices[0].text and r.usage.completion_tokens == 3


@pytest.mark.slow  # a tfree subprocess loads the bundled model
def test_tfree_serve_listens_on_loopback_and_stops_on_ctrl_c():
    p = subprocess.Popen([sys.executable, "-m", "tfree_cli", "serve", "--port", "0", "--device", "cpu"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONUNBUFFERED": "1"},
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even from a background job
    try:
        line = p.stderr.readline()  # "serving ... at http://127.0.0.1:PORT/v1 ..." once it listens
        assert " at http://127.0.0.1:" in line, line + p.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "/models", timeout=30) as r:
            assert json.loads(r.read())["data"][0]["id"] == NAME
        p.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = p.communicate(timeout=10)
        assert p.returncode == 130 and time.monotonic() - t0 < 2 and err.strip().splitlines()[-1] == "interrupted"
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
