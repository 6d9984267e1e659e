"""How each dialect asks for a schema, how errors are told apart, and the LLM config file's
mistakes: pure functions, no server (the servers are in test_llm.py and
test_real_model.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.models.config import load_llm_config
from actors.models.dialects import (
    ChatRequest,
    OpenAICompatible,
    _http_error,
    estimate_input_tokens,
    server_message,
)
from actors.models.router import ModelRouter, RetryPolicy
from protocols import ConfigError
from tests.integration.test_real_model import triage_prompt

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}}
REQUEST = ChatRequest(messages=[{"role": "user", "content": "hi"}], schema=SCHEMA, max_tokens=9)

# What llama-cpp-python 0.3.36 answered to OpenAI's json_schema shape (HTTP 500).
LLAMA_CPP_500 = json.dumps(
    {
        "error": {
            "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
            "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}"
            '\n\n  File "/venv/llama_cpp/server/app.py", line 376, in create_chat_completion'
            "\n    POST /v1/chat/completions",
            "type": "internal_server_error",
        }
    }
)


def provider(dialect: str, url: str = "http://h:1/v1") -> OpenAICompatible:
    return OpenAICompatible(name="p", base_url=url, model="m", dialect=dialect)


def test_each_dialect_asks_for_the_schema_its_own_way() -> None:
    url, body = provider("openai").body(REQUEST, stream=False)
    assert url == "http://h:1/v1/chat/completions"
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA

    url, body = provider("llama_cpp").body(REQUEST, stream=True)
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert body["stream"] is True and body["max_tokens"] == 9

    url, body = provider("ollama").body(REQUEST, stream=False)
    assert url == "http://h:1/api/chat"  # the native API, whatever base_url's /v1
    assert body["format"] == SCHEMA and body["options"]["num_predict"] == 9
    assert body["stream"] is False and "response_format" not in body

    url, body = provider("prompt_only").body(REQUEST, stream=False)
    assert "response_format" not in body and "format" not in body
    assert json.dumps(SCHEMA) in body["messages"][0]["content"]  # told, not enforced


def test_an_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="dialect 'json' is not one of openai, llama_cpp"):
        provider("json")


def test_a_refused_request_is_told_apart_from_an_outage() -> None:
    refused = _http_error("local", 500, {}, LLAMA_CPP_500)
    assert (refused.kind, refused.retryable) == ("rejected", False)
    assert "Input should be 'text' or 'json_object'" in str(refused)
    assert "File" not in str(refused)  # the server's traceback is not the message
    outage = _http_error("local", 503, {}, '{"error": {"message": "overloaded"}}')
    assert (outage.kind, outage.retryable) == ("server_error", True)
    assert _http_error("local", 400, {}, "bad").kind == "rejected"
    limited = _http_error("local", 429, {"Retry-After": "2"}, "{}")
    assert (limited.kind, limited.retry_after) == ("rate_limited", 2.0)


def test_the_server_message_is_found_in_each_shape() -> None:
    assert server_message('{"error": "model not found"}') == "model not found"  # Ollama
    assert server_message('{"detail": "Not Found"}') == "Not Found"  # FastAPI
    assert server_message("<html>bad gateway</html>") == "<html>bad gateway</html>"


def test_a_provider_config_change_starts_its_shared_state_fresh() -> None:
    first, same = provider("openai"), provider("openai")
    assert first.key == same.key and first.key.startswith("p.m.")
    assert provider("llama_cpp").key != first.key
    assert provider("openai", "http://other:1/v1").key != first.key


def test_the_reservation_covers_what_rig_would_count() -> None:
    router = ModelRouter([provider("llama_cpp")], RetryPolicy())
    prompt = triage_prompt(64)
    reserved = router.estimate(prompt)
    assert reserved.input_tokens == estimate_input_tokens(ModelRouter.request(prompt).messages)
    assert reserved.output_tokens == 64


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llm.toml"
    path.write_text(text)
    return path


def test_mistakes_in_the_llm_config_name_the_file_and_what_is_known(tmp_path: Path) -> None:
    base = '[providers.local]\nbase_url = "http://h/v1"\nmodel = "m"\n'
    typo = write(tmp_path, base + 'dialekt = "llama_cpp"\n[agents.a]\nproviders = ["local"]\n')
    with pytest.raises(ConfigError, match=r"\[providers.local\] has unknown setting\(s\) dialekt"):
        load_llm_config(typo, "a")
    bad = write(tmp_path, base + 'dialect = "json"\n[agents.a]\nproviders = ["local"]\n')
    with pytest.raises(ConfigError, match="dialect 'json'; choose one of: openai"):
        load_llm_config(bad, "a")
    agent_typo = write(tmp_path, base + '[agents.a]\nproviders = ["local"]\ntimout = 3\n')
    with pytest.raises(ConfigError, match=r"\[agents.a\] has unknown setting\(s\) timout"):
        load_llm_config(agent_typo, "a")
    broken = write(tmp_path, "[providers\n")
    with pytest.raises(ConfigError, match=r"llm\.toml"):
        load_llm_config(broken, "a")
    ok = write(tmp_path, base + 'dialect = "ollama"\n[agents.a]\nproviders = ["local"]\n')
    configured = load_llm_config(ok, "a")
    assert configured is not None and configured.providers[0].dialect == "ollama"
