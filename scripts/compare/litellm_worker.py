"""The worker people write instead of keyrelay: an aio-pika consumer that sends
each job through a LiteLLM Router spread over the same API keys, publishes the
reply with a publisher confirm, then acks.

`cargo bench --bench keyrelay_bench -- litellm` starts it against the same
preloaded quorum queue and mock provider as `e2e`, and measures it the same way
(see docs/performance.md). Run `scripts/compare/setup.sh` once first.

What it does not do, and keyrelay does: store results durably before replying
(so a redelivered job is answered without a second call), dead-letter bad
input with a reason, retry on another key with a backoff queue, park an
exhausted key until its quota resets, export per-key metrics.
"""

import argparse
import asyncio
import json
import random
import sys
import time

import common  # first: it sets LiteLLM's environment before litellm loads

import aio_pika
import litellm
from litellm.types.router import RouterRateLimitError

# With --retry-rate-limited: tries before a rate-limited job fails.
RATE_LIMIT_ATTEMPTS = 10


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True, help="job queue (declared already)")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL")
    parser.add_argument("--key-file", action="append", required=True, help="one per key")
    parser.add_argument("--model", default=common.DEFAULT_MODEL)
    parser.add_argument("--prefetch", type=int, default=128)
    parser.add_argument(
        "--retry-rate-limited",
        action="store_true",
        help="when the Router reports a rate limit (a 429, or every deployment cooling "
        "down), wait as long as it says (or back off exponentially) and try again "
        "instead of failing the job",
    )
    parser.add_argument(
        "--rpm",
        type=int,
        help="each key's requests per minute: the Router then routes by usage "
        "(usage-based-routing-v2) and keeps each deployment under it",
    )
    return parser.parse_args()


def router_for(args):
    return common.build_router(args.key_file, args.base_url, args.model, args.rpm)


async def call(router, job, retry_rate_limited):
    messages = common.messages_of(job)
    for attempt in range(RATE_LIMIT_ATTEMPTS):
        try:
            return await router.acompletion(model="pool", messages=messages)
        # A 429 that got through, or the Router's own "every deployment is cooling down".
        except (litellm.RateLimitError, RouterRateLimitError) as e:
            if not retry_rate_limited or attempt + 1 == RATE_LIMIT_ATTEMPTS:
                raise
            await asyncio.sleep(retry_delay(e, attempt))


def retry_delay(error, attempt):
    """The wait the error asks for (the Router's cooldown, or the provider's
    retry-after), with jitter; exponential backoff when it gives none."""
    hint = getattr(error, "cooldown_time", None)
    if not hint:
        hint = retry_after_seconds(error)
    if hint:
        return float(hint) * random.uniform(1.0, 1.1)
    return min(2**attempt, 30) * random.uniform(0.5, 1.0)


def retry_after_seconds(error):
    headers = getattr(error, "litellm_response_headers", None)
    if not headers:
        response = getattr(error, "response", None)
        headers = getattr(response, "headers", None) or {}
    try:
        if "retry-after-ms" in headers:
            return float(headers["retry-after-ms"]) / 1000
        if "retry-after" in headers:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        pass
    return None


async def answer(router, job, retry_rate_limited):
    started = time.monotonic()
    reply = common.new_reply(job)
    try:
        common.succeeded(reply, await call(router, job, retry_rate_limited))
    except Exception as e:  # a failed job still gets its reply
        common.failed(reply, e)
    reply["latency_ms"] = int((time.monotonic() - started) * 1000)
    return reply


async def handle(router, channel, message, retry_rate_limited):
    try:
        job = json.loads(message.body)
        if not isinstance(job, dict):
            raise ValueError("a job is a JSON object")
        reply = await answer(router, job, retry_rate_limited)
    except (ValueError, KeyError) as e:
        reply = {"status": "failed", "error": {"kind": "invalid_job", "message": str(e)}}
    try:
        # With publisher confirms on the channel, publish returns once the broker confirmed.
        await channel.default_exchange.publish(
            aio_pika.Message(
                body=json.dumps(reply).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=message.correlation_id,
            ),
            routing_key=message.reply_to or "",
            mandatory=True,
        )
    except Exception as e:  # no reply, no ack: the job goes back to the queue
        print(f"reply to {message.reply_to!r} failed: {e!r}", file=sys.stderr, flush=True)
        await message.nack(requeue=True)
        return
    await message.ack()


async def main():
    args = parse_args()
    router = router_for(args)
    connection = await aio_pika.connect(args.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=args.prefetch)
    queue = await channel.get_queue(args.queue, ensure=False)
    tasks = set()

    async def on_message(message):
        task = asyncio.create_task(handle(router, channel, message, args.retry_rate_limited))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await queue.consume(on_message)
    print("consuming", file=sys.stderr, flush=True)
    await asyncio.Future()  # until the bench terminates the process


if __name__ == "__main__":
    asyncio.run(main())
