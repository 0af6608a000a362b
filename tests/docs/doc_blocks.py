"""The commands of README.md and docs/*.md, and how the docs test runs them.

Every fenced ```bash block of a document is a shell script a user would type, and every fenced
```python block a program they would run; the test runs them all, in the order of the document, in a
working folder of its own. An HTML comment on the line right before the opening fence changes that:

    <!-- doc-test: skip: REASON -->   not run, and REASON is reported as the test's skip reason
                                       (a command that needs Docker, a cluster, a GPU, a registry, ...)
    <!-- doc-test: background -->     a server: started, waited for until its health check answers,
                                       left running for the rest of the document, then stopped with
                                       SIGTERM, after which it must exit 0
    <!-- doc-test: exit N -->         the block must exit with status N instead of 0

Mechanical rewrites, so that runs in parallel never share a port (the documents show the defaults):
each port the documents use (the defaults: gRPC 50051, HTTP 8000, metrics 8002, KServe's 8080 and
8081; a second server's 50052 and 8001) written as its own number is replaced by a free port, the same one for the whole document; a `python -m serve` or
`python -m serve.kserve` command that leaves a port at its default is given that port explicitly, and
a `python -m serve.client` without `--server` is given `--server localhost:PORT`. A line whose command
is one of SHARED_COMMANDS is not run again: the session fixture ran it, as written, in the folder that
every document starts from.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
# Run once per session, in the folder every document starts from: training and export are the
# expensive steps (about 1.5 minutes together), and the README shows them verbatim.
SHARED_COMMANDS = ("python -m zoo.train lenet", "python -m export lenet")
DOCUMENTED_PORTS = (50051, 8000, 8002, 8080, 8081, 50052, 8001)
RUNNABLE_LANGUAGES = ("bash", "python")
BLOCK_TIMEOUT_S = 600.0
SERVER_START_TIMEOUT_S = 120.0
SERVER_STOP_TIMEOUT_S = 30.0

_DIRECTIVE = re.compile(r"^<!--\s*doc-test:\s*(?P<kind>skip|background|exit)\s*(?::\s*(?P<value>.*?))?\s*-->$")
_FENCE = re.compile(r"^```(?P<language>[\w+-]*)\s*$")


class DocCommandError(AssertionError):
    """A documented command did not do what the document says; the message shows where and its output."""


@dataclass(frozen=True)
class Block:
    document: Path
    line: int  # of the opening fence, 1-based
    language: str
    text: str
    skip_reason: str | None = None
    background: bool = False
    expected_exit: int = 0

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(REPO_ROOT)}:{self.line}"


def read_blocks(document: Path) -> list[Block]:
    """The runnable fenced blocks of a Markdown document, with the directive before each."""
    lines = document.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = next((i for i in range(index + 1, len(lines)) if lines[i].strip() == "```"), None)
        if end is None:
            raise ValueError(f"{document.name}:{index + 1}: a fence that is never closed")
        language = fence.group("language")
        directive = _DIRECTIVE.match(lines[index - 1].strip()) if index > 0 else None
        if language in RUNNABLE_LANGUAGES:
            options: dict = {}
            if directive:
                kind, value = directive.group("kind"), directive.group("value")
                if kind == "skip":
                    if not value:
                        raise ValueError(f"{document.name}:{index + 1}: a skip without a reason")
                    options["skip_reason"] = value
                elif kind == "background":
                    options["background"] = True
                else:
                    options["expected_exit"] = int(value)
            blocks.append(Block(document, index + 1, language, "\n".join(lines[index + 1:end]) + "\n", **options))
        elif directive:
            raise ValueError(f"{document.name}:{index + 1}: a doc-test directive before a ```{language} block, "
                             f"which is never run")
        index = end + 1
    return blocks


def command_of(line: str) -> str:
    """A shell line without its trailing comment and with single spaces: what it runs."""
    try:
        return " ".join(shlex.split(line, comments=True))
    except ValueError:  # an unfinished quote: part of a multi-line command
        return line.strip()


def free_ports() -> dict[int, int]:
    """A free loopback port for each port the documents use."""
    from harness.processes import free_port

    ports: dict[int, int] = {}
    while len(ports) < len(DOCUMENTED_PORTS):
        port = free_port()
        if port not in ports.values():
            ports[DOCUMENTED_PORTS[len(ports)]] = port
    return ports


def rewrite(block: Block, ports: dict[int, int]) -> str:
    """The block as the test runs it: its own ports, and the shared commands not run twice."""
    text = re.sub(r"(?<![\w.])(" + "|".join(map(str, ports)) + r")(?!\w)",
                  lambda match: str(ports[int(match.group(1))]), block.text, flags=re.MULTILINE)
    if block.language != "bash":
        return text
    lines = []
    for line in text.splitlines():
        if command_of(line) in SHARED_COMMANDS:
            lines.append(f": ran once for the whole session: {command_of(line)}")
            continue
        if re.search(r"\bpython -m serve\.client\b", line) and "--server" not in line:
            line = line.replace("python -m serve.client", f"python -m serve.client --server localhost:{ports[50051]}", 1)
        if re.search(r"\bpython -m serve\.kserve\b", line):
            if "--grpc_port" not in line:
                line = line.replace("python -m serve.kserve", f"python -m serve.kserve --grpc_port {ports[50051]}", 1)
            if "--http_port" not in line:
                line = line.replace("python -m serve.kserve", f"python -m serve.kserve --http_port {ports[8000]}", 1)
        elif re.search(r"\bpython -m serve(?=\s|$)", line):
            if "--port " not in line:
                line = re.sub(r"\bpython -m serve(?=\s|$)", f"python -m serve --port {ports[50051]}", line, count=1)
            if "--http-port" not in line and "--no-http" not in line:
                line = re.sub(r"\bpython -m serve(?=\s|$)", f"python -m serve --http-port {ports[8000]}", line, count=1)
        lines.append(line)
    return "\n".join(lines) + "\n"


def _tail(text: str, characters: int = 3000) -> str:
    return text if len(text) <= characters else "..." + text[-characters:]


@dataclass
class DocumentRun:
    """Runs one document's blocks in order in `workdir`, holding its background servers."""

    workdir: Path
    env: dict[str, str]
    ports: dict[int, int] = field(default_factory=free_ports)
    servers: list[tuple[Block, subprocess.Popen, Path]] = field(default_factory=list)

    def run(self, block: Block) -> None:
        script = rewrite(block, self.ports)
        if block.background:
            self._start_server(block, script)
            return
        if block.language == "bash":
            command = ["bash", "-e", "-o", "pipefail", "-c", script]
        else:
            command = [sys.executable, "-c", script]
        try:
            finished = subprocess.run(command, cwd=self.workdir, env=self.env, capture_output=True, text=True,
                                      timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as timeout:
            raise DocCommandError(f"{block.where}: still running after {BLOCK_TIMEOUT_S:.0f} s:\n{script}") from timeout
        if finished.returncode != block.expected_exit:
            raise DocCommandError(
                f"{block.where}: exit {finished.returncode}, the document expects {block.expected_exit}.\n"
                f"--- as run in {self.workdir}:\n{script}--- output:\n{_tail(finished.stdout + finished.stderr)}")

    def _start_server(self, block: Block, script: str) -> None:
        commands = [line for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if len(commands) != 1 or block.language != "bash":
            raise ValueError(f"{block.where}: a background block holds exactly one shell command")
        log_path = self.workdir / f"server-{block.line}.log"
        with log_path.open("w") as log:
            # exec: the server is the process that receives SIGTERM, as when a user presses Ctrl-C
            process = subprocess.Popen(["bash", "-c", f"exec {commands[0]}"], cwd=self.workdir, env=self.env,
                                       stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.servers.append((block, process, log_path))
        health = _health_url(commands[0])
        give_up = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < give_up:
            if process.poll() is not None:
                raise DocCommandError(f"{block.where}: the server exited with {process.returncode} while starting:\n"
                                      f"{commands[0]}\n{_tail(log_path.read_text())}")
            try:
                # readiness only: the documented commands themselves check the certificate
                with urllib.request.urlopen(health, timeout=2, context=ssl._create_unverified_context()) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise DocCommandError(f"{block.where}: {health} did not answer 200 within {SERVER_START_TIMEOUT_S:.0f} s:\n"
                              f"{commands[0]}\n{_tail(log_path.read_text())}")

    def stop_servers(self) -> None:
        """SIGTERM every background server, newest first; each must drain and exit 0."""
        failures = []
        while self.servers:
            block, process, log_path = self.servers.pop()
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(SERVER_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.returncode != 0:
                failures.append(f"{block.where}: the server exited with {process.returncode} after SIGTERM:\n"
                                f"{_tail(log_path.read_text())}")
        if failures:
            raise DocCommandError("\n".join(failures))


def _health_url(command: str) -> str:
    """The server's HTTP readiness route, from its command line (the ports are explicit by then)."""
    port = re.search(r"--http[-_]port[ =](\d+)", command)
    if port is None:
        raise ValueError(f"a background server needs its HTTP port to be waited for: {command}")
    scheme = "https" if "--tls-cert" in command else "http"
    return f"{scheme}://127.0.0.1:{port.group(1)}/v2/health/ready"


def environment(workdir: Path, data_dir: Path) -> dict[str, str]:
    """What the documented commands run with: this interpreter's tools first on PATH, the packages of this
    checkout importable (bench/ too, as from a clone's root), MNIST where the tests find it, and curl
    failing on an HTTP error status (its own `curl -s` would exit 0 on a 404)."""
    (workdir / ".curlrc").write_text("fail-with-body\nmax-time = 120\n")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["ZOO_DATA_DIR"] = str(data_dir)
    env["CURL_HOME"] = str(workdir)
    env["PYTHONUNBUFFERED"] = "1"
    return env
