"""The official Anthropic Python SDK against Tollgate's /v1/messages: create, stream,
count_tokens, tool use, and each error raised as the SDK's matching exception; plus the
OpenAI SDK's embeddings.create and completions.create. Reads BASE, KEY, POOR_KEY from the
environment (scripts/sdk/run.sh sets them)."""
import os
import sys

import anthropic
from openai import OpenAI

BASE, KEY, POOR = os.environ["BASE"], os.environ["KEY"], os.environ["POOR_KEY"]
REPLY = "你好！很高兴见到你！今天过得怎么样？有什么我可以帮你的吗？"
MSG = [{"role": "user", "content": "你好！"}]
failures = []


def check(name, fn):
    try:
        fn()
        print(f"PASS anthropic-sdk {name}")
    except Exception as e:  # noqa: BLE001 - report every failure, keep going
        failures.append(name)
        print(f"FAIL anthropic-sdk {name}: {type(e).__name__}: {e}")


def client(key=KEY):
    return anthropic.Anthropic(base_url=BASE, api_key=key, max_retries=0)


def create(model):
    def run():
        m = client().messages.create(model=model, max_tokens=100, system="be kind", messages=MSG)
        assert m.type == "message" and m.role == "assistant", m
        assert m.content[0].text == REPLY, m.content
        assert m.stop_reason == "end_turn", m.stop_reason
        assert m.usage.output_tokens == 18, m.usage
    return run


def stream(model):
    def run():
        with client().messages.stream(model=model, max_tokens=100, messages=MSG) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert text == REPLY, text
        assert final.usage.output_tokens == 18, final.usage
    return run


def count_tokens():
    r = client().messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "hello world"}])
    assert r.input_tokens == 9, r


def tool_use():
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    m = client().messages.create(model="claude-tools", max_tokens=100, messages=MSG, tools=tools)
    uses = [b for b in m.content if b.type == "tool_use"]
    assert m.stop_reason == "tool_use" and uses and uses[0].name == "get_weather", m.content
    assert isinstance(uses[0].input, dict), uses[0].input
    with client().messages.stream(model="claude-tools", max_tokens=100, messages=MSG, tools=tools) as s:
        final = s.get_final_message()
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert streamed and streamed[0].input == uses[0].input, final.content


def raises(exc, **kw):
    def run():
        args = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": MSG, **kw}
        key = args.pop("key", KEY)
        try:
            client(key).messages.create(**args)
        except exc:
            return
        raise AssertionError(f"no {exc.__name__}")
    return run


def embeddings():
    r = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0).embeddings.create(
        model="text-embedding-3-small", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 4, r
    assert r.usage.prompt_tokens == 10, r.usage


def completions():
    r = OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0).completions.create(
        model="gpt-3.5-turbo-instruct", prompt="Say hi", max_tokens=20)
    assert r.choices[0].text == REPLY, r


check("messages.create (anthropic channel)", create("claude-haiku-4-5"))
check("messages.create (converted to an OpenAI channel)", create("qwen-turbo"))
check("messages.stream (anthropic channel)", stream("claude-haiku-4-5"))
check("messages.stream (converted)", stream("qwen-turbo"))
check("messages.count_tokens", count_tokens)
check("tool use, JSON and stream", tool_use)
check("401 -> AuthenticationError", raises(anthropic.AuthenticationError, key="sk-invalid"))
check("403 no balance -> PermissionDeniedError", raises(anthropic.PermissionDeniedError, key=POOR))
check("404 unknown model -> NotFoundError", raises(anthropic.NotFoundError, model="nope"))
check("400 no messages -> BadRequestError", raises(anthropic.BadRequestError, messages=[]))
check("502 upstream failed -> InternalServerError", raises(anthropic.InternalServerError, model="claude-500"))
check("503 no channel -> InternalServerError", raises(anthropic.InternalServerError, model="m-off"))
check("openai embeddings.create", embeddings)
check("openai completions.create", completions)
print(f"anthropic-sdk: {len(failures)} failed")
sys.exit(1 if failures else 0)
