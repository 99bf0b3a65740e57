"""The OpenAI-compatible surface, driven by the official `openai` client over real HTTP.

The app is served on loopback by a werkzeug server thread (real Gunicorn in the
slow test at the end), and talks to the wire-level Gemini fake, which signs its
function calls and, for Gemini 3 models, refuses a call sent back without its
signature, as Gemini does.
"""
from __future__ import annotations

import base64
import json
import threading
import urllib.request

import openai
import pytest
from werkzeug.serving import make_server

from apsara import create_app
from apsara.testing.fake_gemini import Reply

from conftest import make_settings

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
GEMINI_3 = "gemini-3.1-pro-preview"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


@pytest.fixture
def server(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="test-key-123", gemini_base_url=fake.url,
                                   api_keys={"alice": "key-a"}, ping_interval_s=0.2))
    http = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.port}/v1"
    http.shutdown()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server, api_key="key-a", max_retries=0, timeout=20)


def raw(server: str, path: str, body=None, key: str | None = "key-a", method: str | None = None):
    """(status, headers, text) of one plain HTTP request."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(server + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


def assert_openai_error(text: str) -> dict:
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and isinstance(error["type"], str)
    return error


def user(text):
    return [{"role": "user", "content": text}]


# -- text, settings, usage ------------------------------------------------------------------
def test_plain_completion_maps_messages_and_settings(client, fake):
    fake.push(Reply(parts=["Bonjour", " Alice."]))
    answer = client.chat.completions.create(
        model="gemini-3.8-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Speak French."},
                  {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Salut."},
                  {"role": "user", "content": [{"type": "text", "text": "Greet Alice"}]}],
        temperature=0.3, top_p=0.9, max_tokens=50, stop=["END"], seed=7)
    assert answer.object == "chat.completion" and answer.id.startswith("chatcmpl-")
    assert answer.model == "gemini-3.8-flash"
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Bonjour Alice."
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    body = fake.last_body()
    assert body["systemInstruction"]["parts"][0]["text"] == "Be brief.\n\nSpeak French."
    assert [(c["role"], c["parts"][0]["text"]) for c in body["contents"]] == [
        ("user", "Hello"), ("model", "Salut."), ("user", "Greet Alice")]
    config = body["generationConfig"]
    assert config["temperature"] == 0.3 and config["topP"] == 0.9 and config["maxOutputTokens"] == 50
    assert config["stopSequences"] == ["END"] and config["seed"] == 7


def test_max_completion_tokens_and_reasoning_effort(client, fake):
    client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), max_completion_tokens=12,
                                   reasoning_effort="low")
    config = fake.last_body()["generationConfig"]
    assert config["maxOutputTokens"] == 12
    assert config["thinkingConfig"]["thinking_level"] == "LOW"


def test_usage_counts_thought_tokens_as_completion_tokens(client, fake):
    fake.push(Reply(parts=[{"text": "Let me think.", "thought": True}, "Four."],
                    usage={"promptTokenCount": 11, "candidatesTokenCount": 2, "thoughtsTokenCount": 30,
                           "totalTokenCount": 43}))
    answer = client.chat.completions.create(model="gemini-3.8-flash", messages=user("2+2?"))
    assert answer.choices[0].message.content == "Four."  # thought summaries are not the answer
    usage = answer.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (11, 32, 43)
    assert usage.completion_tokens_details.reasoning_tokens == 30


def test_reasoning_effort_brings_thought_summaries_as_reasoning_content(client, fake):
    fake.push(Reply(parts=[{"text": "Weighing options.", "thought": True}, "Go by train."]),
              Reply(parts=[{"text": "Weighing", "thought": True}, {"text": " options.", "thought": True}, "Train."]))
    answer = client.chat.completions.create(model="gemini-3.8-flash", messages=user("Train or plane?"),
                                            reasoning_effort="medium")
    message = answer.choices[0].message
    assert message.content == "Go by train." and message.model_extra["reasoning_content"] == "Weighing options."
    assert fake.last_body()["generationConfig"]["thinkingConfig"]["include_thoughts"] is True
    chunks = list(client.chat.completions.create(model="gemini-3.8-flash", messages=user("Train or plane?"),
                                                 reasoning_effort="medium", stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "Weighing options."
    assert "".join(d.content or "" for d in deltas) == "Train."

    client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"))
    assert "thinkingConfig" not in fake.last_body()["generationConfig"]  # not asked, not sent


def test_max_tokens_reached_is_finish_reason_length(client, fake):
    fake.push(Reply(parts=["Once upon"], finish_reason="MAX_TOKENS"))
    answer = client.chat.completions.create(model="gemini-3.8-flash", messages=user("story"), max_tokens=2)
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].message.content == "Once upon"


def test_blocked_prompt_is_finish_reason_content_filter(client, fake):
    fake.push(Reply(block_reason="SAFETY"), Reply(block_reason="SAFETY"))
    choice = client.chat.completions.create(model="gemini-3.8-flash", messages=user("bad")).choices[0]
    assert (choice.finish_reason, choice.message.content) == ("content_filter", None)
    chunks = list(client.chat.completions.create(model="gemini-3.8-flash", messages=user("bad"), stream=True))
    assert chunks[-1].choices[0].finish_reason == "content_filter"


# -- streaming --------------------------------------------------------------------------------
def test_stream_sends_chunks_then_usage_then_done(client, fake, server):
    fake.push(Reply(parts=["One", " two", " three."],
                    usage={"promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 4,
                           "totalTokenCount": 12}))
    chunks = list(client.chat.completions.create(model="gemini-3.8-flash", messages=user("count"), stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "One two three."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 7
    assert last.usage.completion_tokens_details.reasoning_tokens == 4 and last.usage.total_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)

    # on the wire: OpenAI's framing, ending with [DONE]
    status, headers, text = raw(server, "/chat/completions", {"model": "gemini-3.8-flash", "messages": user("x"),
                                                             "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = [block for block in text.split("\n\n") if block.strip()]
    assert all(block.startswith("data: ") for block in events)
    assert events[-1] == "data: [DONE]"
    assert all("usage" not in json.loads(block[6:]) for block in events[:-1])  # not asked for


def test_stream_without_usage_has_no_usage_chunk(client, fake):
    chunks = list(client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), stream=True))
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)


def test_failure_before_the_first_chunk_is_an_http_status(client, fake):
    fake.push(Reply(error=(429, "Resource has been exhausted"), retry_after="7"))
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), stream=True)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert_openai_error(caught.value.response.text)


def test_failure_mid_stream_arrives_as_an_error_event(client, fake):
    fake.push(Reply(parts=["Half", " an", " answer"], fail_after=1))
    stream = client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), stream=True)
    seen = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            seen.append(chunk)
    assert "".join(c.choices[0].delta.content or "" for c in seen) == "Half"
    assert "stream broke" in caught.value.message


def usage_totals(server: str) -> dict:
    status, _, text = raw(server.removesuffix("/v1"), "/api/v1/usage")
    assert status == 200, text
    return json.loads(text)["totals"]


def test_every_completion_is_in_the_usage_ledger(client, fake, server):
    client.chat.completions.create(model="gemini-3.8-flash", messages=user("one"))
    list(client.chat.completions.create(model="gemini-3.8-flash", messages=user("two"), stream=True))
    totals, billed = usage_totals(server), fake.billed_totals()
    assert {k: totals[k] for k in billed} == billed and billed["calls"] == 2


def test_a_client_that_leaves_mid_stream_stops_gemini_and_pays_what_it_billed(client, fake, server):
    import time

    fake.push(Reply(parts=[f"word{n} " for n in range(100)], chunk_delay_s=0.05))
    stream = client.chat.completions.create(model="gemini-3.8-flash", messages=user("talk"), stream=True)
    next(c for c in stream if c.choices and c.choices[0].delta.content)
    stream.close()
    deadline = time.monotonic() + 4  # well before the 5 s the whole answer would take
    while time.monotonic() < deadline and usage_totals(server)["calls"] == 0:
        time.sleep(0.05)
    time.sleep(0.2)  # the fake notices the closed connection and sends no more
    totals, billed = usage_totals(server), fake.billed_totals()
    assert totals["calls"] == 1 and totals["output_tokens"] == billed["output_tokens"] < 50


def test_open_streams_count_against_the_rate_limit(tmp_path, fake):
    from apsara.ratelimits import parse_rate_limits

    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   rate_limits=parse_rate_limits("streams=1")))
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    gate = threading.Event()
    fake.push(Reply(parts=["held", " open"], hold=gate))
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http.port}/v1", api_key="any", max_retries=0)
        first = client.chat.completions.create(model="gemini-3.8-flash", messages=user("one"), stream=True)
        next(iter(first))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model="gemini-3.8-flash", messages=user("two"), stream=True)
        assert_openai_error(caught.value.response.text)
        gate.set()
        assert "".join(c.choices[0].delta.content or "" for c in first if c.choices) == "held open"
    finally:
        gate.set()
        http.shutdown()


def test_budgets_refuse_before_gemini_is_called(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   budgets={"default": {"tokens_per_day": 10}, "users": {}}))
    http = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{http.port}/v1", api_key="any", max_retries=0)
        client.chat.completions.create(model="gemini-3.8-flash", messages=user("spend the day's ten tokens"))
        for stream in (False, True):
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), stream=stream)
            error = assert_openai_error(caught.value.response.text)
            assert "tokens_per_day" in error["message"] and caught.value.response.headers.get("Retry-After")
    finally:
        http.shutdown()
    assert len(fake.generate_requests()) == 1  # the refused turns never reached Gemini


# -- structured output and pictures --------------------------------------------------------------
def test_json_schema_response_format(client, fake):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    fake.push(Reply(parts=['{"city": "Paris"}']))
    answer = client.chat.completions.create(
        model="gemini-3.8-flash", messages=user("Capital of France?"),
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema, "strict": True}})
    assert json.loads(answer.choices[0].message.content) == {"city": "Paris"}
    config = fake.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == schema

    client.chat.completions.create(model="gemini-3.8-flash", messages=user("json"),
                                   response_format={"type": "json_object"})
    config = fake.last_body()["generationConfig"]
    assert config["responseMimeType"] == "application/json" and "responseJsonSchema" not in config


def test_parse_with_a_pydantic_model(client, fake):
    from pydantic import BaseModel

    class Trip(BaseModel):
        city: str
        days: int

    fake.push(Reply(parts=['{"city": "Kyoto", "days": 3}']))
    answer = client.chat.completions.parse(model="gemini-3.8-flash", messages=user("Plan a trip"), response_format=Trip)
    assert answer.choices[0].message.parsed == Trip(city="Kyoto", days=3)
    schema = fake.last_body()["generationConfig"]["responseJsonSchema"]
    assert schema["required"] == ["city", "days"] and schema["additionalProperties"] is False


def test_image_data_url_becomes_inline_data(client, fake):
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    client.chat.completions.create(model="gemini-3.8-flash", messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    parts = fake.last_body()["contents"][0]["parts"]
    assert parts[0] == {"text": "What is this?"}
    inline = parts[1].get("inlineData") or parts[1]["inline_data"]
    assert (inline.get("mimeType") or inline["mime_type"]) == "image/png"
    assert base64.b64decode(inline["data"]) == PNG


def test_pictures_made_come_back_as_markdown_and_go_back_as_pictures(client, fake):
    # signed by the image model, as Gemini 3 image models sign every picture
    picture = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(PNG).decode()},
               "thoughtSignature": base64.b64encode(b"picture-signature").decode()}
    fake.push(Reply(parts=["Here it is:", picture]))
    first = client.chat.completions.create(model="gemini-3.1-flash-image", messages=user("Draw a red square"))
    assert fake.last_body()["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    content = first.choices[0].message.content
    assert content.startswith("Here it is:") and "![image](data:image/png;signature=" in content
    assert base64.b64encode(PNG).decode() in content

    client.chat.completions.create(model="gemini-3.1-flash-image", messages=user("Draw a red square") + [
        {"role": "assistant", "content": content}, {"role": "user", "content": "Make it blue"}])
    model_parts = fake.last_body()["contents"][1]["parts"]
    assert model_parts[0]["text"].strip() == "Here it is:"
    inline = model_parts[1].get("inlineData") or model_parts[1]["inline_data"]
    assert base64.b64decode(inline["data"]) == PNG  # a picture again, not base64 text
    assert model_parts[1]["thoughtSignature"] == base64.b64encode(b"picture-signature").decode()


def test_pictures_must_be_data_urls_of_real_images(client, fake):
    for url, param in [("https://example.com/cat.png", "messages[0].content[0].image_url.url"),
                       ("data:image/png;base64," + base64.b64encode(b"not a picture").decode(),
                        "messages[0].content[0].image_url.url"),
                       ("data:image/png;base64,%%%", "messages[0].content[0].image_url.url")]:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="gemini-3.8-flash", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}]}])
        assert assert_openai_error(caught.value.response.text)["param"] == param
    assert fake.generate_requests() == []


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_model_is_404_model_not_found(client, fake):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=user("hi"))
    error = assert_openai_error(caught.value.response.text)
    assert (error["code"], error["param"], error["type"]) == ("model_not_found", "model", "invalid_request_error")
    assert fake.generate_requests() == []


def test_bad_or_missing_key_is_401_in_openai_shape(server, fake):
    bad = openai.OpenAI(base_url=server, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"))
    assert assert_openai_error(caught.value.response.text)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    status, headers, text = raw(server, "/models", key=None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    assert_openai_error(text)
    assert fake.generate_requests() == []


@pytest.mark.parametrize("change, param", [
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 3}, "temperature"),
    ({"n": 2}, "n"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "{}"}]}, "messages[0].tool_call_id"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                                "function": {"name": "g"}}},
     "tool_choice"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"logprobs": True}, "logprobs"),
    ({"top_k": 0}, "top_k"),
    ({"model": None}, "model"),
])
def test_bad_body_is_400_naming_the_parameter(server, fake, change, param):
    body = {"model": "gemini-3.8-flash", "messages": user("hi"), **change}
    status, _, text = raw(server, "/chat/completions", body)
    assert status == 400
    error = assert_openai_error(text)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fake.generate_requests() == []


def test_unreadable_body_and_unknown_path_answer_in_openai_shape(server, fake):
    status, _, text = raw(server, "/chat/completions", b"{not json")
    assert status == 400 and "parse the JSON body" in assert_openai_error(text)["message"]
    status, _, text = raw(server, "/chat/completions", method="GET")
    assert status == 404 and assert_openai_error(text)["message"] == "Invalid URL (GET /v1/chat/completions)"
    schema = nested = {"type": "object"}
    for _ in range(40):
        nested["properties"] = {"a": {"type": "object"}}
        nested = nested["properties"]["a"]
    status, _, text = raw(server, "/chat/completions", {"model": "gemini-3.8-flash", "messages": user("hi"),
                                                       "response_format": {"type": "json_schema",
                                                                           "json_schema": {"schema": schema}}})
    assert status == 400 and assert_openai_error(text)["param"] == "response_format.json_schema.schema"
    assert fake.generate_requests() == []
    for path in ("/embeddings", "", "/"):
        status, _, text = raw(server, path, {"model": "x", "input": "y"})
        assert status == 404 and assert_openai_error(text)


def test_fields_gemini_has_no_use_for_are_ignored(client, fake):
    answer = client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), user="u-1",
                                            presence_penalty=0, frequency_penalty=0, n=1, store=False,
                                            parallel_tool_calls=True, metadata={"app": "test"},
                                            extra_body={"min_p": 0.1, "top_k": 20})  # what chat apps add
    assert answer.choices[0].message.content == "Echo: hi"
    assert fake.last_body()["generationConfig"] == {"topK": 20}


def test_v1_stays_out_of_the_api_openapi_document(server):
    _, _, text = raw(server.removesuffix("/v1"), "/api/v1/openapi.json")
    assert not [path for path in json.loads(text)["paths"] if path.startswith("/v1")]


def test_nothing_is_stored(client, fake, tmp_path):
    client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"))
    history = tmp_path / "data" / "history"
    assert not history.exists() or not any(history.rglob("*.json"))


# -- models and auto ----------------------------------------------------------------------------------
def test_models_lists_chat_models_and_auto(client):
    ids = [m.id for m in client.models.list()]
    assert "gemini-3.8-flash" in ids and ids[-1] == "auto"
    assert client.models.retrieve("auto").owned_by == "apsara"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_auto_routes_like_the_rest_of_the_service(client, fake):
    answer = client.chat.completions.create(model="auto", messages=user("thanks!"))
    assert answer.model == "gemini-3.5-flash-lite"  # small talk goes to the lite tier
    assert fake.generate_requests()[-1]["model"] == answer.model
    assert answer.model_extra["routing"]["tier"] == "lite"

    proof = "Prove that there are infinitely many primes, step by step, with a rigorous argument."
    chunks = list(client.chat.completions.create(model="auto", messages=user(proof), stream=True))
    assert chunks[0].model == "gemini-3.1-pro-preview" and chunks[0].model_extra["routing"]["tier"] == "pro"


def test_auto_with_functions_picks_a_model_that_can_call_them(client, fake):
    answer = client.chat.completions.create(model="auto", messages=user("draw me a cat"), tools=[WEATHER])
    assert "image" not in answer.model


# -- function tools and thought signatures -------------------------------------------------------------
def echo_only(tool_calls) -> list[dict]:
    """What a minimal client keeps of each tool call: its id, name and arguments, nothing else."""
    return [{"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in tool_calls]


def test_two_round_tool_call_keeps_signatures(client, fake):
    fake.push(Reply(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]),
              Reply(parts=["Sunny in Paris."]))
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent_signature = base64.b64encode(f"sig-{fake.signature_counter}".encode()).decode()

    messages += [{"role": "assistant", "content": None, "tool_calls": echo_only(choice.message.tool_calls)},
                 {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 21}'}]
    second = client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Sunny in Paris."

    contents = fake.last_body()["contents"]
    model_part = contents[1]["parts"][0]
    assert contents[1]["role"] == "model"
    assert model_part["functionCall"]["name"] == "get_weather"
    assert model_part["functionCall"]["args"] == {"city": "Paris"}
    assert model_part["thoughtSignature"] == sent_signature  # back to Gemini unchanged
    response = contents[2]["parts"][0]["functionResponse"]
    assert contents[2]["role"] == "user"
    assert response == {"name": "get_weather", "response": {"sky": "clear", "celsius": 21}}
    declaration = fake.last_body()["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert declaration["parameters_json_schema"] == WEATHER["function"]["parameters"]


def test_streamed_two_round_parallel_tool_calls_keep_signatures(client, fake):
    fake.push(Reply(parts=["Checking both.", {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                           {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}]),
              Reply(parts=["Cold in Oslo, warm in Rome."]))
    messages = [{"role": "user", "content": "Oslo and Rome?"}]
    chunks = list(client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER], stream=True))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert [t.index for t in calls] == [0, 1]
    assert [json.loads(t.function.arguments)["city"] for t in calls] == ["Oslo", "Rome"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    text = "".join(d.content or "" for d in deltas)

    messages += [{"role": "assistant", "content": text, "tool_calls": echo_only(calls)}]
    messages += [{"role": "tool", "tool_call_id": t.id, "content": f"{t.function.name} ok"} for t in calls]
    answer = client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "Cold in Oslo, warm in Rome."

    contents = fake.last_body()["contents"]
    model_parts = contents[1]["parts"]
    assert model_parts[0] == {"text": "Checking both."}
    # the fake signed the text (sig-1) and each call (sig-2, sig-3); each call gets its own back
    assert [p["thoughtSignature"] for p in model_parts[1:]] == [
        base64.b64encode(f"sig-{n}".encode()).decode() for n in (2, 3)]
    results = [p["functionResponse"] for p in contents[2]["parts"]]
    assert results == [{"name": "get_weather", "response": {"result": "get_weather ok"}}] * 2


def test_geminis_own_call_ids_go_back_on_the_call_and_its_result(client, fake):
    fake.push(Reply(parts=[{"functionCall": {"id": "fc-7", "name": "get_weather", "args": {"city": "Bern"}}}]))
    (call,) = client.chat.completions.create(model=GEMINI_3, messages=user("Bern?"), tools=[WEATHER]
                                             ).choices[0].message.tool_calls
    client.chat.completions.create(model=GEMINI_3, tools=[WEATHER], messages=user("Bern?") + [
        {"role": "assistant", "tool_calls": echo_only([call])},
        {"role": "tool", "tool_call_id": call.id, "content": "snow"}])
    contents = fake.last_body()["contents"]
    assert contents[1]["parts"][0]["functionCall"]["id"] == "fc-7"
    assert contents[2]["parts"][0]["functionResponse"]["id"] == "fc-7"


def test_auto_sends_function_results_back_to_the_model_that_called(client, fake):
    fake.push(Reply(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Nice"}}}]))
    (call,) = client.chat.completions.create(model=GEMINI_3, messages=user("hi"), tools=[WEATHER]
                                             ).choices[0].message.tool_calls
    messages = user("hi") + [{"role": "assistant", "tool_calls": echo_only([call])},
                             {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    answer = client.chat.completions.create(model="auto", messages=messages, tools=[WEATHER])
    # "hi" alone would go to the lite tier; the results go back to the model that asked for them
    assert answer.model == GEMINI_3 and fake.generate_requests()[-1]["model"] == GEMINI_3
    assert answer.model_extra["routing"]["classifier"] == "function-call continuation"
    fresh = client.chat.completions.create(model="auto", messages=messages + [
        {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "thanks!"}], tools=[WEATHER])
    assert fresh.model != GEMINI_3  # a new question is routed afresh


def test_an_altered_signature_is_refused_as_gemini_3_does(server, fake):
    fake.push(Reply(parts=[{"functionCall": {"name": "get_weather", "args": {}}}]))
    _, _, text = raw(server, "/chat/completions", {"model": GEMINI_3, "messages": user("?"), "tools": [WEATHER]})
    (call,) = json.loads(text)["choices"][0]["message"]["tool_calls"]
    altered = call["id"].replace(".s", ".sAA")
    history = user("?") + [{"role": "assistant", "tool_calls": [{**call, "id": altered}]},
                           {"role": "tool", "tool_call_id": altered, "content": "ok"}]
    status, _, text = raw(server, "/chat/completions", {"model": GEMINI_3, "messages": history, "tools": [WEATHER]})
    assert status == 400 and "thought_signature" in assert_openai_error(text)["message"]


def test_a_dropped_signature_is_what_gemini_3_refuses(server, fake):
    """The fake enforces the rule, so the tests above would fail if the signature were lost."""
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "tool_calls": [{"id": "call_from_elsewhere", "type": "function",
                                                      "function": {"name": "get_weather",
                                                                   "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_from_elsewhere", "content": "sunny"}]
    status, _, text = raw(server, "/chat/completions", {"model": GEMINI_3, "messages": messages, "tools": [WEATHER]})
    assert status == 400 and "thought_signature" in assert_openai_error(text)["message"]
    # a model that does not sign its calls takes the same history
    status, _, _ = raw(server, "/chat/completions", {"model": "gemini-2.5-flash-lite", "messages": messages,
                                                     "tools": [WEATHER]})
    assert status == 200


@pytest.mark.parametrize("choice, mode, allowed", [
    ("auto", "AUTO", None),
    ("none", "NONE", None),
    ("required", "ANY", None),
    ({"type": "function", "function": {"name": "get_weather"}}, "ANY", ["get_weather"]),
])
def test_tool_choice_maps_to_function_calling_mode(client, fake, choice, mode, allowed):
    client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), tools=[WEATHER], tool_choice=choice)
    config = fake.last_body()["toolConfig"]["functionCallingConfig"]
    assert config["mode"] == mode
    assert config.get("allowedFunctionNames") == allowed


def test_allowed_tools_offer_only_those_functions(client, fake):
    clock = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}
    for mode, expected in (("auto", {"mode": "AUTO"}), ("required", {"mode": "ANY",
                                                                    "allowedFunctionNames": ["get_time"]})):
        client.chat.completions.create(model="gemini-3.8-flash", messages=user("hi"), tools=[WEATHER, clock],
                                       tool_choice={"type": "allowed_tools", "allowed_tools": {
                                           "mode": mode, "tools": [{"type": "function",
                                                                    "function": {"name": "get_time"}}]}})
        body = fake.last_body()
        assert body["toolConfig"]["functionCallingConfig"] == expected
        offered = [f["name"] for f in body["tools"][0]["functionDeclarations"]]
        assert offered == (["get_time"] if mode == "auto" else ["get_weather", "get_time"])


def test_image_models_cannot_take_functions(client, fake):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gemini-3.1-flash-image", messages=user("hi"), tools=[WEATHER])
    assert assert_openai_error(caught.value.response.text)["param"] == "tools"


# -- real Gunicorn ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_streamed_tool_round_trip_under_gunicorn(tmp_path, fake):
    from servers import gunicorn

    fake.push(Reply(parts=[{"functionCall": {"name": "get_weather", "args": {"city": "Lima"}}}]),
              Reply(parts=["Mild in Lima."]))
    env = {"gemini": "test-key-123", "GEMINI_BASE_URL": fake.url, "APSARA_DATA_DIR": str(tmp_path / "data"),
           "APSARA_API_KEYS": "alice:key-a"}
    with gunicorn(env, workers=2) as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="key-a", max_retries=0, timeout=20)
        messages = [{"role": "user", "content": "Lima?"}]
        chunks = list(client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER],
                                                     stream=True, stream_options={"include_usage": True}))
        calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or []]
        assert chunks[-1].usage is not None and len(calls) == 1
        messages += [{"role": "assistant", "tool_calls": echo_only(calls)},
                     {"role": "tool", "tool_call_id": calls[0].id, "content": "mild"}]
        # two workers: the next request may land on the other one, which never saw the first
        for _ in range(2):
            fake.push(Reply(parts=["Mild in Lima."]))
            answer = client.chat.completions.create(model=GEMINI_3, messages=messages, tools=[WEATHER])
            assert answer.choices[0].message.content == "Mild in Lima."
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base + "/v1", api_key="nope", max_retries=0).models.list()


# -- keep-alive, limits, browsers ------------------------------------------------------------------
def test_silence_mid_stream_is_filled_with_pings_the_client_ignores(client, fake, server):
    fake.push(Reply(parts=["slow", " answer"], chunk_delay_s=0.5),
              Reply(parts=["slow", " answer"], chunk_delay_s=0.5))
    _, _, text = raw(server, "/chat/completions", {"model": "gemini-3.8-flash", "messages": user("x"), "stream": True})
    assert ": ping" in text and text.endswith("data: [DONE]\n\n")
    chunks = client.chat.completions.create(model="gemini-3.8-flash", messages=user("x"), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "slow answer"


def test_oversized_body_is_413_in_openai_shape(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url))
    response = app.test_client().post("/v1/chat/completions", data=b"x" * (17 * 1024 * 1024),
                                      content_type="application/json")
    assert response.status_code == 413
    assert_openai_error(response.get_data(as_text=True))
    assert fake.generate_requests() == []


def test_oversized_chunked_body_is_413_too(server, fake):
    import http.client
    from urllib.parse import urlsplit

    def body():
        yield b'{"model": "gemini-3.8-flash", "messages": [{"role": "user", "content": "'
        for _ in range(17):
            yield b"a" * (1024 * 1024)
        yield b'"}]}'

    address = urlsplit(server)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=20)
    connection.request("POST", "/v1/chat/completions", body=body(), encode_chunked=True,
                       headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked",
                                "Authorization": "Bearer key-a"})
    response = connection.getresponse()
    assert response.status == 413
    assert_openai_error(response.read().decode())
    assert fake.generate_requests() == []


def test_browsers_of_allowed_origins_may_call_v1(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url,
                                   api_keys={"alice": "key-a"}, cors_origins=["https://chat.example"]))
    response = app.test_client().options("/v1/chat/completions", headers={
        "Origin": "https://chat.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://chat.example"
