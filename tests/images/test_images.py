"""The container images Terraform asks for (``controller_image``, ``job_image``), checked without a
Docker engine: what they copy exists and reaches the build context, they start what Terraform and
``examples/`` start, they pass checkov's Dockerfile checks, and their install steps, run on this
machine in a fresh virtual environment, give a working ``cutover`` and a sample worker that
converts a manifest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.images import dockerfile as df

TERRAFORM_CONTROLLER = df.REPO / "terraform" / "modules" / "controller"
CHECKOV = df.REPO / "scripts" / "checkov.sh"
INSTALL_FAILED = 75
IMAGES = {"controller": df.CONTROLLER, "job": df.JOB}


def final(path: Path) -> df.Stage:
    return df.parse(path)[-1]


def terraform_controller_command() -> list[str]:
    text = (TERRAFORM_CONTROLLER / "main.tf").read_text(encoding="utf-8")
    port = re.search(r"^\s*port\s*=\s*(\d+)", text, re.MULTILINE)
    command = re.search(r"^\s*command\s*=\s*(\[.*\])\s*$", text, re.MULTILINE)
    assert port
    assert command
    return json.loads(command[1].replace("tostring(local.port)", f'"{port[1]}"'))


def terraform_health_check() -> list[str]:
    text = (TERRAFORM_CONTROLLER / "variables.tf").read_text(encoding="utf-8")
    block = text.split('variable "health_check_command"', 1)[1]
    default = re.search(r"default\s*=\s*(\[.*\])\s*$", block, re.MULTILINE)
    assert default
    return json.loads(default[1])


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_every_copy_source_exists_and_is_in_the_build_context(image: str) -> None:
    patterns = df.dockerignore()
    for stage in df.parse(IMAGES[image]):
        for ins in stage.all("COPY"):
            flags, words = ins.flags()
            if "from" in flags:
                continue
            for source in words[:-1]:
                assert (df.REPO / source).exists(), f"{image}: COPY {source}: no such path"
                assert not df.ignored(source, patterns), f"{image}: COPY {source}: left out by .dockerignore"


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    patterns = df.dockerignore()
    for path in (".venv/bin/python", ".env", "cutover.db", "flags.json", "terraform/main.tf", ".git/config"):
        assert df.ignored(path, patterns), path
    assert df.ignored("controller/__pycache__/x.pyc", patterns)


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_images_are_multi_stage_on_pinned_bases_and_run_unprivileged(image: str) -> None:
    stages = df.parse(IMAGES[image])
    assert len(stages) >= 2
    for stage in stages:
        # A full version (x.y.z) or a digest: a rebuild must not pick up another Python.
        assert re.fullmatch(r"[\w./-]+(:\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})", stage.base), stage.base
    last = stages[-1]
    user = last.all("USER")
    assert user, "the final stage sets no USER"
    assert user[-1].args.split(":")[0] not in ("root", "0")
    for run in last.all("RUN"):
        # No compiler, package manager run or download in the image that runs.
        assert not re.search(r"apt-get|apk |gcc|\bpip install|curl|wget", run.args), run.args


def test_the_controller_image_starts_what_terraform_starts_and_probes_healthz() -> None:
    last = final(df.CONTROLLER)
    cmd = last.all("CMD")[-1].words()
    assert cmd == terraform_controller_command()
    # ECS replaces CMD with the task definition's command: an entry point would be prefixed to it.
    assert not last.all("ENTRYPOINT")
    scripts = tomllib.loads((df.REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert cmd[0] in scripts
    health = last.all("HEALTHCHECK")[-1]
    flags, _ = health.flags()
    probe = health.args[health.args.index("CMD") + len("CMD") :]
    assert ["CMD", *df.Instruction("CMD", probe).words()] == terraform_health_check()
    assert "/healthz" in probe
    assert {"interval", "timeout", "retries"} <= set(flags)


def test_the_controller_image_writes_only_under_tmp() -> None:
    last = final(df.CONTROLLER)
    env: dict[str, str] = {}
    for ins in last.all("ENV"):
        env.update(df.env_pairs(ins))
    # The task definition mounts /tmp and makes the rest read-only: relative defaults, HOME and
    # bytecode must not write anywhere else.
    assert last.all("WORKDIR")[-1].args == "/tmp"
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    main_tf = (TERRAFORM_CONTROLLER / "main.tf").read_text(encoding="utf-8")
    assert "readonlyRootFilesystem = true" in main_tf
    assert 'containerPath = "/tmp"' in main_tf


def test_the_job_image_runs_the_job_definitions_and_the_buildspecs_command() -> None:
    last = final(df.JOB)
    cmd = last.all("CMD")[-1].words()
    definition = json.loads((df.REPO / "examples" / "batch-job-definition.json").read_text(encoding="utf-8"))
    assert cmd == definition["containerProperties"]["command"]
    buildspec = yaml.safe_load((df.REPO / "examples" / "buildspec.yml").read_text(encoding="utf-8"))
    assert cmd == buildspec["phases"]["build"]["commands"][-1].split()
    tfvars = (df.REPO / "terraform" / "terraform.tfvars.example").read_text(encoding="utf-8")
    assert f"job_command = {json.dumps(cmd)}" in tfvars
    # The command's script is where the image's working directory puts it.
    copied = [ins.words()[-1] for ins in last.all("COPY") if not ins.flags()[0]]
    assert cmd[1] in copied
    # The job image and the buildspec install the same requirements.
    installs = " ".join(ins.args for stage in df.parse(df.JOB) for ins in stage.all("RUN"))
    assert "-r job-requirements.txt" in installs
    assert any("-r examples/job-requirements.txt" in c for c in buildspec["phases"]["install"]["commands"])


@pytest.mark.slow
def test_checkov_finds_no_failed_dockerfile_check() -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ["bash", str(CHECKOV), "--framework", "dockerfile", "-f", str(df.CONTROLLER), "-f", str(df.JOB)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env=env,
        cwd=df.REPO,
    )
    if result.returncode == INSTALL_FAILED:
        pytest.skip(f"checkov could not be installed from the package index: {result.stderr[-300:]}")
    summary = re.search(r"Passed checks: (\d+), Failed checks: (\d+), Skipped checks: (\d+)", result.stdout)
    assert summary, result.stdout[-3000:] + result.stderr[-3000:]
    passed, failed, skipped = map(int, summary.groups())
    assert (failed, skipped, result.returncode) == (0, 0, 0), result.stdout[-6000:]
    assert passed >= 20


@pytest.fixture
def stand_in(tmp_path: Path) -> df.StandIn:
    python_dir = tmp_path / "python"
    python_dir.mkdir()
    (python_dir / "python").symlink_to(sys.executable)
    return df.StandIn(tmp_path / "image", df.base_env(python_dir))


def build(stand_in: df.StandIn, path: Path) -> None:
    """Every stage's ENV, WORKDIR and COPY in one root; RUN only in the build stages (the final
    stage's only RUN removes pip, which here would be this machine's)."""
    stages = df.parse(path)
    for stage in stages:
        stand_in.apply(stage, run=stage is not stages[-1])


@pytest.mark.slow
def test_the_controller_images_install_steps_give_a_working_cutover(stand_in: df.StandIn) -> None:
    build(stand_in, df.CONTROLLER)
    cmd = final(df.CONTROLLER).all("CMD")[-1].words()
    result = subprocess.run(
        [cmd[0], "--help"], cwd=stand_in.cwd, env=stand_in.env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "run" in result.stdout
    assert "flag" in result.stdout
    # The installed copy answers, not the checkout's.
    where = subprocess.run(
        ["python", "-c", "import controller; print(controller.__file__)"],
        cwd=stand_in.cwd,
        env=stand_in.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(stand_in.root / "opt")), where.stdout


@pytest.mark.slow
def test_the_job_images_install_steps_give_a_worker_that_converts_a_manifest(stand_in: df.StandIn) -> None:
    build(stand_in, df.JOB)
    manifest = stand_in.root / "tmp" / "manifest.json"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    conversion = {"conversion_id": "inv-1", "tenant_id": 42, "params": {}, "flag_version": "3", "fence": 1}
    manifest.write_text(
        json.dumps({"contract": 1, "batch": "b1", "path": "legacy", "conversions": [conversion]})
    )
    results = stand_in.root / "tmp" / "results"
    env = {
        **stand_in.env,
        "CUTOVER_PATH": "legacy",
        "CUTOVER_BATCH": "b1",
        "CUTOVER_MANIFEST": str(manifest),
        "CUTOVER_RESULTS_DIR": str(results),
        "CUTOVER_THREADS": "1",
    }
    cmd = final(df.JOB).all("CMD")[-1].words()
    result = subprocess.run(cmd, cwd=stand_in.cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads((results / "inv-1.json").read_text())
    assert outcome["status"] == "succeeded", outcome
    output = Path(outcome["output"])
    assert output.is_file()
    assert output.is_relative_to(Path(stand_in.env["CUTOVER_OUTPUT_DIR"]))
    assert output.read_bytes()[:2] == b"PK"  # an .xlsx is a zip
