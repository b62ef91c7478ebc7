"""Fixtures for the Terraform tests: an offline Terraform on a temporary copy, and a moto server.

Terraform never runs in the repository: each session copies terraform/ (and the test-only stack)
to a temporary directory, keeps Terraform's data directory there too, and removes it all at the
end. Providers come from the filesystem mirror only (``-plugin-dir``), never from a registry.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import terraform_hcl as tf

from tests.aws.moto_world import MotoProcess

HERE = Path(__file__).resolve().parent
PLUGIN_DIR = Path(os.environ.get("CUTOVER_TF_PLUGIN_DIR", "/opt/tf-plugins"))
PROVIDER_OVERRIDE = HERE / "moto_provider_override.tf.tmpl"
PLAN_FLAGS = ("-input=false", "-lock=false", "-parallelism=4")

# What the moto stack gives the batch module: max_vcpus must come out as their product.
BUDGET = 7
VCPUS_PER_JOB = 2
STACK_VARIABLES = (f"-var=budget={BUDGET}", f"-var=vcpus_per_job={VCPUS_PER_JOB}")


def terraform_unavailable() -> str | None:
    """Why the Terraform CLI tests cannot run here, or None when they can."""
    if shutil.which("terraform") is None:
        return "terraform is not installed on this machine"
    if not (PLUGIN_DIR / "registry.terraform.io" / "hashicorp" / "aws").is_dir():
        return f"no filesystem mirror of the AWS provider at {PLUGIN_DIR} (set CUTOVER_TF_PLUGIN_DIR)"
    return None


@dataclass
class Terraform:
    """Runs terraform in directories of one temporary copy, sharing one data directory."""

    work: Path
    data_dir: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_"))}
        env.update(
            CHECKPOINT_DISABLE="1",
            TF_CLI_CONFIG_FILE="/dev/null",
            TF_DATA_DIR=str(self.data_dir),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
        )
        return env

    def run(
        self, directory: Path, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["terraform", f"-chdir={directory}", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"terraform {' '.join(args)} in {directory} exited {result.returncode}\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def init(self, directory: Path) -> None:
        # The data directory is shared: (re)initialise before every configuration's commands.
        self.run(directory, "init", "-backend=false", "-input=false", f"-plugin-dir={PLUGIN_DIR}")

    def point_at_moto(self, directory: Path, endpoint: str) -> None:
        text = PROVIDER_OVERRIDE.read_text(encoding="utf-8").replace("__MOTO_ENDPOINT__", endpoint)
        (directory / "moto_provider_override.tf").write_text(text, encoding="utf-8")

    def show_plan(self, directory: Path, plan_file: str) -> dict[str, Any]:
        return json.loads(self.run(directory, "show", "-json", plan_file).stdout)


@dataclass
class MotoStack:
    """The test-only stack, applied to moto in a background thread.

    The apply spends most of its minute in the provider's waiters (a Batch job queue, an S3
    lifecycle configuration), so it runs while the other tests do. It has a data directory of its
    own: the foreground tests re-initialise theirs for every configuration.
    """

    terraform: Terraform
    directory: Path
    endpoint: str
    error: BaseException | None = None
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._apply, name="moto-stack-apply", daemon=True)
        self._thread.start()

    def _apply(self) -> None:
        try:
            self.terraform.point_at_moto(self.directory, self.endpoint)
            self.terraform.init(self.directory)
            self.terraform.run(
                self.directory, "apply", "-auto-approve", *PLAN_FLAGS, *STACK_VARIABLES, timeout=900
            )
        except BaseException as exc:  # handed to the test that waits for it
            self.error = exc

    def wait(self, timeout: float = 900) -> None:
        assert self._thread is not None, "the stack was never started"
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"apply still running after {timeout} s"
        if self.error is not None:
            raise AssertionError(f"applying the moto stack failed: {self.error}") from self.error

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.terraform.run(self.directory, *args, timeout=timeout)


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terraform]:
    reason = terraform_unavailable()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("terraform-copy")
    ignore = shutil.ignore_patterns(
        ".terraform", ".terraform.lock.hcl", "*.tfstate*", "terraform.tfvars", "*.tfplan"
    )
    shutil.copytree(tf.TERRAFORM_DIR, work / "terraform", ignore=ignore)
    shutil.copytree(HERE / "moto_stack", work / "moto_stack", ignore=ignore)
    runner = Terraform(work=work, data_dir=work / ".terraform-data")
    try:
        # Installs the provider (a copy of several hundred MB) once, for every configuration.
        runner.init(work / "terraform")
        yield runner
    finally:
        # The data directory holds a copy of the provider (hundreds of MB): never leave it behind.
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_stack(terraform: Terraform, moto_endpoint: str) -> Iterator[MotoStack]:
    data_dir = terraform.work / ".terraform-data-stack"
    data_dir.mkdir()
    # Its own modules, the same installed provider: no second copy to read from disk.
    (data_dir / "providers").symlink_to(terraform.data_dir / "providers")
    stack = MotoStack(
        terraform=Terraform(work=terraform.work, data_dir=data_dir),
        directory=terraform.work / "moto_stack",
        endpoint=moto_endpoint,
    )
    stack.start()
    yield stack
    if stack._thread is not None:
        stack._thread.join(900)


@pytest.fixture(scope="session", autouse=True)
def _apply_moto_stack_early(request: pytest.FixtureRequest) -> None:
    """Start the moto stack's apply with the session when a selected test will use it."""
    wanted = any("moto_stack" in getattr(item, "fixturenames", ()) for item in request.session.items)
    if wanted and terraform_unavailable() is None:
        request.getfixturevalue("moto_stack")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the tests that use the moto stack last, so that its apply overlaps the others."""
    items.sort(key=lambda item: "moto_stack" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on loopback, with AWS Batch running jobs without Docker.

    It runs in a process of its own: the apply overlaps the rest of the session, and moto's state
    is global to a process, so a server inside pytest would share it (and the interpreter lock)
    with every other test's moto server and their resets."""
    server = MotoProcess(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server.url
    finally:
        server.stop()
