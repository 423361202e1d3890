"""The Telegram stand-in answers like the Bot API: envelope, auth, chats, HTML, limits, faults.

Raw HTTP here (the way Telegram documents requests); the alert tests drive the stand-in through
python-telegram-bot itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

import cg_assets
from cg_assets.sim import TelegramServer
from cg_assets.sim.telegram import DEFAULT_CHAT_ID, DEFAULT_TOKEN
from cg_assets.sim.telegram_html import parse_html

TOKEN = "4242:stand-in"
CHAT = 1001


@pytest.fixture
def tg() -> Iterator[TelegramServer]:
    with TelegramServer(tokens=[TOKEN], chats=[CHAT, -2002, "@alerts"]) as server:
        yield server


def call(
    tg: TelegramServer, method: str, token: str = TOKEN, **params: object
) -> requests.Response:
    return requests.post(f"{tg.base_url}/bot{token}/{method}", data=params, timeout=10)


def send(tg: TelegramServer, text: str, chat: object = CHAT, **params: object) -> dict:
    return call(tg, "sendMessage", chat_id=chat, text=text, parse_mode="HTML", **params).json()


def error(body: dict) -> tuple[int, str]:
    assert body["ok"] is False, body
    return body["error_code"], body["description"]


def test_get_me_names_the_bot_of_the_token(tg):
    body = call(tg, "getMe").json()
    assert body["ok"] is True
    assert body["result"]["id"] == 4242
    assert body["result"]["is_bot"] is True


def test_unknown_token_and_unknown_method(tg):
    response = call(tg, "getMe", token="4242:wrong")
    assert response.status_code == 401
    assert error(response.json()) == (401, "Unauthorized")
    response = call(tg, "sendSticker")
    assert (response.status_code, error(response.json())[0]) == (404, 404)
    assert requests.get(f"{tg.base_url}/nobot", timeout=10).status_code == 404


def test_send_message_returns_a_message_and_records_it(tg):
    body = send(tg, "<b>BTC</b> funding &gt; 0.1% &amp; rising")
    assert body["ok"] is True
    message = body["result"]
    assert message["text"] == "BTC funding > 0.1% & rising"
    assert message["chat"] == {"id": CHAT, "type": "private", "first_name": "Alert reader"}
    assert message["entities"] == [{"type": "bold", "offset": 0, "length": 3}]
    [record] = tg.messages()
    assert (record.chat_id, record.message_id, record.reply_to) == (CHAT, 1, None)
    assert record.text == "<b>BTC</b> funding &gt; 0.1% &amp; rising"
    assert record.plain == message["text"]
    assert "BTC funding > 0.1% & rising" in record.render()


def test_json_bodies_and_query_strings_are_accepted(tg):
    url = f"{tg.base_url}/bot{TOKEN}/sendMessage"
    as_json = requests.post(url, json={"chat_id": CHAT, "text": "json"}, timeout=10).json()
    as_query = requests.get(url, params={"chat_id": CHAT, "text": "query"}, timeout=10).json()
    assert (as_json["result"]["text"], as_query["result"]["text"]) == ("json", "query")


def test_message_ids_increase_per_chat(tg):
    ids = [send(tg, "x", chat)["result"]["message_id"] for chat in (CHAT, -2002, CHAT, "@alerts")]
    assert ids == [1, 1, 2, 1]
    assert [m.message_id for m in tg.messages(CHAT)] == [1, 2]
    assert send(tg, "g", -2002)["result"]["chat"]["type"] == "group"


def test_replies_in_both_parameter_styles(tg):
    first = send(tg, "heads-up")["result"]["message_id"]
    legacy = send(tg, "confirmed", reply_to_message_id=first)["result"]
    modern = send(tg, "more", reply_parameters=json.dumps({"message_id": first}))["result"]
    assert legacy["reply_to_message"]["message_id"] == first
    assert modern["reply_to_message"]["text"] == "heads-up"
    assert [m.reply_to for m in tg.messages()] == [None, first, first]
    assert error(send(tg, "lost", reply_to_message_id=99)) == (
        400,
        "Bad Request: message to be replied not found",
    )
    assert error(send(tg, "bad", reply_to_message_id="x"))[1] == (
        "Bad Request: invalid message identifier 'x'"
    )
    gone = json.dumps({"message_id": 99, "allow_sending_without_reply": True})
    assert send(tg, "anyway", reply_parameters=gone)["result"].get("reply_to_message") is None


def test_unknown_chat(tg):
    assert error(send(tg, "x", chat=999)) == (400, "Bad Request: chat not found")
    assert error(send(tg, "x", chat="")) == (400, "Bad Request: chat_id is empty")
    assert tg.messages() == []


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<p>x</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
        ("2 > 1", "Unexpected character '>' at byte offset 2"),
        ("A & B", "Can't find end of the entity starting at byte offset 2"),
        ("&nbsp;", "Can't find end of the entity starting at byte offset 0"),
        ("é <i>", 'Can\'t find end tag corresponding to start tag "i"'),
        ("<a>x</a>", "Can't find href of the link at byte offset 0"),
    ],
)
def test_html_outside_the_subset_is_rejected(tg, text, detail):
    assert error(send(tg, text)) == (400, f"Bad Request: can't parse entities: {detail}")
    assert tg.messages() == []


def test_byte_offsets_count_utf8():
    with pytest.raises(Exception, match="byte offset 3"):
        parse_html("é <x>")  # "é" is two bytes, so the tag starts at byte 3


def test_the_supported_subset_parses_to_entities():
    html = (
        "<b>b</b><strong>s</strong><i>i</i><em>e</em><u>u</u><ins>n</ins><s>s</s><strike>k"
        '</strike><del>d</del><tg-spoiler>t</tg-spoiler><span class="tg-spoiler">p</span>'
        '<a href="https://x.y/?a=1&amp;b=2">a</a><code>c</code><pre>p</pre>'
        "<blockquote expandable>q</blockquote>&lt;&gt;&amp;&quot;&#65;&#x42;"
    )
    parsed = parse_html(html)
    assert parsed.plain == 'bsieunskdtpacpq<>&"AB'
    types = [e["type"] for e in parsed.entities]
    assert types == [
        "bold",
        "bold",
        "italic",
        "italic",
        "underline",
        "underline",
        "strikethrough",
        "strikethrough",
        "strikethrough",
        "spoiler",
        "spoiler",
        "text_link",
        "code",
        "pre",
        "expandable_blockquote",
    ]
    assert parsed.entities[11]["url"] == "https://x.y/?a=1&b=2"


def test_nested_entities_and_utf16_offsets():
    parsed = parse_html("🔴 <b>BTC <i>up</i></b>")
    assert parsed.entities == [
        {"type": "bold", "offset": 3, "length": 6},
        {"type": "italic", "offset": 7, "length": 2},
    ]


def test_length_is_counted_after_entity_parsing(tg):
    assert send(tg, "<b>" + "a" * 4096 + "</b>")["ok"] is True  # markup does not count
    assert send(tg, "&amp;" * 4096)["ok"] is True  # an entity is one character
    assert error(send(tg, "a" * 4097)) == (400, "Bad Request: message is too long")
    assert error(send(tg, "🔴" * 2049)) == (400, "Bad Request: message is too long")  # UTF-16
    assert error(send(tg, "<b> </b>")) == (400, "Bad Request: message text is empty")
    assert len(tg.messages()) == 2


def test_plain_text_mode_takes_markup_literally(tg):
    body = call(tg, "sendMessage", chat_id=CHAT, text="1 < 2 & <b>").json()
    assert body["result"]["text"] == "1 < 2 & <b>"


def test_flood_control_answers_429_with_retry_after(tg):
    tg.faults.update({"flood": 2, "retry_after": 7})
    for _ in range(2):
        response = call(tg, "sendMessage", chat_id=CHAT, text="x")
        assert response.status_code == 429
        assert response.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        }
    assert send(tg, "x")["ok"] is True
    assert len(tg.messages()) == 1


@pytest.mark.parametrize(
    ("fault", "status", "description"),
    [
        ("server_error", 500, "Internal Server Error"),
        ("forbidden", 403, "Forbidden: bot was blocked by the user"),
        ("chat_not_found", 400, "Bad Request: chat not found"),
        ("unauthorized", 401, "Unauthorized"),
    ],
)
def test_switchable_faults_hit_the_next_requests_only(tg, fault, status, description):
    tg.faults.update({fault: 1})
    response = call(tg, "sendMessage", chat_id=CHAT, text="x")
    assert (response.status_code, error(response.json())) == (status, (status, description))
    assert send(tg, "x")["ok"] is True
    assert len(tg.messages()) == 1


def test_unauthorized_fault_also_hits_get_me(tg):
    tg.faults.update({"unauthorized": 1})
    assert call(tg, "getMe").status_code == 401
    assert call(tg, "getMe").status_code == 200


def test_migrated_group_answers_with_the_new_chat_id(tg):
    tg.migrate_chat(-2002, -1009999)
    assert send(tg, "x", chat=-2002) == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1009999},
    }
    assert send(tg, "x", chat=-1009999)["result"]["chat"]["type"] == "supergroup"


@pytest.mark.parametrize("delivers", [True, False])
def test_slow_answers_deliver_or_drop_the_message(tg, delivers):
    tg.faults.update({"slow": 1, "slow_s": 0.6, "slow_delivers": delivers})
    url = f"{tg.base_url}/bot{TOKEN}/sendMessage"
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        requests.post(url, data={"chat_id": CHAT, "text": "slow"}, timeout=0.2)
    assert time.monotonic() - started < 0.6  # the client gave up first
    if delivers:
        assert [m.plain for m in tg.wait_for_messages(1)] == ["slow"]
    else:
        # The server finishes the dropped request at 0.6 s; nothing may have been recorded.
        deadline = time.monotonic() + 2
        while tg.requests["sendMessage"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert tg.messages() == []


def test_fault_knobs_are_validated(tg):
    for bad in ({"flood": -1}, {"nope": 1}, {"slow_delivers": 1}, {"slow": 1.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tg.faults.update(bad)


def test_admin_endpoints_for_other_processes(tg):
    response = requests.post(f"{tg.base_url}/_sim/faults", json={"flood": 1}, timeout=10)
    assert response.json()["flood"] == 1
    assert requests.post(f"{tg.base_url}/_sim/faults", json={"x": 1}, timeout=10).status_code == 400
    assert send(tg, "x")["error_code"] == 429
    send(tg, "<b>hello</b>")
    [record] = requests.get(f"{tg.base_url}/_sim/messages", timeout=10).json()
    assert (record["plain"], record["chat_id"], record["message_id"]) == ("hello", CHAT, 1)
    requests.post(f"{tg.base_url}/_sim/reset", timeout=10)
    assert tg.messages() == []


def test_wait_for_messages_times_out_with_a_count(tg):
    with pytest.raises(TimeoutError, match="0 message"):
        tg.wait_for_messages(1, timeout_s=0.05)


@pytest.mark.slow
def test_cli_runs_the_stand_in_and_prints_messages():
    root = str(Path(cg_assets.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cg_assets.sim.cli",
            "--port",
            "0",
            "--ws-port",
            "0",
            "--telegram-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        base = lines[2]
        assert base.startswith("http://127.0.0.1:")
        body = requests.post(
            f"{base}/bot{DEFAULT_TOKEN}/sendMessage",
            data={
                "chat_id": DEFAULT_CHAT_ID,
                "text": "<b>BTC</b> 🔴 &lt;demo&gt;",
                "parse_mode": "HTML",
            },
            timeout=10,
        ).json()
        assert body["ok"] is True
        header = proc.stdout.readline()
        assert f"chat {DEFAULT_CHAT_ID} · message 1" in header
        assert proc.stdout.readline().strip() == "BTC 🔴 <demo>"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
