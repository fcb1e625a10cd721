"""The OpenAI-compatible annotator against a REAL local HTTP server (stdlib ``http.server`` on
127.0.0.1, started by the test) speaking the chat-completions protocol: parsing, retries on
injected 429 / 500 / timeouts, the sqlite answer cache surviving a SIGKILL mid-batch (the rerun
makes only the missing calls, counted at the server), and an API-key canary that never reaches a
file under the cache or report directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shiftcheck.probes.ffn import concepts
from shiftcheck.probes.ffn.annotators import AnnotatorError, Component
from shiftcheck.probes.ffn.annotators.cache import AnswerCache
from shiftcheck.probes.ffn.annotators.openai_compat import OpenAIAnnotator

CANARY = "sk-canary-7f3e91d2c4b5a6"
ENV = "SHIFTCHECK_TEST_ANNOTATOR_KEY"


def answer_for(messages: list[dict]) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if user.startswith("Words:"):
        return "Cannot Tell" if "zzz" in user else "words about " + user.split()[1].rstrip(",")
    if "user tasks" in system:
        return "coding; professional writing"
    return "Morphology"


class Server:
    """Counts requests; ``faults`` is a list consumed one per request: 429, 500 or 'slow'."""

    def __init__(self, delay: float = 0.0) -> None:
        self.requests = 0
        self.faults: list = []
        self.delay = delay
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests += 1
                    fault = outer.faults.pop(0) if outer.faults else None
                try:
                    if fault in (429, 500):
                        self._send(fault, {"error": {"message": "injected", "type": "test"}})
                        return
                    time.sleep(2.0 if fault == "slow" else outer.delay)
                    content = answer_for(body["messages"])
                    self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                     "choices": [{"index": 0, "finish_reason": "stop",
                                                  "message": {"role": "assistant", "content": content}}],
                                     "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, code: int, obj: dict) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(ENV, CANARY)


def comps(n: int) -> list[Component]:
    return [Component(i % 3, i + 1, tuple(f"w{i}_{j}" for j in range(15))) for i in range(n)]


def make(server: Server, tmp_path: Path, **kw) -> OpenAIAnnotator:
    return OpenAIAnnotator("test-model", base_url=server.url, api_key_env=ENV, cache_path=tmp_path / "c.sqlite",
                           backoff_s=0.01, **kw)


def test_three_steps_parsed(tmp_path):
    cs = comps(3) + [Component(0, 9, ("zzz",) * 15)]
    logs: list[str] = []
    with Server() as srv:
        ann = make(srv, tmp_path, log=logs.append)
        reps = ann.annotate(cs, 2)
        assert srv.requests == 2 * (3 * 3 + 1)  # Cannot Tell stops after the description
    assert len(reps) == 2 and all(len(r) == 4 for r in reps)
    a, dead = reps[0][0], reps[0][3]
    assert a.explainable and a.description == "words about w0_0" and not dead.explainable
    assert concepts.labels(a.scenario, concepts.SCENARIOS) == {"writing": 1, "math": 0, "coding": 1,
                                                               "translation": 0, "none": 0}
    assert concepts.labels(a.level, concepts.LEVELS)["morphology"] == 1
    assert "at most 24 calls" in logs[0] and "prompt tokens" in logs[0]


def test_retries_on_429_500_and_timeout(tmp_path):
    with Server() as srv:
        srv.faults = [429, 500, "slow"]
        ann = make(srv, tmp_path, timeout_s=0.5, concurrency=1)
        reps = ann.annotate(comps(1), 1)
        assert reps[0][0].explainable
        assert srv.requests == 3 + 3  # three faults retried, then the three steps


def test_gives_up_after_bounded_attempts(tmp_path):
    with Server() as srv:
        srv.faults = [500] * 10
        ann = make(srv, tmp_path, max_attempts=3)
        with pytest.raises(AnnotatorError, match="after 3 attempt"):
            ann.annotate(comps(1), 1)
        assert srv.requests == 3


def test_missing_key_is_named(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV)
    with pytest.raises(AnnotatorError, match=ENV):
        OpenAIAnnotator("m", base_url="http://127.0.0.1:9/v1", api_key_env=ENV, cache_path=tmp_path / "c.sqlite")


def test_rerun_is_free(tmp_path):
    with Server() as srv:
        make(srv, tmp_path).annotate(comps(4), 1)
        first = srv.requests
        make(srv, tmp_path).annotate(comps(4), 1)
        assert first == 12 and srv.requests == first


CHILD = """
import sys
from shiftcheck.probes.ffn.annotators import Component
from shiftcheck.probes.ffn.annotators.openai_compat import OpenAIAnnotator
cs = [Component(0, i + 1, tuple(f"w{i}_{j}" for j in range(15))) for i in range(int(sys.argv[3]))]
ann = OpenAIAnnotator("test-model", base_url=sys.argv[1], api_key_env=%r, cache_path=sys.argv[2], concurrency=2,
                      log=lambda m: print(m, flush=True))
ann.annotate(cs, 1)
print("done", flush=True)
""" % ENV


def test_cache_survives_sigkill_and_rerun_makes_only_missing_calls(tmp_path):
    n = 20
    total = 3 * n
    cache_path = tmp_path / "cache" / "answers.sqlite"
    with Server(delay=0.05) as srv:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, srv.url, str(cache_path), str(n)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(os.environ))
        deadline = time.monotonic() + 60
        while srv.requests < total // 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        out = proc.communicate(timeout=30)[0].decode()
        assert "done" not in out, "the child finished before it could be killed"
        saved = len(AnswerCache(cache_path))
        assert 0 < saved < total
        before = srv.requests
        logs: list[str] = []
        reps = OpenAIAnnotator("test-model", base_url=srv.url, api_key_env=ENV, cache_path=cache_path,
                               log=logs.append).annotate(comps(0) + [Component(0, i + 1, tuple(
                                   f"w{i}_{j}" for j in range(15))) for i in range(n)], 1)
        assert srv.requests - before == total - saved
        assert all(a.explainable for a in reps[0])
    # the report of a run with this annotator (verdicts, FFN section, figures, settings)
    from shiftcheck.fixtures.ffn import FfnLabels, ffn_context
    from shiftcheck.fixtures.options import Settings
    from shiftcheck.fixtures.report import write_report

    lab = FfnLabels(reps, reps, "openai:test-model@" + srv.url, "models")
    verdict = concepts.linguistic_unchanged(reps, reps, 3.0, 0.05, lab.annotator)
    settings = Settings(annotator="openai:test-model", annotator_base_url=srv.url, annotator_api_key_env=ENV)
    write_report(tmp_path / "report", [dict(verdict.to_dict(), test="t::x", test_name="x", verdict=True)], {},
                 {"ffn": ffn_context(lab)}, settings.to_json(), 0)
    assert (tmp_path / "report" / "report.md").is_file()
    for f in [*tmp_path.rglob("*")]:
        if f.is_file():
            assert CANARY.encode() not in f.read_bytes(), f
    assert CANARY not in out and not any(CANARY in m for m in logs)
