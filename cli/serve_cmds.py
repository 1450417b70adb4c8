"""``tfree serve``: a model behind an OpenAI-compatible HTTP API (tfree_codec/generate/serve.py)."""
from __future__ import annotations

import os

import click

from tfree_codec import TfreeError

from .common import friendly


@click.command()
@click.argument("model", required=False)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on (0.0.0.0: every interface; there is no authentication)")
@click.option("--port", type=int, default=8000, show_default=True, help="0: any free port (printed)")
@click.option("--model-name", help="the model's id in the API  [default: MODEL's folder name, or tfree-bundled]")
@click.option("--max-tokens-limit", type=int, default=4096, show_default=True,
              help="the most words (tokens) one request may ask for")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True,
              help="CPU threads for the model (one word at a time: 1 is usually fastest; 0: torch's default)")
@friendly
def serve(model, host, port, model_name, max_tokens_limit, device, threads):
    """Serve MODEL (a run or checkpoint directory; the bundled model if left out) with an OpenAI-compatible API:
    POST /v1/completions (streamed with "stream": true), GET /v1/models. One request generates at a time; a
    line per request goes to stderr. Ctrl-C stops it."""
    if not 0 <= port <= 65535:
        raise TfreeError(f"--port must be in 0..65535, not {port}")
    if threads < 0:
        raise TfreeError(f"--threads must be at least 0 (0: torch's default), not {threads}")
    if max_tokens_limit < 1:
        raise TfreeError(f"--max-tokens-limit must be at least 1, not {max_tokens_limit}")
    import torch

    import tfree_codec
    from tfree_codec.generate.serve import Server

    lm = tfree_codec.load(model, device)
    if threads:
        torch.set_num_threads(threads)
    name = model_name or (os.path.basename(os.path.normpath(model)) if model else "tfree-bundled")
    try:
        srv = Server(lm, host, port, model_name=name, max_tokens_limit=max_tokens_limit,
                     log=lambda line: click.echo(line, err=True))
    except OSError as e:
        raise TfreeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    srv.warm_up()
    click.echo(f"serving {lm.path} as {name!r} at {srv.url} (POST /v1/completions, GET /v1/models); Ctrl-C stops",
               err=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
