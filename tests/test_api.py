"""The HTTP API through a real server (uvicorn on 127.0.0.1) and a real client (httpx), on the tiny models."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import soundfile as sf

from yuefu.errors import InvalidArgumentError
from yuefu.server import build_server
from yuefu.server.api import create_api
from yuefu.service import ModelPool

SR = 32000
FRAME_SAMPLES = 640  # 32 kHz / 50 Hz: a duration is generated to a whole number of codec frames
QUEUE_SIZE = 4
SYNC_MAX = 5.0
BODY_LIMIT = 2 * 2**20
TIMEOUT = httpx.Timeout(180.0, connect=30.0)  # a loaded 2-core machine can be slow; no assertion is on time


@dataclass
class Live:
    url: str
    pool: ModelPool
    text_model: str
    melody_model: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=TIMEOUT)


def _start(app) -> tuple[str, object, threading.Thread]:
    """Run ``app`` with uvicorn on a free loopback port in a thread; the socket is bound first (no port race)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(600):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "the server did not start"
    return f"http://127.0.0.1:{port}", server, thread


def _stop(server, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(60)


@pytest.fixture(scope="module")
def pool(hf_dir, hf_melody_dir) -> ModelPool:
    pool = ModelPool()
    pool.get(str(hf_dir))
    pool.get(str(hf_melody_dir))
    return pool


@pytest.fixture(scope="module")
def live(pool, hf_dir, hf_melody_dir):
    app = create_api(pool, str(hf_dir), models=[str(hf_melody_dir)], max_duration=60.0, queue_size=QUEUE_SIZE,
                     sync_max_duration=SYNC_MAX, max_body_bytes=BODY_LIMIT)
    url, server, thread = _start(app)
    yield Live(url, pool, str(hf_dir), str(hf_melody_dir))
    _stop(server, thread)


@pytest.fixture
def client(live):
    with live.client() as c:
        yield c


def _tone_wav(seconds: float = 1.0, freq: float = 440.0, sr: int = SR) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _decode(data: bytes) -> tuple[np.ndarray, int]:
    wav, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wav, sr


def _assert_error(response: httpx.Response, status: int | None = None) -> str:
    """A 4xx (or the expected 503) JSON error of one line, never a 500 or a traceback; returns the message."""
    assert 400 <= response.status_code < 500 or response.status_code == status == 503, \
        (response.status_code, response.text[:500])
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message and "\n" not in message and "Traceback" not in message
    return message


def _wait_job(client: httpx.Client, job_id: str, polls: int = 1200) -> tuple[dict, list[float]]:
    """Poll a job until it is final (bounded); returns its last status and the progress values seen."""
    seen = []
    for _ in range(polls):
        r = client.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        status = r.json()
        seen.append(status["progress"])
        if status["status"] in ("done", "error", "cancelled"):
            return status, seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {status}")


# ---------------------------------------------------------------------------------------------------------------
# Health, models, schema


def test_health_and_models(client, live):
    r = client.get("/v1/health")
    assert r.status_code == 200
    health = r.json()
    assert health["status"] == "ok" and health["version"]
    assert health["queue"]["max"] == QUEUE_SIZE and health["queue"]["size"] >= 0
    assert live.text_model in health["models_loaded"]

    r = client.get("/v1/models")
    assert r.status_code == 200
    models = r.json()
    assert models["default"] == live.text_model
    assert models["models"] == [live.text_model, live.melody_model]
    assert "facebook/musicgen-small" in models["official"]
    assert models["max_duration"] == 60.0 and models["sync_max_duration"] == SYNC_MAX


def test_openapi_schema(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    assert {"/v1/generate", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/audio/{index}", "/v1/health",
            "/v1/models"} <= set(schema["paths"])
    op = schema["paths"]["/v1/generate"]["post"]
    content = op["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    ref = content["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    request = schema["components"]["schemas"][name]
    assert {"prompt", "prompts", "unconditional", "model", "duration", "seed", "top_k", "top_p", "temperature",
            "cfg_coef", "use_sampling", "format", "melody", "continuation", "mode"} <= set(request["properties"])
    assert request.get("additionalProperties") is False
    assert {"200", "202", "400", "404", "413", "422", "503"} <= set(op["responses"])
    assert "audio/wav" in op["responses"]["200"]["content"]
    for path in schema["paths"].values():  # every reference resolves
        for ref in _refs(path):
            assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"], ref
    try:
        from openapi_spec_validator import validate
    except ImportError:  # the structural checks above still hold
        return
    validate(schema)


def _refs(node) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_docs_page(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]


# ---------------------------------------------------------------------------------------------------------------
# Generating


def test_sync_generate_returns_audio(client):
    r = client.post("/v1/generate", json={"prompt": "lo-fi hip hop with a warm piano", "duration": 1.0, "seed": 3})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav"
    assert r.headers["x-yuefu-seed"] == "3"
    assert r.headers["x-yuefu-sample-rate"] == str(SR)
    assert urllib.parse.unquote(r.headers["x-yuefu-prompt-used"]) == "lo-fi hip hop with a warm piano"
    wav, sr = _decode(r.content)
    assert sr == SR and wav.shape[1] == 1
    assert abs(wav.shape[0] - SR) <= FRAME_SAMPLES
    assert np.isfinite(wav).all()


def test_same_seed_same_bytes(client):
    body = {"prompt": "calm ambient pads", "duration": 0.5, "seed": 1234, "mode": "sync"}
    first = client.post("/v1/generate", json=body)
    second = client.post("/v1/generate", json=body)
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    other = client.post("/v1/generate", json={**body, "seed": 1235})
    assert other.status_code == 200 and other.content != first.content


def test_tempo_drafts(client):
    body = {"prompt": "a reel at 126 BPM", "duration": 0.6, "seed": 8, "mode": "sync"}
    plain = client.post("/v1/generate", json=body)
    drafted = client.post("/v1/generate", json={**body, "tempo_drafts": 3, "tempo_draft_seconds": 0.3})
    again = client.post("/v1/generate", json={**body, "tempo_drafts": 3, "tempo_draft_seconds": 0.3})
    assert plain.status_code == drafted.status_code == again.status_code == 200, drafted.text
    assert drafted.content == again.content and drafted.content != plain.content


def test_random_seed_is_reported(client):
    r = client.post("/v1/generate", json={"prompt": "jazz trio with upright bass", "duration": 0.3})
    assert r.status_code == 200, r.text
    seed = int(r.headers["x-yuefu-seed"])
    again = client.post("/v1/generate", json={"prompt": "jazz trio with upright bass", "duration": 0.3,
                                              "seed": seed})
    assert again.content == r.content


def test_chinese_prompt_and_flac(client):
    from yuefu.conditioners.normalize import normalize_prompt

    prompt = "欢快的古筝"
    r = client.post("/v1/generate", json={"prompt": prompt, "duration": 0.3, "seed": 5, "format": "flac"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/flac"
    used = urllib.parse.unquote(r.headers["x-yuefu-prompt-used"])
    assert used == normalize_prompt(prompt).text_used
    assert "x-yuefu-prompt-left-out" not in r.headers  # every word was read
    wav, sr = _decode(r.content)
    assert sr == SR and abs(wav.shape[0] - 0.3 * SR) <= FRAME_SAMPLES
    # words neither the lexicon nor the dictionary reads are named in a header (and in the sidecar metadata)
    r = client.post("/v1/generate", json={"prompt": "欢快的古筝，窝在家里", "duration": 0.3, "seed": 5})
    assert r.status_code == 200, r.text
    assert urllib.parse.unquote(r.headers["x-yuefu-prompt-left-out"]) == "窝"


def test_async_job_to_completion(client):
    r = client.post("/v1/generate", json={"prompts": ["rock band with drums and bass guitar", "calm ambient pads"],
                                          "duration": 0.5, "seed": 9})
    assert r.status_code == 202, r.text
    accepted = r.json()
    job_id = accepted["job_id"]
    assert accepted["status_url"] == f"/v1/jobs/{job_id}"
    status, seen = _wait_job(client, job_id)
    assert status["status"] == "done", status
    assert status["progress"] == 1.0 and status["error"] is None
    assert all(0 <= p <= 1 for p in seen) and seen == sorted(seen)
    assert len(status["results"]) == 2
    for i, result in enumerate(status["results"]):
        assert result["audio_url"] == f"/v1/jobs/{job_id}/audio/{i}"
        meta = result["metadata"]
        assert meta["seed"] == 9 and meta["sample_rate"] == SR and meta["batch_index"] == i
        audio = client.get(result["audio_url"])
        assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
        wav, sr = _decode(audio.content)
        assert sr == SR and abs(wav.shape[0] - 0.5 * SR) <= FRAME_SAMPLES
    _assert_error(client.get(f"/v1/jobs/{job_id}/audio/2"), 404)


def test_async_mode_for_one_prompt_and_delete(client):
    r = client.post("/v1/generate", json={"unconditional": True, "duration": 0.3, "mode": "async", "seed": 1})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    status, _ = _wait_job(client, job_id)
    assert status["status"] == "done" and status["results"][0]["metadata"]["prompt"] is None
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
    _assert_error(client.get(f"/v1/jobs/{job_id}"), 404)


def test_melody_on_melody_model(client, live):
    tone = _tone_wav()
    body = {"prompt": "a cheerful erhu melody over a rock beat", "duration": 0.5, "seed": 2,
            "melody": base64.b64encode(tone).decode()}
    r = client.post("/v1/generate", json={**body, "model": live.melody_model})
    assert r.status_code == 200, r.text
    wav, sr = _decode(r.content)
    assert sr == SR and abs(wav.shape[0] - 0.5 * SR) <= FRAME_SAMPLES

    # The same request as multipart (the melody as a file part) gives the same audio.
    form = {k: v for k, v in body.items() if k != "melody"} | {"model": live.melody_model}
    r2 = client.post("/v1/generate", data={"request": json.dumps(form)},
                     files={"melody": ("tone.wav", tone, "audio/wav")})
    assert r2.status_code == 200, r2.text
    assert r2.content == r.content

    # A text model has no melody conditioning: a clear 400, not a 500.
    message = _assert_error(client.post("/v1/generate", json={**body, "model": live.text_model}), 400)
    assert "melody" in message


def test_melody_job_metadata_names_the_upload(client, live):
    r = client.post("/v1/generate", data={"request": json.dumps({
        "prompts": ["a", "b"], "duration": 0.3, "seed": 4, "model": live.melody_model})},
        files={"melody": ("my tune.wav", _tone_wav(0.5), "audio/wav")})
    assert r.status_code == 202, r.text
    status, _ = _wait_job(client, r.json()["job_id"])
    assert status["status"] == "done", status
    meta = status["results"][0]["metadata"]
    assert meta["request"]["melody"] == "my tune.wav"
    assert len(meta["melody_sha256"]) == 64


def test_continuation(client):
    r = client.post("/v1/generate", json={"prompt": "calm ambient pads", "duration": 0.6, "seed": 2,
                                          "continuation": base64.b64encode(_tone_wav(0.2)).decode()})
    assert r.status_code == 200, r.text
    wav, sr = _decode(r.content)
    assert sr == SR and abs(wav.shape[0] - 0.6 * SR) <= FRAME_SAMPLES


# ---------------------------------------------------------------------------------------------------------------
# Bad requests: a one-line 4xx each, before anything slow happens

_GARBAGE = base64.b64encode(b"this is not audio at all " * 200).decode()

BAD_JSON = [
    ({"prompt": "x", "duration": "abc"}, 422, "duration"),
    ({"prompts": 3}, 422, "prompts"),
    ({"prompts": ["ok", 3]}, 422, "prompts[1]"),
    ({"prompt": 5}, 422, "prompt"),
    ({"prompt": "x", "top_k": -1}, 422, "top_k"),
    ({"prompt": "x", "top_p": 2}, 422, "top_p"),
    ({"prompt": "x", "seed": "1"}, 422, "seed"),
    ({"prompt": "x", "seed": -1}, 422, "seed"),
    ({"prompt": "x", "use_sampling": "yes"}, 422, "use_sampling"),
    ({"prompt": "x", "duration": 0}, 422, "duration"),
    ({"prompt": "x", "format": "aiff"}, 422, "format"),
    ({"prompt": "x", "mode": "later"}, 422, "mode"),
    ({"prompt": "x", "tempo_drafts": 17}, 422, "tempo_drafts"),
    ({"prompt": "x", "tempo_draft_seconds": 0}, 422, "tempo_draft_seconds"),
    ({"prompt": "x", "bogus": 1}, 422, "bogus"),
    ({"prompt": "x", "prompts": []}, 422, "prompts"),
    ({"prompt": "x", "duration": 7200}, 400, "duration"),
    ({"prompt": "x", "duration": 10, "mode": "sync"}, 400, "async"),
    ({"prompts": ["a", "b"], "duration": 0.3, "mode": "sync"}, 400, "async"),
    ({}, 400, "prompt"),
    ({"prompt": "x", "prompts": ["y"]}, 400, "prompt"),
    ({"prompt": "x", "unconditional": True}, 400, "prompt"),
    ({"prompt": "x", "melody": "not base64 !!"}, 400, "base64"),
    ({"prompt": "x", "melody": "data:audio/wav,abc"}, 400, "base64"),
    ({"prompt": "x", "melody": _GARBAGE}, 400, "melody"),
    ({"prompt": "x", "continuation": _GARBAGE}, 400, "continuation"),
    ({"prompt": "x", "melody": base64.b64encode(_tone_wav(0.1)).decode(),
      "continuation": base64.b64encode(_tone_wav(0.1)).decode()}, 400, "melody"),
    ({"prompt": "x", "model": "facebook/musicgen-large"}, 404, "model"),
    ({"prompt": "x", "model": "/etc"}, 404, "model"),
]


@pytest.mark.parametrize(("body", "status", "mentions"), BAD_JSON, ids=[str(i) for i in range(len(BAD_JSON))])
def test_bad_json_requests(client, body, status, mentions):
    message = _assert_error(client.post("/v1/generate", json=body), status)
    assert mentions in message, message
    assert "yuefu-upload-" not in message  # no temporary paths of the server


@pytest.mark.parametrize(("content", "content_type", "status"), [
    (b"{not json", "application/json", 422),
    (b"[1, 2]", "application/json", 422),
    (b'{"prompt": "x", "duration": 1e999}', "application/json", 422),
    (b'{"prompt": "x", "duration": NaN}', "application/json", 422),
    (b"\xff\xfe garbage", "application/json", 422),
    (b"prompt=x", "text/plain", 415),
    (b"--nope\r\ngarbage", "multipart/form-data; boundary=nope", 422),
    (b"garbage", "multipart/form-data", 400),
])
def test_bad_bodies(client, content, content_type, status):
    _assert_error(client.post("/v1/generate", content=content, headers={"content-type": content_type}), status)


def test_bad_multipart(client):
    tone = _tone_wav(0.1)
    _assert_error(client.post("/v1/generate", files={"melody": ("a.wav", tone, "audio/wav")}), 422)  # no request
    _assert_error(client.post("/v1/generate", data={"request": "{oops"}), 422)
    _assert_error(client.post("/v1/generate", data={"request": '{"prompt": "x"}', "other": "1"}), 422)
    message = _assert_error(client.post("/v1/generate", data={"request": '{"prompt": "x"}'},
                                        files={"melody": ("x.wav", b"garbage bytes" * 50, "audio/wav")}), 400)
    assert "melody" in message and "yuefu-upload-" not in message
    both = {"request": json.dumps({"prompt": "x", "melody": base64.b64encode(tone).decode()})}
    _assert_error(client.post("/v1/generate", data=both, files={"melody": ("a.wav", tone, "audio/wav")}), 400)


def test_body_too_large(client):
    big = {"prompt": "x", "melody": base64.b64encode(b"\0" * (BODY_LIMIT * 3 // 4 + 1000)).decode()}
    message = _assert_error(client.post("/v1/generate", json=big), 413)
    assert "MiB" in message
    files = {"melody": ("big.wav", b"\0" * (BODY_LIMIT + 1000), "audio/wav")}
    _assert_error(client.post("/v1/generate", data={"request": '{"prompt": "x"}'}, files=files), 413)
    assert client.get("/v1/health").status_code == 200


def test_unknown_job_and_endpoint(client):
    _assert_error(client.get("/v1/jobs/nope"), 404)
    _assert_error(client.get("/v1/jobs/nope/audio/0"), 404)
    _assert_error(client.delete("/v1/jobs/nope"), 404)
    _assert_error(client.get("/v1/jobs/nope/audio/first"), 422)
    _assert_error(client.get("/v1/nothing-here"), 404)
    assert "POST" in _assert_error(client.get("/v1/generate"), 405)
    _assert_error(client.post("/v1/health"), 405)


def test_failed_async_job_reports_its_error(client, live):
    tone = base64.b64encode(_tone_wav(0.3)).decode()
    r = client.post("/v1/generate", json={"prompts": ["a", "b"], "duration": 0.3, "melody": tone,
                                          "model": live.text_model})
    assert r.status_code == 202, r.text
    status, _ = _wait_job(client, r.json()["job_id"])
    assert status["status"] == "error" and "melody" in status["error"] and status["results"] == []
    _assert_error(client.get(f"/v1/jobs/{r.json()['job_id']}/audio/0"), 409)


# ---------------------------------------------------------------------------------------------------------------
# Load: 20 clients at once against a queue of 4


def test_twenty_concurrent_clients(live):
    """Every client is answered (200/202, or 503 past the queue), none crashes the server.

    The test holds the model's lock first, so the worker stops on its first job and the queue fills for sure:
    exactly what a long generation does, without depending on how fast this machine is.
    """
    n = 20
    lock = live.pool.lock(live.text_model)

    def call(i: int) -> httpx.Response:
        body = {"prompt": f"lo-fi hip hop {i}", "duration": 0.3, "seed": i, "mode": "async" if i % 2 else "auto"}
        with live.client() as c:
            return c.post("/v1/generate", json=body)

    assert lock.acquire(timeout=120)
    held = True
    try:
        with ThreadPoolExecutor(n) as ex:
            futures = [ex.submit(call, i) for i in range(n)]
            for _ in range(1200):  # 15 or more are answered at once: 503s, and 202s for accepted async jobs
                if sum(f.done() for f in futures) >= n - (QUEUE_SIZE + 1):
                    break
                time.sleep(0.1)
            lock.release()
            held = False
            responses = [f.result() for f in futures]
    finally:
        if held:
            lock.release()

    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 202, 503}, codes
    assert codes.count(503) >= n - (QUEUE_SIZE + 1), codes
    assert codes.count(200) + codes.count(202) >= 1, codes
    with live.client() as c:
        for r in responses:
            if r.status_code == 503:
                assert int(r.headers["retry-after"]) > 0
                assert "queue is full" in _assert_error(r, 503)
            elif r.status_code == 200:
                wav, sr = _decode(r.content)
                assert sr == SR and wav.shape[0] > 0
            else:
                status, _ = _wait_job(c, r.json()["job_id"])
                assert status["status"] == "done", status
        health = c.get("/v1/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert c.post("/v1/generate", json={"prompt": "after the rush", "duration": 0.3}).status_code == 200


def _poll_health(live: Live, key: str, value: int, polls: int = 1200) -> None:
    with live.client() as c:
        for _ in range(polls):
            if c.get("/v1/health").json()["queue"][key] == value:
                return
            time.sleep(0.1)
    raise AssertionError(f"the queue's {key} never became {value}")


def test_sync_client_waits_and_a_gone_client_frees_its_place(live):
    """A synchronous client waits as long as its job takes; one that hangs up before its job starts frees its
    place in the queue (the job is cancelled), and the server goes on."""
    lock = live.pool.lock(live.text_model)
    body = {"prompt": "epic orchestral music with strings", "duration": 0.3, "seed": 8}

    def patient() -> httpx.Response:
        with live.client() as c:
            return c.post("/v1/generate", json=body)

    def impatient() -> None:
        with httpx.Client(base_url=live.url, timeout=httpx.Timeout(1.5)) as c, pytest.raises(httpx.ReadTimeout):
            c.post("/v1/generate", json=body)

    assert lock.acquire(timeout=120)
    held = True
    try:
        with ThreadPoolExecutor(2) as ex:
            first = ex.submit(patient)
            _poll_health(live, "running", 1)  # the worker holds the first job, blocked on the model
            gone = ex.submit(impatient)
            _poll_health(live, "size", 1)
            gone.result()
            _poll_health(live, "size", 0)  # the second one left the queue when its client hung up
            lock.release()
            held = False
            r = first.result()
    finally:
        if held:
            lock.release()
    assert r.status_code == 200 and r.headers["x-yuefu-seed"] == "8"


# ---------------------------------------------------------------------------------------------------------------
# One process for the web app and the API


def test_build_server_rejects_nothing_to_serve(pool, hf_dir):
    with pytest.raises(InvalidArgumentError):
        build_server(str(hf_dir), api=False, app=False, pool=pool)
    with pytest.raises(InvalidArgumentError):
        build_server(str(hf_dir), pool=pool, preload=False, theme="dark")  # a web app option without the app


def test_web_app_and_api_in_one_process(pool, hf_dir, monkeypatch):
    """The real web app mounted at / beside the API under /v1, sharing one model pool."""
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    pytest.importorskip("gradio")
    app = build_server(str(hf_dir), app=True, pool=pool, max_duration=20.0, queue_size=2, max_upload_mb=5.0)
    url, server, thread = _start(app)
    try:
        with httpx.Client(base_url=url, timeout=TIMEOUT) as c:
            page = c.get("/")
            assert page.status_code == 200 and "text/html" in page.headers["content-type"]
            config = c.get("/config").json()  # gradio's description of the mounted page
            assert config["max_file_size"] == 5 * 1024 * 1024  # the upload limit survived the mount
            health = c.get("/v1/health")
            assert health.status_code == 200 and health.json()["queue"]["max"] == 2
            assert "/v1/generate" in c.get("/openapi.json").json()["paths"]
    finally:
        _stop(server, thread)

