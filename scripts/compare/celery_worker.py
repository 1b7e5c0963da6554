"""The Celery stack people deploy instead of keyrelay: a Celery task that sends
the job through a LiteLLM Router spread over the same API keys, late acks
(ack after the task ran, so a crash redelivers), persistent results published
with confirms to the job's `reply_to` queue by the `rpc://` result backend.

`cargo bench --bench keyrelay_bench -- celery` preloads the same jobs as Celery
protocol-2 messages into the same quorum queue and starts
`celery -A celery_worker worker` (prefork, one process per core). Configuration
comes from the environment (COMPARE_*), set by the bench.
"""

import os
import time

from celery import Celery
from kombu import Queue

import common

app = Celery("keyrelay_compare", broker=os.environ["COMPARE_AMQP_URL"], backend="rpc://")
app.conf.update(
    task_acks_late=True,
    # prefetch = multiplier x processes: the bench sets it to keyrelay's keys x concurrency.
    worker_prefetch_multiplier=int(os.environ.get("COMPARE_PREFETCH_MULTIPLIER", "64")),
    result_persistent=True,
    broker_transport_options={"confirm_publish": True},
    # Declared by the bench with keyrelay's own topology code: consume, never
    # redeclare. The x-queue-type argument is not dead config: it is how Celery
    # (worker_detect_quorum_queues) knows the queue is a quorum queue and uses
    # per-consumer QoS, which quorum queues require, instead of global QoS.
    task_queues=[
        Queue(
            os.environ["COMPARE_QUEUE"],
            no_declare=True,
            queue_arguments={"x-queue-type": "quorum"},
        )
    ],
    accept_content=["json"],
    task_serializer="json",
    result_serializer="json",
    broker_connection_retry_on_startup=True,
)

_router = None


def router():
    """Built in each worker process, after the fork."""
    global _router
    if _router is None:
        key_files = os.environ["COMPARE_KEY_FILES"].split(os.pathsep)
        model = os.environ.get("COMPARE_MODEL", common.DEFAULT_MODEL)
        _router = common.build_router(key_files, os.environ["COMPARE_BASE_URL"], model)
    return _router


@app.task(name="keyrelay_compare.complete")
def complete(job):
    started = time.monotonic()
    reply = common.new_reply(job)
    try:
        common.succeeded(reply, router().completion(model="pool", messages=common.messages_of(job)))
    except Exception as e:  # a failed job still gets its result
        common.failed(reply, e)
    reply["latency_ms"] = int((time.monotonic() - started) * 1000)
    return reply
