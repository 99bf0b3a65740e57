"""Tools: what the fake Gemini receives, what is stored, what the client sees."""
from __future__ import annotations

import base64

import pytest

from apsara import create_app
from apsara.functions import calculator, get_current_time
from apsara.testing.fake_gemini import Reply
from tests.conftest import make_settings, parse_sse
from tests.test_files import png_bytes

API = "/api/v1/conversations"
PNG = png_bytes()
PNG2 = png_bytes(color=(255, 255, 0))


def image_part(data=PNG):
    return {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(data).decode()}}


def start(client, **fields):
    assert client.post(API, json={"id": "c1", **fields}).status_code == 201


def send(client, text, **extra):
    return client.post(f"{API}/c1/messages", json={"text": text, **extra})


def streamed(client, text, **extra):
    events, _ = parse_sse(send(client, text, stream=True, **extra).get_data(as_text=True))
    return events


def tools_sent(fake, index=-1):
    return fake.generate_requests()[index]["json"].get("tools")


def config_sent(fake, index=-1):
    return fake.generate_requests()[index]["json"].get("toolConfig")


GROUNDING = {"webSearchQueries": ["kyoto weather november"],
             "groundingChunks": [{"web": {"uri": "https://weather.example/kyoto", "title": "Kyoto weather"}},
                                 {"web": {"uri": "https://travel.example", "title": "Travel"}}]}


# -- built-in tools ------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_google_search_grounding_is_stored_and_streamed(chat, fake, stream):
    start(chat, tools=["google_search"])
    fake.push(Reply(parts=["Cool and clear."], grounding=GROUNDING))
    if stream:
        events = streamed(chat, "Weather in Kyoto?")
        names = [e[0] for e in events]
        assert names == ["user_message", "reply_start", "delta", "grounding", "done"]
        assert events[3][2]["queries"] == ["kyoto weather november"]
        reply = events[-1][2]
    else:
        reply = send(chat, "Weather in Kyoto?").json["reply"]
    assert tools_sent(fake) == [{"googleSearch": {}}]
    assert config_sent(fake) is None
    assert reply["grounding"] == {"queries": ["kyoto weather november"], "sources": [
        {"uri": "https://weather.example/kyoto", "title": "Kyoto weather"},
        {"uri": "https://travel.example", "title": "Travel"}]}
    assert chat.get(f"{API}/c1").json["messages"][1]["grounding"] == reply["grounding"]


def test_url_context(chat, fake):
    start(chat, tools=["url_context"])
    send(chat, "Summarise https://example.com")
    assert tools_sent(fake) == [{"urlContext": {}}]


CODE_PARTS = ["Let me compute.", {"executableCode": {"language": "PYTHON", "code": "print(2**10)"}},
              {"codeExecutionResult": {"outcome": "OUTCOME_OK", "output": "1024\n"}}, " It is 1024."]


@pytest.mark.parametrize("stream", [False, True])
def test_code_execution_parts_in_order(chat, fake, stream):
    start(chat, tools=["code_execution"])
    fake.push(Reply(parts=CODE_PARTS))
    if stream:
        events = streamed(chat, "2^10?")
        assert [e[0] for e in events] == ["user_message", "reply_start", "delta", "part", "part", "delta", "done"]
        assert events[3][2] == {"type": "code", "language": "python", "code": "print(2**10)"}
        assert events[4][2] == {"type": "code_result", "outcome": "OUTCOME_OK", "output": "1024\n"}
        reply = events[-1][2]
    else:
        reply = send(chat, "2^10?").json["reply"]
    assert tools_sent(fake) == [{"codeExecution": {}}]
    assert [p["type"] for p in reply["parts"]] == ["text", "code", "code_result", "text"]
    assert reply["text"] == "Let me compute. It is 1024."
    # sent back faithfully next turn
    send(chat, "thanks")
    model_turn = fake.last_body()["contents"][1]
    assert [list(p)[0] for p in model_turn["parts"]][:3] == ["text", "executableCode", "codeExecutionResult"]


def test_toggling_tools_with_patch_changes_the_next_request_only(chat, fake):
    start(chat, tools=["google_search"])
    send(chat, "one")
    chat.patch(f"{API}/c1", json={"tools": ["code_execution", "calculator"]})
    send(chat, "two")
    chat.patch(f"{API}/c1", json={"tools": []})
    send(chat, "three")
    requests = fake.generate_requests()
    assert requests[0]["json"]["tools"] == [{"googleSearch": {}}]
    names = [d["name"] for d in requests[1]["json"]["tools"][1]["functionDeclarations"]]
    assert requests[1]["json"]["tools"][0] == {"codeExecution": {}} and names == ["calculator"]
    assert requests[1]["json"]["toolConfig"]["includeServerSideToolInvocations"] is True
    assert "tools" not in requests[2]["json"]


def test_per_turn_tools_override(chat, fake):
    start(chat, tools=["google_search"])
    send(chat, "no search this time", tools=[])
    assert tools_sent(fake) is None
    assert chat.get(f"{API}/c1").json["tools"] == ["google_search"]


def test_tool_the_model_cannot_use_is_422(chat, fake):
    start(chat, model="gemini-3.1-flash-image")
    response = send(chat, "search", tools=["google_search"])
    assert response.status_code == 422
    assert "gemini-3.8-flash" in response.json["error"]["message"]
    assert fake.generate_requests() == []


# -- server functions ----------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_function_call_round_trip(chat, fake, stream):
    start(chat, tools=["calculator", "get_current_time"])
    fake.push(Reply(parts=[{"functionCall": {"id": "call-1", "name": "calculator",
                                             "args": {"expression": "2 + 3 * 4"}}}]),
              Reply(parts=["It is 14."]))
    if stream:
        events = streamed(chat, "2+3*4?")
        assert [e[0] for e in events] == ["user_message", "reply_start", "part", "part", "delta", "done"]
        assert events[2][2]["type"] == "function_call" and events[3][2]["type"] == "function_response"
        reply = events[-1][2]
    else:
        reply = send(chat, "2+3*4?").json["reply"]
    declarations = tools_sent(fake, 0)[0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["calculator", "get_current_time"]
    assert "parametersJsonSchema" in declarations[0] or "parameters_json_schema" in declarations[0]
    second = fake.generate_requests()[1]["json"]["contents"]
    call_part = second[1]["parts"][0]
    assert second[1]["role"] == "model" and call_part["functionCall"]["name"] == "calculator"
    assert call_part["thoughtSignature"]  # Gemini 3 signs calls; it must come back
    assert second[2]["role"] == "user"
    response = second[2]["parts"][0]["functionResponse"]
    assert response["name"] == "calculator" and response["response"] == {"expression": "2 + 3 * 4", "result": 14}
    assert response["id"] == "call-1"
    assert [p["type"] for p in reply["parts"]] == ["function_call", "function_response", "text"]
    assert reply["parts"][1]["response"]["result"] == 14
    # next turn: the whole exchange goes back in Gemini's shape
    send(chat, "thanks")
    roles = [c["role"] for c in fake.last_body()["contents"]]
    assert roles == ["user", "model", "user", "model", "user"]


def test_failing_function_returns_an_error_to_the_model(chat, fake):
    start(chat, tools=["calculator"])
    fake.push(Reply(parts=[{"functionCall": {"name": "calculator", "args": {"expression": "__import__('os')"}}}]),
              Reply(parts=["Sorry, I cannot compute that."]))
    response = send(chat, "hack")
    assert response.status_code == 201
    error = response.json["reply"]["parts"][1]["response"]["error"]
    assert "not allowed" in error


def test_unknown_or_disabled_function(chat, fake):
    start(chat, tools=["calculator"])
    fake.push(Reply(parts=[{"functionCall": {"name": "get_current_time", "args": {}}}]), Reply(parts=["ok"]))
    reply = send(chat, "time?").json["reply"]
    assert "no function" in reply["parts"][1]["response"]["error"]


def test_function_loop_is_bounded(tmp_path, fake):
    app = create_app(make_settings(tmp_path, gemini_api_key="k", gemini_base_url=fake.url, max_function_steps=2))
    client = app.test_client()
    start(client, tools=["calculator"])
    call = Reply(parts=[{"functionCall": {"name": "calculator", "args": {"expression": "1+1"}}}])
    fake.push(call, call, Reply(parts=["Done."]))
    reply = send(client, "loop").json["reply"]
    requests = fake.generate_requests()
    assert len(requests) == 3
    assert requests[0]["json"]["toolConfig"]["functionCallingConfig"]["mode"] == "AUTO"
    assert requests[2]["json"]["toolConfig"]["functionCallingConfig"]["mode"] == "NONE"
    responses = [p for p in reply["parts"] if p["type"] == "function_response"]
    assert "limit" in responses[-1]["response"]["note"]
    assert reply["text"] == "Done." and reply["status"] == "complete"


def test_calculator_is_safe_and_exact():
    assert calculator("2 + 3 * 4")["result"] == 14
    assert calculator("2^10")["result"] == 1024
    assert calculator("sqrt(16) + factorial(5)")["result"] == 124
    assert abs(calculator("sin(pi/2)")["result"] - 1) < 1e-12
    for bad in ["__import__('os').system('x')", "open('/etc/passwd')", "(lambda: 1)()", "9**9**9",
                "10**100000", "[1]*10", "a", "1/0", "x" * 600, ""]:
        with pytest.raises(Exception):
            calculator(bad)


def test_current_time_is_zone_aware():
    from datetime import datetime, timezone

    moment = datetime(2026, 11, 21, 17, 0, tzinfo=timezone.utc)
    kolkata = get_current_time("Asia/Kolkata", now=moment)
    assert kolkata["time"] == "22:30:00" and kolkata["utc_offset"] == "+0530"
    assert get_current_time("America/New_York", now=moment)["time"] == "12:00:00"
    with pytest.raises(Exception):
        get_current_time("Mars/Olympus")


# -- images --------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_image_model_makes_images_natively(chat, fake, stream):
    start(chat, model="gemini-3.1-flash-image", tools=["image_generation"])
    fake.push(Reply(parts=["Here is a red square.", image_part()]))
    if stream:
        events = streamed(chat, "Draw a red square")
        assert [e[0] for e in events] == ["user_message", "reply_start", "delta", "part", "done"]
        assert events[3][2]["type"] == "file" and events[3][2]["url"]
        reply = events[-1][2]
    else:
        reply = send(chat, "Draw a red square").json["reply"]
    config = fake.last_body()["generationConfig"]
    assert config["responseModalities"] == ["TEXT", "IMAGE"]
    assert "tools" not in fake.last_body()
    image = next(p for p in reply["parts"] if p["type"] == "file")
    assert image["mime_type"] == "image/png"
    assert chat.get(image["url"]).data == PNG
    meta = chat.get(f"/api/v1/files/{image['file_id']}").json
    assert meta["generated"] is True and meta["size_bytes"] == len(PNG)


def test_image_edit_across_two_turns_on_an_image_model(chat, fake):
    start(chat, model="gemini-3.1-flash-image", tools=["image_generation"])
    fake.push(Reply(parts=[image_part(PNG)]), Reply(parts=[image_part(PNG2), "Now yellow."]))
    send(chat, "A red car")
    reply = send(chat, "Now make the car yellow").json["reply"]
    contents = fake.last_body()["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    image_ref = contents[1]["parts"][0]
    assert "thoughtSignature" in image_ref  # the image part's signature goes back with it
    data = image_ref.get("fileData") or image_ref.get("file_data")
    name = "files/" + (data.get("fileUri") or data.get("file_uri")).rsplit("/files/", 1)[1]
    assert fake.files[name]["bytes"] == PNG  # the earlier picture was sent back to be edited
    image = next(p for p in reply["parts"] if p["type"] == "file")
    assert chat.get(image["url"]).data == PNG2


def test_text_model_draws_through_generate_image_and_edits(chat, fake):
    start(chat, tools=["image_generation"])
    fake.push(Reply(parts=[{"functionCall": {"name": "generate_image", "args": {"prompt": "a red car"}}}]),
              Reply(parts=[image_part(PNG)]),                      # the image model draws
              Reply(parts=["Here is your red car."]))
    first = send(chat, "Draw a red car").json["reply"]
    declarations = tools_sent(fake, 0)[0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["generate_image"]
    draw = fake.generate_requests()[1]
    assert draw["model"] == "gemini-3.1-flash-image"
    assert draw["json"]["generationConfig"]["responseModalities"] == ["TEXT", "IMAGE"]
    assert [p["type"] for p in first["parts"]] == ["function_call", "function_response", "file", "text"]
    picture = first["parts"][2]
    assert chat.get(picture["url"]).data == PNG
    assert first["parts"][1]["response"]["file_ids"] == [picture["file_id"]]

    fake.push(Reply(parts=[{"functionCall": {"name": "generate_image",
                                             "args": {"prompt": "make the car yellow", "edit_previous": True}}}]),
              Reply(parts=[image_part(PNG2)]),
              Reply(parts=["Now it is yellow."]))
    events = streamed(chat, "Now make it yellow")
    edit_request = fake.generate_requests()[4]["json"]["contents"][0]["parts"]
    sent_image = edit_request[1].get("inlineData") or edit_request[1].get("inline_data")
    assert base64.b64decode(sent_image["data"]) == PNG  # the last picture goes to the image model
    files = [e[2] for e in events if e[0] == "part" and e[2]["type"] == "file"]
    assert len(files) == 1 and chat.get(files[0]["url"]).data == PNG2


def test_generate_image_failure_is_told_to_the_model(chat, fake):
    start(chat, tools=["image_generation"])
    fake.push(Reply(parts=[{"functionCall": {"name": "generate_image", "args": {"prompt": "x"}}}]),
              Reply(error=(500, "image backend down")),
              Reply(parts=["I could not draw that."]))
    reply = send(chat, "Draw").json["reply"]
    assert reply["status"] == "complete"
    assert "image model failed" in reply["parts"][1]["response"]["error"]
