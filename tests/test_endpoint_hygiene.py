"""Token hygiene: the token reaches only Hugging Face hosts and never shows in repr, dumps, logs or errors."""

from __future__ import annotations

import logging

import pytest
from huggingface_hub import constants as hub_constants
from langchain_core.load import dumpd, dumps

from hf_magic import ChatHuggingFace, EndpointError, HuggingFaceEndpoint
from hf_magic.backend import ChatRequest
from hf_magic.remote.request_args import is_huggingface_url
from tests.support.http_recorder import Reply, chunk

EXPLICIT = "hf_explicitSECRETtoken0001"
FROM_ENV = "hf_envSECRETtoken0002"
FROM_LEGACY_ENV = "hf_legacySECRETtoken0003"


@pytest.fixture
def tokens_everywhere(monkeypatch):
    """Tokens in both environment variables huggingface_hub and hf_magic read."""
    monkeypatch.setenv("HF_TOKEN", FROM_ENV)
    monkeypatch.setenv("HUGGINGFACEHUB_API_TOKEN", FROM_LEGACY_ENV)


@pytest.fixture
def recorder_as_hub(recorder, monkeypatch):
    """The local server configured as the hub (``HF_ENDPOINT``), i.e. a host that should get the token."""
    monkeypatch.setenv("HF_ENDPOINT", recorder.url)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)  # the hub's offline switch applies to it
    return recorder


def _all_sent(recorder) -> str:
    return " ".join(str(request.headers) + str(request.body) for request in recorder.requests)


@pytest.mark.parametrize("explicit", [None, EXPLICIT])
async def test_foreign_server_never_receives_a_token(recorder, tokens_everywhere, explicit):
    streamed = Reply(events=[chunk("Hi"), chunk(finish_reason="stop")])
    recorder.replies.extend([recorder.default, streamed, recorder.default, streamed])
    llm = HuggingFaceEndpoint(endpoint_url=recorder.url, huggingfacehub_api_token=explicit)
    model = ChatHuggingFace(llm=llm)
    model.invoke("Hi")
    list(model.stream("Hi"))
    await model.ainvoke("Hi")
    [piece async for piece in model.astream("Hi")]
    assert [request.method for request in recorder.requests] == ["GET", "POST", "POST", "POST", "POST"]
    for request in recorder.requests:
        assert "authorization" not in request.headers
    sent = _all_sent(recorder)
    for token in (EXPLICIT, FROM_ENV, FROM_LEGACY_ENV):
        assert token not in sent


def test_users_own_credential_for_their_server_is_sent(recorder, tokens_everywhere):
    llm = HuggingFaceEndpoint(endpoint_url=recorder.url, server_kwargs={"headers": {"Authorization": "Bearer mine"}})
    llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))
    assert [request.headers.get("authorization") for request in recorder.requests] == ["Bearer mine", "Bearer mine"]


@pytest.mark.parametrize(("explicit", "expected"), [(EXPLICIT, EXPLICIT), (None, FROM_LEGACY_ENV)])
def test_hugging_face_host_receives_the_token(recorder_as_hub, tokens_everywhere, explicit, expected):
    # The positive control: the same code does send the token where it belongs.
    llm = HuggingFaceEndpoint(endpoint_url=recorder_as_hub.url, huggingfacehub_api_token=explicit)
    llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))
    assert recorder_as_hub.posts()[0].headers["authorization"] == f"Bearer {expected}"


def test_hub_offline_mode_is_reported_for_hugging_face_hosts(monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    llm = HuggingFaceEndpoint(endpoint_url="https://my-endpoint.endpoints.huggingface.cloud")
    with pytest.raises(EndpointError, match=r"HF_HUB_OFFLINE is set.*unset HF_HUB_OFFLINE"):
        llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))


def test_local_server_works_with_hub_offline(recorder, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    reply = HuggingFaceEndpoint(endpoint_url=recorder.url).chat(
        ChatRequest(messages=[{"role": "user", "content": "Hi"}])
    )
    assert reply.text == "Hello."


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://router.huggingface.co/v1", True),
        ("https://abc.us-east-1.aws.endpoints.huggingface.cloud", True),
        ("https://huggingface.co", True),
        ("https://someone-space.hf.space", True),
        ("http://router.huggingface.co/v1", False),  # never a token over plain HTTP
        ("https://huggingface.co.evil.example", False),
        ("https://evilhuggingface.co", False),
        ("http://127.0.0.1:8000", False),
        ("https://api.openai.com/v1", False),
    ],
)
def test_is_huggingface_url(url, expected, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert is_huggingface_url(url) is expected


def test_token_absent_from_repr_str_dumps_and_serialization(tokens_everywhere):
    llm = HuggingFaceEndpoint(repo_id="org/model", huggingfacehub_api_token=EXPLICIT)
    model = ChatHuggingFace(llm=llm)
    renderings = [
        repr(llm),
        str(llm),
        repr(model),
        str(model),
        str(llm.model_dump()),
        llm.model_dump_json(),
        str(model.model_dump()),
        str(dumpd(llm)),
        str(dumpd(model)),
        dumps(model),
        str(llm._identifying_params),
    ]
    for text in renderings:
        assert EXPLICIT not in text
        assert FROM_ENV not in text
        assert FROM_LEGACY_ENV not in text
    assert llm.lc_secrets == {"huggingfacehub_api_token": "HUGGINGFACEHUB_API_TOKEN"}
    assert llm.huggingfacehub_api_token is not None
    assert llm.huggingfacehub_api_token.get_secret_value() == EXPLICIT  # kept, only hidden


def test_env_token_is_not_stored_on_the_instance(tokens_everywhere):
    llm = HuggingFaceEndpoint(repo_id="org/model")
    assert llm.huggingfacehub_api_token is None  # read when a request is made, not copied into fields


def test_token_absent_from_logs_and_errors(recorder_as_hub, tokens_everywhere, caplog):
    # A hostile or careless server that echoes the Authorization header back in its error body.
    recorder_as_hub.default = Reply(status=400, body={"detail": f"bad request from Bearer {EXPLICIT}"})
    llm = HuggingFaceEndpoint(endpoint_url=recorder_as_hub.url, huggingfacehub_api_token=EXPLICIT)
    with caplog.at_level(logging.DEBUG), pytest.raises(EndpointError) as caught:
        llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))
    assert recorder_as_hub.posts()[0].headers["authorization"] == f"Bearer {EXPLICIT}"  # it was sent there
    assert EXPLICIT not in str(caught.value)
    assert "***" in str(caught.value)
    assert EXPLICIT not in caplog.text
    assert FROM_ENV not in caplog.text


def test_token_absent_from_stream_errors(recorder_as_hub, tokens_everywhere):
    recorder_as_hub.default = Reply(events=[chunk("Par"), {"error": f"token {EXPLICIT} exhausted"}])
    llm = HuggingFaceEndpoint(endpoint_url=recorder_as_hub.url, huggingfacehub_api_token=EXPLICIT)
    with pytest.raises(EndpointError) as caught:
        list(llm.stream_chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}])))
    assert EXPLICIT not in str(caught.value)


def test_403_on_a_hugging_face_host_links_the_gated_model_page(recorder_as_hub, tokens_everywhere):
    recorder_as_hub.default = Reply(status=403, body={"error": "gated"})
    llm = HuggingFaceEndpoint(endpoint_url=recorder_as_hub.url, repo_id="org/gated-model")
    with pytest.raises(EndpointError, match=r"org/gated-model is gated.*https://huggingface.co/org/gated-model"):
        llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))


def test_401_with_a_token_says_the_token_was_refused(recorder_as_hub, tokens_everywhere):
    recorder_as_hub.default = Reply(status=401, body={"error": "Invalid credentials"})
    llm = HuggingFaceEndpoint(endpoint_url=recorder_as_hub.url, repo_id="org/model")
    with pytest.raises(EndpointError, match=r"refused the token \(401\).*settings/tokens") as caught:
        llm.chat(ChatRequest(messages=[{"role": "user", "content": "Hi"}]))
    assert FROM_LEGACY_ENV not in str(caught.value)


# ------------------------------------------------------------------------------- the turn log
def _logged_session(recorder, tmp_path, monkeypatch, token=None):
    """A session on the local server, followed by a turn log of its own under ``tmp_path``."""
    from hf_magic.notebook.kernel_log import KernelLog
    from hf_magic.notebook.model_spec import ModelSpec
    from hf_magic.notebook.session import ChatSession

    monkeypatch.setenv("HF_MAGIC_HOME", str(tmp_path / "home"))
    session = ChatSession("hygiene")
    llm = HuggingFaceEndpoint(endpoint_url=recorder.url, huggingfacehub_api_token=token)
    session.use_model(ChatHuggingFace(llm=llm), ModelSpec(backend="endpoint", endpoint_url=recorder.url))
    log = KernelLog()
    log.follow(session)
    return session, log


def _written_anywhere(data: bytes, token: str) -> bool:
    """The token as written, or as the full-text index keeps it (lower-cased, split at the underscore)."""
    return any(form.encode() in data for form in (token, token.lower(), token.split("_", 1)[1].lower()))


def test_no_token_is_ever_written_to_the_turn_log(recorder, tokens_everywhere, tmp_path, monkeypatch):
    from tests.support.log_files import every_byte

    shaped = "hf_" + "A1b2C3d4" * 5  # shaped like a token, though nobody configured it
    recorder.replies.extend(
        [
            Reply(events=[chunk(f"Echo: {EXPLICIT} {FROM_ENV} {shaped}"), chunk(finish_reason="stop")]),
            Reply(status=400, body={"detail": f"bad request from Bearer {EXPLICIT} {FROM_LEGACY_ENV}"}),
        ]
    )
    session, log = _logged_session(recorder, tmp_path, monkeypatch, token=EXPLICIT)
    session.send(f"My tokens are {FROM_ENV} and {FROM_LEGACY_ENV}, keep them safe")
    with pytest.raises(EndpointError):
        session.send(f"Again with {EXPLICIT}")
    target = tmp_path / "export.json"
    session.export(target)
    data = every_byte(log.store().path)
    assert log.store().count() == 2 and b"***" in data and b"keep them safe" in data  # it was written, blanked
    for token in (EXPLICIT, FROM_ENV, FROM_LEGACY_ENV, shaped):
        assert not _written_anywhere(data, token), token


def test_the_hf_auth_login_token_is_blanked_from_the_turn_log(recorder, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tests.support.log_files import every_byte

    login_token = "hf_loginSECRETtoken0005"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACEHUB_API_TOKEN", raising=False)
    (tmp_path / "token").write_text(login_token)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    recorder.replies.append(Reply(events=[chunk("ok"), chunk(finish_reason="stop")]))
    session, log = _logged_session(recorder, tmp_path, monkeypatch)
    session.send(f"I pasted my token {login_token} by mistake")
    data = every_byte(log.store().path)
    assert b"by mistake" in data and not _written_anywhere(data, login_token)


def test_url_passwords_are_blanked():
    from hf_magic.notebook.turn_records import blank_secrets

    text = "see https://alice:s3cr3t-pass@example.com/v1 and http://example.com/plain"
    assert blank_secrets(text, []) == "see https://alice:***@example.com/v1 and http://example.com/plain"
