"""Serving throughput: concurrent greedy chat requests, batched by the worker against one at a time.

Starts ``finjust serve``'s app twice on loopback, once with ``--max-batch N`` and once with
``--max-batch 1``, over the same loaded model (by default the shipped SmolLM2-135M; or a run
or exported folder), and sends the first C demo test questions at once from C client threads
with the official openai client, a few rounds each. Prints requests and answer tokens per
second both ways and the ratios (in bf16 a batch can round an answer differently from one
request alone, so their lengths, and with them the two ratios, may part). Run it on an
otherwise idle machine.

    python benchmarks/serve_speed.py [--source RUN_OR_MODEL_DIR] [--concurrent 16] [--max-tokens 32]
                                     [--max-batch 16] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import uvicorn
from common import DEMO_DATA

from finjust.cli.arguments import output_file, positive_int

try:
    import openai
except ImportError:  # the client is in the test extra, not finjust's own dependencies
    sys.exit("serve_speed.py needs the openai client: pip install 'finjust[test]' (make test's venv has it)")

from finjust import atomic
from finjust.data.load import load_examples
from finjust.models.load import resolve_model_folder
from finjust.serve import ServedModel, ServeOptions, create_app, load_served_model


def throughput(served: ServedModel, max_batch: int, questions: list[str], max_tokens: int,
               rounds: int) -> tuple[float, float]:  # fmt: skip
    """Serve on a free loopback port and time ``rounds`` bursts of all ``questions`` at once:
    (requests, answer tokens) per second."""
    app = create_app(served, ServeOptions(max_batch=max_batch))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():  # uvicorn logged why and left its thread
            raise RuntimeError("the server did not start (see uvicorn's message above)")
        time.sleep(0.01)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}/v1", api_key="none",
                           max_retries=0, timeout=600)  # fmt: skip

    def ask(question: str) -> int:
        messages = [{"role": "user", "content": question}]
        reply = client.chat.completions.create(model=served.name, messages=messages, max_tokens=max_tokens)
        return reply.usage.completion_tokens

    try:
        with ThreadPoolExecutor(len(questions)) as pool:
            list(pool.map(ask, questions))  # warm-up: a full batch, as the timed bursts send
            started = time.perf_counter()
            tokens = sum(sum(pool.map(ask, questions)) for _ in range(rounds))
            seconds = time.perf_counter() - started
            return rounds * len(questions) / seconds, tokens / seconds
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="a run or exported model folder (default: the shipped SmolLM2-135M)")
    parser.add_argument("--concurrent", type=positive_int, default=16)
    parser.add_argument("--max-tokens", type=positive_int, default=32)
    parser.add_argument("--max-batch", type=positive_int, default=16)
    parser.add_argument("--rounds", type=positive_int, default=2)
    parser.add_argument("--json", metavar="PATH", type=output_file)
    args = parser.parse_args(argv)
    source = args.source or resolve_model_folder("smollm2-135m-instruct")
    served = load_served_model(source)
    questions = [e.messages[0].content for e in load_examples(DEMO_DATA / "test.jsonl")[: args.concurrent]]
    batched, batched_tokens = throughput(served, args.max_batch, questions, args.max_tokens, args.rounds)
    single, single_tokens = throughput(served, 1, questions, args.max_tokens, args.rounds)
    result = {"source": str(source), "concurrent": len(questions), "max_tokens": args.max_tokens,
              "max_batch": args.max_batch, "rounds": args.rounds, "batched_requests_per_second": batched,
              "single_requests_per_second": single, "batched_over_single": batched / single,
              "batched_tokens_per_second": batched_tokens, "single_tokens_per_second": single_tokens,
              "batched_over_single_tokens": batched_tokens / single_tokens}  # fmt: skip
    print(f"{len(questions)} concurrent requests, max_tokens {args.max_tokens}: --max-batch {args.max_batch}: "
          f"{batched:.2f} req/s ({batched_tokens:.0f} answer tokens/s); --max-batch 1: {single:.2f} req/s "
          f"({single_tokens:.0f} tokens/s); ratio {batched / single:.2f}x requests, "
          f"{batched_tokens / single_tokens:.2f}x tokens")  # fmt: skip
    if args.json:
        atomic.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
