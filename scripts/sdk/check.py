"""The official OpenAI Python SDK against Tollgate: non-stream, stream (with and without the
usage chunk), model list, and each relay error raised as the SDK's matching exception.
Reads BASE, KEY, POOR_KEY from the environment (scripts/sdk/run.sh sets them)."""
import os
import sys
import threading

import openai
from openai import OpenAI

BASE, KEY, POOR = os.environ["BASE"], os.environ["KEY"], os.environ["POOR_KEY"]
REPLY = "你好！很高兴见到你！今天过得怎么样？有什么我可以帮你的吗？"
MSG = [{"role": "user", "content": "你好！"}]
failures = []


def check(name, fn):
    try:
        fn()
        print(f"PASS python {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"FAIL python {name}: {type(e).__name__}: {e}")


def client(key=KEY):
    return OpenAI(base_url=f"{BASE}/v1", api_key=key, max_retries=0)


def non_stream():
    r = client().chat.completions.create(model="qwen-turbo", messages=MSG)
    assert r.choices[0].message.content == REPLY, r
    assert r.usage.total_tokens == 32, r.usage


def stream():
    chunks = list(client().chat.completions.create(model="qwen-turbo", messages=MSG, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY, text
    assert all(c.usage is None for c in chunks), "usage chunk shown unasked"


def stream_with_usage():
    chunks = list(client().chat.completions.create(
        model="qwen-turbo", messages=MSG, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 18, chunks[-1]


def models():
    ids = [m.id for m in client().models.list()]
    assert "qwen-turbo" in ids, ids


def raises(exc, code, **kw):
    def run():
        try:
            client(kw.pop("key", KEY)).chat.completions.create(**{"model": "qwen-turbo", "messages": MSG, **kw})
        except exc as e:
            if code is not None:
                assert e.code == code, (e.code, e.body)
            return
        raise AssertionError(f"no {exc.__name__}")
    return run


def retries_past_a_rate_limit():
    # One call at a time: while a slow call holds the slot, the next one gets 429 with
    # Retry-After: 1, and the SDK, with its retries on, backs off until it is admitted.
    limited = os.environ["LIMITED_KEY"]
    slow = threading.Thread(target=lambda: client(limited).chat.completions.create(model="m-slow", messages=MSG))
    slow.start()
    import time
    time.sleep(0.5)
    try:
        client(limited).with_options(max_retries=0).chat.completions.create(model="qwen-turbo", messages=MSG)
        raise AssertionError("the second call was admitted while the first held the only slot")
    except openai.RateLimitError as e:
        assert e.code == "rate_limit_exceeded", e.body
        assert e.response.headers.get("retry-after") == "1", e.response.headers
    r = OpenAI(base_url=f"{BASE}/v1", api_key=limited, max_retries=6).chat.completions.create(model="qwen-turbo", messages=MSG)
    assert r.choices[0].message.content == REPLY, r
    slow.join()


check("non-stream", non_stream)
check("stream", stream)
check("stream with usage", stream_with_usage)
check("models.list", models)
check("401 invalid key -> AuthenticationError", raises(openai.AuthenticationError, "invalid_api_key", key="sk-invalid"))
check("404 unknown model -> NotFoundError", raises(openai.NotFoundError, "model_not_found", model="nope"))
check("403 no balance -> PermissionDeniedError", raises(openai.PermissionDeniedError, "insufficient_user_quota", key=POOR))
check("400 empty messages -> BadRequestError", raises(openai.BadRequestError, "invalid_request_error", messages=[]))
check("400 from upstream -> BadRequestError", raises(openai.BadRequestError, None, model="m-400"))
check("502 upstream failed -> InternalServerError", raises(openai.InternalServerError, "upstream_error", model="m-500"))
check("503 no channel -> InternalServerError", raises(openai.InternalServerError, "no_available_channel", model="m-off"))
check("429 at the key's limit -> RateLimitError, then the SDK's retries succeed", retries_past_a_rate_limit)
check("413 too large -> APIStatusError", raises(openai.APIStatusError, "payload_too_large", messages=[{"role": "user", "content": "x" * (9 << 20)}]))
print(f"python: {len(failures)} failed")
sys.exit(1 if failures else 0)
