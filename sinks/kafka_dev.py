"""librdkafka's mock Kafka cluster in a process of its own: a Kafka-protocol broker for tests and the demo.

    python -m sinks.kafka_dev [--brokers N]     # prints the bootstrap address, runs until SIGTERM/Ctrl-C

The mock cluster ships inside the confluent-kafka wheel: a client created with
``test.mock.num.brokers`` starts brokers on 127.0.0.1 (random ports) that other processes can use.
It keeps messages in memory (gone when the process stops) and auto-creates topics (4 partitions) on
first produce; the admin ``create_topics`` call is not supported there (it times out waiting for a
controller), which dexnode treats as "topic creation not available". It cannot be restarted on the
same port: to make the broker unavailable for a while, freeze it (``KafkaDev.pause()``, SIGSTOP)
and thaw it (``resume()``, SIGCONT); its data survives.

``start_kafka_dev()`` starts it from Python (tests, benchmarks) and returns a ``KafkaDev`` handle.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


def serve(brokers: int = 1, *, announce: Callable[[str], None] | None = None) -> None:
    """Run the mock cluster in this process until SIGTERM or SIGINT; ``announce(bootstrap)`` once up."""
    from confluent_kafka import Producer

    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    # the mock cluster lives as long as this client; its own logs go nowhere
    holder = Producer({"test.mock.num.brokers": brokers, "log_level": 0, "logger": _Silent()})
    try:
        metadata = holder.list_topics(timeout=10)
        address = ",".join(
            f"{b.host}:{b.port}" for b in sorted(metadata.brokers.values(), key=lambda b: b.id)
        )
        (announce or (lambda a: print(a, flush=True)))(address)
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        del holder


def _task_state(stat: Path) -> str:
    """A task's state letter from its /proc stat line (after the command name, which may hold spaces)."""
    try:
        line = stat.read_text()
    except FileNotFoundError:  # the thread ended: it does not answer anything either
        return "T"
    return line[line.rindex(")") + 2]


class _Silent:
    """A logger for librdkafka that drops everything (the mock cluster announces itself at NOTICE)."""

    def log(self, *args: object, **kwargs: object) -> None:
        return None


@dataclass
class KafkaDev:
    """A running ``python -m sinks.kafka_dev`` process."""

    process: subprocess.Popen[str]
    bootstrap: str
    paused: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def pause(self, timeout: float = 5.0) -> None:
        """Freeze the broker (SIGSTOP): connections stay open, nothing is answered, nothing is lost.

        Returns once every thread of the process is seen stopped, so what the caller does next meets a
        frozen broker; raises ``RuntimeError`` when that is not seen within ``timeout``."""
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True
        deadline = time.monotonic() + timeout
        while not self.frozen():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the mock Kafka broker (pid {self.pid}) did not stop in {timeout:.0f}s")
            time.sleep(0.005)

    def frozen(self) -> bool:
        """Every thread of the broker's process stopped (state ``T``), read from /proc."""
        tasks = Path(f"/proc/{self.pid}/task")
        try:
            states = [_task_state(task / "stat") for task in tasks.iterdir()]
        except FileNotFoundError:
            return False
        return bool(states) and all(state == "T" for state in states)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> KafkaDev:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_kafka_dev(*, brokers: int = 1, timeout: float = 30.0, log: Path | None = None) -> KafkaDev:
    """Start the mock cluster in a child process and wait for its bootstrap address."""
    stderr: IO[str] | int = subprocess.DEVNULL
    if log is not None:
        stderr = log.open("a")
    repo = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "sinks.kafka_dev", "--brokers", str(brokers)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    if log is not None and not isinstance(stderr, int):
        stderr.close()
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline().strip() if ready else ""
    if not line:
        process.kill()
        process.wait()
        raise RuntimeError(f"the mock Kafka cluster did not start within {timeout:.0f}s")
    return KafkaDev(process, line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sinks.kafka_dev", description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=1, help="number of mock brokers (default 1)")
    args = parser.parse_args(argv)
    serve(args.brokers)


if __name__ == "__main__":
    main()
