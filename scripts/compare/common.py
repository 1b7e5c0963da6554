"""What both comparison workers share: the Router over the keys and the reply
a job gets (the fields keyrelay's replies carry that the bench reads back)."""

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from litellm import Router  # noqa: E402

# A model LiteLLM knows: an unknown one sends every call through its zero-cost
# diagnostics, which a real deployment would not pay.
DEFAULT_MODEL = "gpt-4o-mini"


def build_router(key_files, base_url, model=DEFAULT_MODEL, rpm=None):
    """One deployment per key under one model group ("pool"): the Router
    spreads calls over them and cools a deployment down after rate-limit
    errors. With `rpm`, it routes by usage and keeps each deployment under it."""
    deployments = []
    for path in key_files:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
        params = {"model": f"openai/{model}", "api_base": base_url, "api_key": secret}
        if rpm:
            params["rpm"] = rpm
        deployments.append({"model_name": "pool", "litellm_params": params})
    strategy = "usage-based-routing-v2" if rpm else "simple-shuffle"
    return Router(model_list=deployments, num_retries=2, routing_strategy=strategy)


def messages_of(job):
    return [{"role": "user", "content": job["prompt"]}]


def new_reply(job):
    return {"id": job.get("id"), "pool": "pool", "metadata": job.get("metadata")}


def succeeded(reply, response):
    usage = response.usage
    reply.update(
        status="succeeded",
        text=response.choices[0].message.content,
        usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
    )


def failed(reply, error):
    reply.update(status="failed", error={"kind": type(error).__name__, "message": str(error)})
