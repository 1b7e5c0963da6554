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

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from celery import Celery  # noqa: E402
from kombu import Queue  # noqa: E402
from litellm import Router  # noqa: E402

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
        deployments = []
        for path in os.environ["COMPARE_KEY_FILES"].split(os.pathsep):
            with open(path, encoding="utf-8") as f:
                secret = f.read().strip()
            deployments.append(
                {
                    "model_name": "pool",
                    "litellm_params": {
                        "model": "openai/" + os.environ.get("COMPARE_MODEL", "gpt-4o-mini"),
                        "api_base": os.environ["COMPARE_BASE_URL"],
                        "api_key": secret,
                    },
                }
            )
        _router = Router(model_list=deployments, num_retries=2, routing_strategy="simple-shuffle")
    return _router


@app.task(name="keyrelay_compare.complete")
def complete(job):
    started = time.monotonic()
    reply = {"id": job.get("id"), "pool": "pool", "metadata": job.get("metadata")}
    try:
        response = router().completion(
            model="pool", messages=[{"role": "user", "content": job["prompt"]}]
        )
        usage = response.usage
        reply.update(
            status="succeeded",
            text=response.choices[0].message.content,
            usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        )
    except Exception as e:  # a failed job still gets its result
        reply.update(status="failed", error={"kind": type(e).__name__, "message": str(e)})
    reply["latency_ms"] = int((time.monotonic() - started) * 1000)
    return reply
