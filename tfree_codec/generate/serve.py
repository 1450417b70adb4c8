"""``tfree serve``: a model behind an OpenAI-compatible HTTP API, as ``litgpt serve`` or vLLM put one.

    POST /v1/completions   {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed",
                            "echo", "stream", "stream_options"}: text completions, streamed as server-sent events
                            (``data: {...}`` lines, then ``data: [DONE]``) with ``"stream": true``
    GET  /v1/models        the one model served
    GET  /health           {"status": "ok"}

Any OpenAI client talks to it (``OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")``). "Tokens" are the
model's items: words for a T-FREE model, BPE tokens for the baseline. The standard library's threaded HTTP server
is enough here: a CPU model generates one request at a time (a lock), while the threads accept and parse others,
answer bad requests at once (a 4xx with a one-line reason, in OpenAI's error shape) and notice clients that hang
up: a client gone mid-stream ends its generation, never the server. It listens on 127.0.0.1 unless told otherwise:
there is no authentication.

As with ``LanguageModel.generate``, the words of each prompt join the model's dictionary (count 1) and stay for
later requests.
"""
from __future__ import annotations

import dataclasses
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..config import TfreeError
from ..decode.sampling import Sampling

MAX_BODY = 1 << 20          # bytes of a request body
MAX_STOP = 4                # stop strings per request (OpenAI's limit)
DEFAULT_MAX_TOKENS = 16     # OpenAI's default for /v1/completions
FINISH = {"eot": "stop", "stop": "stop", "length": "length"}
# Accepted and ignored (they change nothing here), or accepted only at their neutral value.
IGNORED = {"user", "stream_options"}
NEUTRAL = {"presence_penalty": 0, "frequency_penalty": 0, "best_of": 1, "suffix": None, "logprobs": None,
           "logit_bias": None}


class BadRequest(Exception):
    """A request refused with an HTTP status and one line."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(frozen=True)
class Completion:
    """A checked /v1/completions request: its prompts, how each choice is drawn (``sampling``, the seed of choice
    j being ``seed + j``), and how the answer is shaped."""

    prompts: tuple
    sampling: Sampling          # max_tokens, temperature, top_p, top_k, stop; its seed None (choices get their own)
    n: int
    seed: int | None
    echo: bool
    stream: bool
    include_usage: bool


# The request's own fields beside ``model`` and ``prompt`` (a Sampling's under OpenAI's names, and the answer's).
FIELDS = ("max_tokens", "temperature", "top_p", "top_k", "stop", "n", "seed", "echo", "stream")


def _number(body: dict, name: str, default, lo: float, hi: float, integer: bool = False):
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
        raise BadRequest(400, f"{name} must be {'an integer' if integer else 'a number'}, not {json.dumps(v)}", name)
    if not (lo <= v <= hi) or (isinstance(v, float) and not math.isfinite(v)):
        raise BadRequest(400, f"{name} must be in [{lo}, {hi}], not {v}", name)
    return v


def parse_completion(body, model_name: str, max_tokens_limit: int) -> Completion:
    """The request body, checked in full before any work; BadRequest names the first problem."""
    if not isinstance(body, dict):
        raise BadRequest(400, "the request body must be a JSON object")
    known = set(FIELDS) | {"model", "prompt"} | IGNORED
    unknown = sorted(set(body) - known - set(NEUTRAL))
    if unknown:
        raise BadRequest(400, f"unsupported parameter {unknown[0]!r}", unknown[0])
    for name, neutral in NEUTRAL.items():
        if body.get(name, neutral) not in (neutral, None):
            raise BadRequest(400, f"{name} is not supported (only {json.dumps(neutral)})", name)
    if body.get("model") != model_name:
        raise BadRequest(404, f"the model {body.get('model')!r} is not served here (this server has {model_name!r})",
                         "model")
    prompt = body.get("prompt")
    prompts = (prompt,) if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest(400, "prompt must be a string or a list of strings (token ids are not accepted)", "prompt")
    if not all(prompts):
        raise BadRequest(400, "prompt is empty", "prompt")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest(400, f"stop must be a non-empty string or a list of up to {MAX_STOP} of them", "stop")
    top_k = _number(body, "top_k", None, -1, 1 << 30, integer=True)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest(400, "stream_options must be an object", "stream_options")
    for name in ("echo", "stream"):
        if not isinstance(body.get(name, False), bool):
            raise BadRequest(400, f"{name} must be true or false", name)
    max_tokens = _number(body, "max_tokens", DEFAULT_MAX_TOKENS, 1, max_tokens_limit, True)
    temperature = float(_number(body, "temperature", 1.0, 0.0, 2.0))
    top_p = float(_number(body, "top_p", 1.0, 0.0, 1.0))
    try:  # the generator's own checks too (top_p 0 is no distribution), before any work
        sampling = Sampling(temperature, None if top_k in (None, -1, 0) else top_k, top_p, None, tuple(stop), max_tokens)
    except TfreeError as e:
        raise BadRequest(400, str(e)) from None
    return Completion(prompts=tuple(prompts), sampling=sampling, n=_number(body, "n", 1, 1, 16, integer=True),
                      seed=_number(body, "seed", None, 0, (1 << 63) - 1, integer=True),
                      echo=body.get("echo", False), stream=body.get("stream", False),
                      include_usage=bool(options.get("include_usage")))


class Server(ThreadingHTTPServer):
    """A ``LanguageModel`` served over HTTP; ``serve_forever()`` runs it, ``shutdown()`` stops it."""

    daemon_threads = True        # a client that never finishes its request does not keep the process alive
    allow_reuse_address = True

    def __init__(self, lm, host: str = "127.0.0.1", port: int = 8000, *, model_name: str = "tfree",
                 max_tokens_limit: int = 4096, log=None):
        self.lm, self.model_name, self.max_tokens_limit = lm, model_name, max_tokens_limit
        self.log = log or (lambda line: None)
        self.lock = threading.Lock()  # one generation at a time: the model and its dictionary are shared
        super().__init__((host, port), Handler)

    def warm_up(self) -> None:
        """Generate once, so that the first request does not pay for loading the kernels and building the
        dictionary's scorer. The prompt is a newline, a marker word every dictionary holds: nothing joins it."""
        self.lm.generate("\n", max_new_tokens=2, temperature=0)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def count(self, text: str) -> int:
        """The prompt's length in the model's items (words, or BPE tokens)."""
        return self.lm.vocabulary.count(text)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tfree"
    timeout = 60  # seconds a silent client may hold a connection

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per completion instead (``_complete``)

    # -- routing ---------------------------------------------------------------------------------------------------
    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model",
                                                         "created": 0, "owned_by": "tfree"}]})
        else:
            self._error(BadRequest(404, f"no such endpoint: GET {path}"))

    def do_POST(self):
        path = self.path.split("?")[0]
        try:
            body = self._body()
            if path != "/v1/completions":
                raise BadRequest(404, f"no such endpoint: POST {path} (this server has /v1/completions)")
            self._complete(parse_completion(body, self.server.model_name, self.server.max_tokens_limit))
        except BadRequest as e:
            self._error(e)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
            self.server.log(f"{self.client_address[0]}: the client hung up")

    def _not_allowed(self):
        self._error(BadRequest(405, f"{self.command} is not served here (GET /v1/models, POST /v1/completions)"))

    do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _body(self):
        n = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or n is None:
            raise BadRequest(411, "send the body with a Content-Length")
        if not n.isdigit() or int(n) > MAX_BODY:
            raise BadRequest(413, f"the request body is larger than {MAX_BODY} bytes")
        raw = self.rfile.read(int(n))
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise BadRequest(400, f"the request body is not JSON ({str(e).splitlines()[0]})") from None

    # -- completions -----------------------------------------------------------------------------------------------
    def _complete(self, req: Completion) -> None:
        srv, t0, rid = self.server, time.perf_counter(), f"cmpl-{secrets.token_hex(12)}"
        base = secrets.randbits(31) if req.seed is None else req.seed
        jobs = [(i * req.n + j, p, base + j) for i, p in enumerate(req.prompts) for j in range(req.n)]
        head = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": srv.model_name}
        usage = {"prompt_tokens": sum(srv.count(p) for p in req.prompts) * req.n, "completion_tokens": 0}
        with srv.lock:
            streams = [self._stream(p, req, seed) for _, p, seed in jobs]  # every argument checked before a byte goes out
            if req.stream:
                self._start_events()
            choices = []
            for (index, prompt, _), pieces in zip(jobs, streams):
                text, finish = [prompt] if req.echo else [], "length"
                if req.stream and req.echo:
                    self._event({**head, "choices": [_choice(index, prompt, None)]})
                for piece in pieces:
                    usage["completion_tokens"] += 1
                    finish = FINISH.get(piece.finish, finish)
                    if req.stream:
                        self._event({**head, "choices": [_choice(index, piece.text, piece.finish and finish)]})
                    else:
                        text.append(piece.text)
                choices.append(_choice(index, "".join(text), finish))
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if req.stream:
            if req.include_usage:
                self._event({**head, "choices": [], "usage": usage})
            self._event("[DONE]")
            self._chunk(b"")
        else:
            self._json(200, {**head, "choices": choices, "usage": usage})
        srv.log(f"{self.client_address[0]}: {len(jobs)} completion{'s' * (len(jobs) > 1)}, "
                f"{usage['completion_tokens']} {srv.lm.vocabulary.unit} in "
                f"{time.perf_counter() - t0:.2f} s{' (streamed)' if req.stream else ''}")

    def _stream(self, prompt, req: Completion, seed):
        """The generation loop's pieces for one choice (language_model.stream: words or tokens alike)."""
        try:
            return self.server.lm.stream(prompt, dataclasses.replace(req.sampling, seed=seed))
        except TfreeError as e:
            raise BadRequest(400, str(e)) from None

    # -- writing ---------------------------------------------------------------------------------------------------
    def _json(self, status: int, obj) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, e: BadRequest) -> None:
        self.server.log(f"{self.client_address[0]}: {e.status} {e.message}")
        kind = "not_found_error" if e.status == 404 else "invalid_request_error"
        self._json(e.status, {"error": {"message": e.message, "type": kind, "param": e.param, "code": None}})

    def _start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _event(self, obj) -> None:
        self._chunk(b"data: " + (obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


def _choice(index: int, text: str, finish) -> dict:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
