"""`imaging-agent eval --base-url URL --model NAME`: a hospital qualifying its own OpenAI-compatible model.

The model here is a small OpenAI-compatible server on 127.0.0.1 that answers one lookup goal the
way a good model would (a tool call, then words), with token counts; the command starts its own
private services, seeds the world, runs the goal, prints the table and writes the JSON results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration


class LookupModel(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        LookupModel.requests.append(body)
        if any(m["role"] == "tool" for m in body["messages"]):
            message: dict[str, Any] = {"role": "assistant", "content": "Left and right lung volumes are above."}
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [{
                "id": f"call_{len(LookupModel.requests)}", "type": "function",
                "function": {"name": "stored_results", "arguments": "{}"},
            }]}
        reply = {
            "id": f"chatcmpl-{len(LookupModel.requests)}", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if "tool_calls" in message else "stop"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def lookup_model() -> Iterator[str]:
    LookupModel.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), LookupModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    thread.join()


def test_eval_against_an_openai_compatible_server(tmp_path: Path, lookup_model: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGING_AGENT_", "OPENAI_"))}
    env.update(IMAGING_AGENT_RUN_DIR=str(tmp_path / "run"), PYTHONPATH=str(PROJECT_ROOT), COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "eval", "--base-url", lookup_model, "--model", "local-qwen",
         "--only", "lookup-last-processed", "--results", str(tmp_path / "results")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "success rate 100.0% (1/1); unsafe calls 0; tokens per goal 240" in result.stdout
    [saved] = (tmp_path / "results").glob("eval-local-qwen-*.json")
    summary = json.loads(saved.read_text())["summary"]
    assert summary["planner"] == "local-qwen" and summary["passed"] == 1 and summary["tokens_per_goal"] == 240
    assert LookupModel.requests[0]["model"] == "local-qwen"
    assert "stored_results" in {t["function"]["name"] for t in LookupModel.requests[0]["tools"]}
