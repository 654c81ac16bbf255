"""Start and stop the anvil binary from the npm package ``@foundry-rs/anvil``."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devnet.rpc import DevnetError, is_alive

# anvil's default mnemonic: its ten funded dev accounts are the same on every machine.
MNEMONIC = "test test test test test test test test test test test junk"
CHAIN_ID = 31337
GENESIS_TIMESTAMP = 1_700_000_000
BLOCK_TIME = 12
ACCOUNT_BALANCE_ETH = 1_000_000
# Block states anvil keeps in memory (--prune-history). Without the flag anvil spills states older than
# ~500 blocks to disk, and a reorg after that can come back without contract code; with it nothing goes
# to disk and states older than this are dropped: reorgs and eth_call at a block work this deep.
# Each state costs ~0.5 MB here, so this bounds anvil's memory on long benchmark runs.
PRUNE_HISTORY = 2048


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def find_node_modules() -> Path:
    """The ``node_modules`` holding the pinned npm tools: the checkout this package lives in, else the
    current directory or one of its parents (an installed package run from a checkout)."""
    candidates = [repo_root(), Path.cwd(), *Path.cwd().parents]
    for base in candidates:
        if (base / "node_modules" / ".bin" / "anvil").exists():
            return base / "node_modules"
    raise DevnetError(
        "anvil not found in node_modules/.bin: run `make` (or `npm ci`) in the dexnode checkout first"
    )


def find_anvil() -> Path:
    """The native binary from the platform package when present: ``.bin/anvil`` is a Node wrapper that
    costs a process and leaves anvil orphaned if the wrapper is killed hard."""
    node_modules = find_node_modules()
    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    native = node_modules / "@foundry-rs" / f"anvil-{sys.platform}-{machine}" / "bin" / "anvil"
    if native.is_file() and os.access(native, os.X_OK):
        return native
    return node_modules / ".bin" / "anvil"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise DevnetError(
                f"port {port} on 127.0.0.1 is already in use (another devnet or node?): "
                "stop it or pick another port with --port"
            ) from None


@dataclass
class AnvilProcess:
    pid: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None  # None when attached to a detached anvil by pid

    @property
    def rpc_http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it hangs."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            return
        stop_pid(self.pid, timeout)


def start_anvil(
    port: int | None,
    log_path: Path,
    *,
    load_state: Path | None = None,
    detach: bool = False,
    prune_history: int | None = PRUNE_HISTORY,
) -> AnvilProcess:
    """Start anvil on 127.0.0.1 with mining off (the devnet mines explicitly) and wait until it answers.

    ``port`` 0 or None picks a free port. ``detach`` puts anvil in its own session so it outlives us.
    """
    anvil = find_anvil()
    if port:
        check_port_free(port)
    else:
        port = free_port()
    args = [
        str(anvil),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--chain-id", str(CHAIN_ID),
        "--mnemonic", MNEMONIC,
        "--accounts", "10",
        "--balance", str(ACCOUNT_BALANCE_ETH),
        "--timestamp", str(GENESIS_TIMESTAMP),
        "--no-mining",
        "--order", "fifo",
        "--threads", "2",
        "--color", "never",
    ]  # fmt: skip
    if prune_history is not None:
        args += ["--prune-history", str(prune_history)]
    if load_state is not None:
        args += ["--load-state", str(load_state)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=detach,
        )
    node = AnvilProcess(pid=process.pid, port=port, log_path=log_path, process=process)
    deadline = time.monotonic() + 30.0
    while not is_alive(node.rpc_http, timeout=0.5):
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise DevnetError(f"anvil exited with code {process.returncode}: {' | '.join(tail)}")
        if time.monotonic() > deadline:
            node.stop()
            raise DevnetError(f"anvil did not answer on port {port} within 30 s (log: {log_path})")
        time.sleep(0.05)
    return node


def pid_is_anvil(pid: int) -> bool:
    """True when ``pid`` is a live anvil process (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc (macOS): trust the pid file
    return b"anvil" in cmdline


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    if not pid_is_anvil(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if not pid_is_anvil(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
