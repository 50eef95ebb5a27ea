"""Interoperability: a third-party NGSI-LD client (ngsildclient 0.5.2) against a real server.

The client cannot share Territoire's environment (it pins httpx < 0.24 and rich < 13), so
``.ci/run`` installs it in its own virtual environment (``.ci/.venv-interop``, or the interpreter
named by TERRITOIRE_INTEROP_PYTHON) and this test runs ``tests/interop/ngsildclient_scenario.py``
with it against ``territoire serve`` on each backend.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import POSTGRES_URL, postgres_or_skip

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "tests" / "interop" / "ngsildclient_scenario.py"
INTEROP_PYTHON = Path(os.environ.get("TERRITOIRE_INTEROP_PYTHON", ROOT / ".ci" / ".venv-interop" / "bin" / "python"))


def _interop_python() -> Path:
    if not INTEROP_PYTHON.exists():
        reason = f"ngsildclient's environment is missing ({INTEROP_PYTHON}); .ci/run creates it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return INTEROP_PYTHON


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(params=["sqlite", "postgres"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    if request.param == "postgres":
        postgres_or_skip()
        base, _, name = POSTGRES_URL.rpartition("/")
        url = f"{base}/{name}_interop"
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}_interop" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}_interop"')
    else:
        url = f"sqlite:///{tmp_path / 'interop.db'}"
    port = _free_port()
    env = {**os.environ, "TERRITOIRE_DATABASE_URL": url}
    command = [sys.executable, "-m", "uvicorn", "territoire.app:create_app", "--factory", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "territoire serve did not start"
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=20)
        assert process.stderr is not None
        process.stderr.close()
        if request.param == "postgres":
            with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}_interop" WITH (FORCE)')


def test_ngsildclient_session(server: int) -> None:
    python = _interop_python()
    result = subprocess.run(
        [str(python), str(SCENARIO), "127.0.0.1", str(server)], capture_output=True, text=True, timeout=120
    )
    steps = [line for line in result.stdout.splitlines() if line.startswith(("ok ", "FAIL "))]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "scenario complete" in result.stdout
    assert len(steps) >= 15 and all(s.startswith("ok ") for s in steps)
