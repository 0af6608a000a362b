"""Every command of README.md and docs/*.md runs, against real servers, as the documents say.

How blocks are read, which are skipped and how ports are rewritten: tests/docs/doc_blocks.py.
Each document runs in a fresh copy of one working folder, prepared once for the session by the
README's own training and export commands, which also holds two digit pictures (`my_digit.png`, MNIST's
first test digit, a 7, dark on white; `another.png`, its second) and the clone's `deploy/`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from doc_blocks import (DOCUMENTS, REPO_ROOT, SHARED_COMMANDS, Block, DocumentRun, command_of, environment,
                        read_blocks)

BLOCKS = {document: read_blocks(document) for document in DOCUMENTS}
RUN_DOCUMENTS = [document for document, blocks in BLOCKS.items() if any(not block.skip_reason for block in blocks)]
SKIPPED = [block for blocks in BLOCKS.values() for block in blocks if block.skip_reason]


def _name(document: Path) -> str:
    return str(document.relative_to(REPO_ROOT))


@pytest.fixture(scope="session")
def prepared_folder(tmp_path_factory, mnist_root) -> Path:
    """A user's working folder after the README's training and export, run as written."""
    from contracts.mnist_idx import load_mnist_test

    folder = tmp_path_factory.mktemp("docs-prepared")
    env = environment(folder, mnist_root)
    for command in SHARED_COMMANDS:
        finished = subprocess.run(command.split(), cwd=folder, env=env, capture_output=True, text=True, timeout=900)
        assert finished.returncode == 0, f"{command}: exit {finished.returncode}\n{finished.stdout}{finished.stderr}"
    images, _ = load_mnist_test(mnist_root)
    Image.fromarray(255 - images[0].astype(np.uint8)).save(folder / "my_digit.png")
    Image.fromarray(255 - images[1].astype(np.uint8)).save(folder / "another.png")
    (folder / "deploy").symlink_to(REPO_ROOT / "deploy", target_is_directory=True)
    return folder


@pytest.mark.parametrize("document", RUN_DOCUMENTS, ids=_name)
def test_documented_commands_run(document, prepared_folder, mnist_root, tmp_path):
    workdir = tmp_path / "work"
    shutil.copytree(prepared_folder, workdir, symlinks=True)
    run = DocumentRun(workdir, environment(workdir, mnist_root))
    try:
        for block in BLOCKS[document]:
            if not block.skip_reason:
                run.run(block)
    finally:
        run.stop_servers()


@pytest.mark.parametrize("block", SKIPPED, ids=lambda block: block.where)
def test_skipped_block(block: Block):
    """Reports each block the documents mark as not runnable here, with the document's reason."""
    pytest.skip(f"{block.where}: {block.skip_reason}")


def test_skips_are_the_exception():
    runnable = sum(not block.skip_reason for blocks in BLOCKS.values() for block in blocks)
    assert len(SKIPPED) * 3 <= runnable, (
        f"{len(SKIPPED)} skipped blocks against {runnable} run: "
        + "; ".join(f"{block.where} ({block.skip_reason})" for block in SKIPPED))


def test_shared_commands_are_the_readmes():
    """The session fixture runs the README's training and export exactly as the README shows them."""
    readme_commands = {command_of(line) for block in BLOCKS[REPO_ROOT / "README.md"] if block.language == "bash"
                       and not block.skip_reason for line in block.text.splitlines()}
    assert set(SHARED_COMMANDS) <= readme_commands, f"not shown in a README block: {set(SHARED_COMMANDS) - readme_commands}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_name)
def test_links_resolve(document: Path):
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.DOTALL)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (document.parent / target.split("#")[0]).exists():
            broken.append(target)
    assert not broken, f"{_name(document)} links to missing files: {broken}"
