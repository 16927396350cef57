"""The CI recipes of docs/ci run as their engines would run them (issue 15, items 3 to 5).

Each test reads one recipe, takes its shard command and its merge command from it, runs the shard
command as 3 processes at once with the variables that engine sets (the matrix value for GitHub
Actions), lays their reports out as the engine hands artifacts to the merge job, runs the merge
command on that folder, and compares the merged results with an unsharded run, cell for cell.
The project is the plugin tests' small one (two fake models, 24 images), so a recipe takes seconds.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.plugin.conftest import PYPROJECT
from tests.plugin.fakes import MODELS, write_dataset

# Each test starts 4 or 5 Python processes (3 shards at once, then the merge): 45-80 s on 2 busy shared cores.
pytestmark = pytest.mark.slow

RECIPES = Path(__file__).resolve().parent.parent / "docs" / "ci"
# Variables of the engines, cleared so that the machine running the tests adds none of its own.
ENGINE_VARIABLES = (
    "CI_NODE_INDEX", "CI_NODE_TOTAL", "GITLAB_CI", "GITHUB_ACTIONS", "JOB_COMPLETION_INDEX", "MEDROBUST_SHARD_TOTAL",
    "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_STEP", "SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID",
)
COMPARED = ("metrics", "intervals", "outcome", "failures", "thresholds", "n_images", "passed")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_VARIABLES and not k.startswith("PYTEST_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # pytest, medrobust
    return env


def make_project(path: Path) -> Path:
    """A checkout of a project gated by pytest-medrobust: fake models, a dataset, its config."""
    path.mkdir(parents=True)
    (path / "fakemodels.py").write_text(MODELS)
    (path / "pyproject.toml").write_text(PYPROJECT)
    write_dataset(path)
    return path


def start(command: str | list[str], cwd: Path, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """A shell line as CI runners run it (bash -e), or an argv list as a container runs it."""
    return subprocess.Popen(
        ["bash", "-e", "-c", command] if isinstance(command, str) else command, cwd=cwd, env={**base_env(), **(extra or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def finish(process: subprocess.Popen[str], allowed: tuple[int, ...]) -> int:
    out, _ = process.communicate(timeout=300)
    assert process.returncode in allowed, f"exit {process.returncode}:\n{out[-3000:]}"
    return process.returncode


def run_all(commands: list[tuple[str | list[str], Path, dict[str, str]]], allowed: tuple[int, ...]) -> list[int]:
    """Run the commands at once (as the engine's parallel jobs do) and wait for every one."""
    processes = [start(c, cwd, env) for c, cwd, env in commands]
    return [finish(p, allowed) for p in processes]


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, dict[str, Any]]:
    """The whole grid in one process: what every recipe's merge must reproduce."""
    project = make_project(tmp_path_factory.mktemp("unsharded") / "project")
    code = finish(start("pytest --medrobust-only -p no:cacheprovider", project), (0, 1))
    return code, json.loads((project / "reports" / "medrobust.json").read_text())


def check_merged(merged_file: Path, merge_code: int, shard_files: list[Path], engine: str,
                 unsharded: tuple[int, dict[str, Any]]) -> None:
    code, full = unsharded
    shards = [json.loads(p.read_text()) for p in shard_files]
    assert sorted(s["config"]["shard"] for s in shards) == ["1/3", "2/3", "3/3"]
    assert {s["config"]["shard_from"]["engine"] for s in shards} == {engine}
    # Every cell of the grid in exactly one shard.
    expected = [nodeid for s in shards for nodeid in s["summary"]["expected"]]
    assert sorted(expected) == full["summary"]["expected"]
    assert all(s["summary"]["expected"] for s in shards)  # no shard is empty
    merged = json.loads(merged_file.read_text())
    assert merge_code == code
    assert {c["id"]: {k: c.get(k) for k in COMPARED} for c in merged["cells"]} == {
        c["id"]: {k: c.get(k) for k in COMPARED} for c in full["cells"]
    }
    assert merged["summary"] == full["summary"]
    assert merged["model_summaries"] == full["model_summaries"]
    # Each job checks the project out in a folder of its own: the dataset's path differs, its name not.
    assert Path(merged["config"]["dataset"]).name == Path(full["config"]["dataset"]).name
    assert merged["dataset"]["sha256"] == full["dataset"]["sha256"]
    unpathed = [{k: v for k, v in c.items() if k not in ("dataset", "merged_from")} for c in (merged["config"], full["config"])]
    assert unpathed[0] == unpathed[1]
    assert len(merged["config"]["merged_from"]) == 3


def merge_output(command: str) -> str:
    words = shlex.split(command)
    return words[words.index("-o") + 1]


def test_github_actions_matrix(tmp_path, unsharded):
    workflow = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    shard_job, merge_job = workflow["jobs"]["shard"], workflow["jobs"]["merge"]
    matrix = shard_job["strategy"]["matrix"]["shard"]
    assert merge_job["needs"] == "shard" and len(matrix) == 3

    def steps(job: dict[str, Any], marker: str) -> list[dict[str, Any]]:
        return [s for s in job["steps"] if marker in str(s.get("run", "")) or marker in str(s.get("uses", ""))]

    (gate,) = steps(shard_job, "--medrobust-shard")
    (upload,) = steps(shard_job, "actions/upload-artifact")

    def substitute(text: str, shard: int) -> str:
        text = re.sub(r"\$\{\{\s*matrix\.shard\s*\}\}", str(shard), text)
        assert "${{" not in text, text
        return text

    runners = {shard: make_project(tmp_path / f"runner-{shard}") for shard in matrix}
    run_all([(substitute(gate["run"], s), runners[s], {"GITHUB_ACTIONS": "true"}) for s in matrix], (0, 1))
    # upload-artifact: each job's report folder becomes an artifact of its own name.
    artifacts = tmp_path / "artifacts"
    for shard in matrix:
        source = runners[shard] / substitute(upload["with"]["path"], shard)
        shutil.copytree(source, artifacts / substitute(upload["with"]["name"], shard))
    # download-artifact with a pattern: every matching artifact in a folder of its name.
    merger = make_project(tmp_path / "merge-runner")
    (download,) = steps(merge_job, "actions/download-artifact")
    for artifact in sorted(artifacts.iterdir()):
        if fnmatch.fnmatch(artifact.name, download["with"]["pattern"]):
            shutil.copytree(artifact, merger / download["with"]["path"] / artifact.name)
    (merge,) = steps(merge_job, "medrobust merge")
    (code,) = run_all([(merge["run"], merger, {"GITHUB_ACTIONS": "true"})], (0, 1))
    shard_files = sorted((merger / download["with"]["path"]).rglob("medrobust.json"))
    check_merged(merger / merge_output(merge["run"]) / "medrobust.json", code, shard_files, "option", unsharded)


def test_gitlab_parallel(tmp_path, unsharded):
    pipeline = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())
    shard_job, merge_job = pipeline["medrobust-shard"], pipeline["medrobust-merge"]
    total = shard_job["parallel"]
    assert total == 3
    assert merge_job["needs"] == [{"job": "medrobust-shard", "artifacts": True}] and merge_job["when"] == "always"
    (gate,) = [line for line in shard_job["script"] if "--medrobust-shard" in line]
    runners = {i: make_project(tmp_path / f"runner-{i}") for i in range(1, total + 1)}
    env = {"GITLAB_CI": "true", "CI_NODE_TOTAL": str(total)}
    run_all([(gate, runners[i], {**env, "CI_NODE_INDEX": str(i)}) for i in runners], (0, 1))
    # needs: artifacts: every job's artifact paths, restored at the same paths in the merge job.
    merger = make_project(tmp_path / "merge-runner")
    assert shard_job["artifacts"]["when"] == "always"
    for runner in runners.values():
        for path in shard_job["artifacts"]["paths"]:
            shutil.copytree(runner / path, merger / path, dirs_exist_ok=True)
    (merge,) = [line for line in merge_job["script"] if "medrobust merge" in line]
    (code,) = run_all([(merge, merger, {"GITLAB_CI": "true", "CI_NODE_TOTAL": "1"})], (0, 1))
    shard_files = sorted(p for p in (merger / "reports").glob("shard-*/medrobust.json"))
    check_merged(merger / merge_output(merge) / "medrobust.json", code, shard_files, "gitlab", unsharded)


FAKE_SBATCH = r'''
"""A stand-in for sbatch: runs the job at once, with the variables SLURM sets for an array task."""
import json, os, subprocess, sys

args = sys.argv[1:]
options = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
log = os.environ["FAKE_SLURM_LOG"]
jobs = [json.loads(line) for line in open(log)] if os.path.exists(log) else []
job_id = str(1000 + len(jobs))
if "dependency" in options:
    kind, _, on = options["dependency"].partition(":")
    assert kind == "afterany" and on in {j["id"] for j in jobs}, options["dependency"]
env = {**os.environ, "SLURM_JOB_ID": job_id}


def output(task=""):
    """The job's --output file (%A and %j: the job id, %a: the array task), as sbatch opens it."""
    name = options.get("output", "slurm-%j.out").replace("%A", job_id).replace("%j", job_id).replace("%a", str(task))
    return open(name, "w")


if "array" in options:
    spec = options["array"].split("%")[0]
    ids = []
    for part in spec.split(","):
        bounds, _, step = part.partition(":")
        low, _, high = bounds.partition("-")
        ids += list(range(int(low), int(high or low) + 1, int(step or 1)))
    common = {"SLURM_ARRAY_JOB_ID": job_id, "SLURM_ARRAY_TASK_MIN": str(min(ids)),
              "SLURM_ARRAY_TASK_MAX": str(max(ids)), "SLURM_ARRAY_TASK_COUNT": str(len(ids))}
    if "," not in spec:
        common["SLURM_ARRAY_TASK_STEP"] = spec.partition(":")[2] or "1"
    tasks = [subprocess.Popen(["bash", "-c", options["wrap"]], env={**env, **common, "SLURM_ARRAY_TASK_ID": str(i)},
                              stdout=output(i), stderr=subprocess.STDOUT) for i in ids]
    codes = [t.wait() for t in tasks]
else:
    codes = [subprocess.call(["bash", "-c", options["wrap"]], env=env, stdout=output(), stderr=subprocess.STDOUT)]
with open(log, "a") as f:
    f.write(json.dumps({"id": job_id, "options": options, "codes": codes}) + "\n")
print(job_id if "parsable" not in " ".join(args) else f"{job_id};cluster")
'''


def test_slurm_array(tmp_path, unsharded):
    """The script itself runs, with sbatch replaced by a stand-in that starts the array's tasks at
    once (SLURM_ARRAY_TASK_ID, _MIN, _MAX, _COUNT and _STEP set as SLURM sets them) and the
    dependent merge job after them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!{sys.executable}\n{FAKE_SBATCH}")
    sbatch.chmod(0o755)
    project = make_project(tmp_path / "cluster")  # one shared file system, as on a cluster
    log = tmp_path / "jobs.jsonl"
    env = {"PATH": f"{bin_dir}{os.pathsep}{base_env()['PATH']}", "FAKE_SLURM_LOG": str(log)}
    run_all([(f"bash {shlex.quote(str(RECIPES / 'slurm.sh'))}", project, env)], (0,))
    array, merge = [json.loads(line) for line in log.read_text().splitlines()]
    assert array["options"]["array"] == "1-3" and set(array["codes"]) <= {0, 1}
    assert merge["options"]["dependency"] == f"afterany:{array['id']}"
    shard_files = sorted((project / "reports").glob("shard-*/medrobust.json"))
    output = merge_output(merge["options"]["wrap"])
    check_merged(project / output / "medrobust.json", merge["codes"][0], shard_files, "slurm", unsharded)


def test_kubernetes_indexed_job(tmp_path, unsharded):
    shards_job, merge_job = yaml.safe_load_all((RECIPES / "kubernetes-job.yml").read_text())
    spec = shards_job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3

    def container(job: dict[str, Any]) -> dict[str, Any]:
        (found,) = job["spec"]["template"]["spec"]["containers"]
        return found

    gate, merger = container(shards_job), container(merge_job)
    volume = tmp_path / "volume"  # the shared volume, mounted at the same path in every pod
    volume.mkdir()

    def command(c: dict[str, Any]) -> list[str]:
        (mount,) = c["volumeMounts"]
        return [part.replace(mount["mountPath"], str(volume)) for part in c["command"]]

    env = {e["name"]: e["value"] for e in gate.get("env", [])}
    assert env["MEDROBUST_SHARD_TOTAL"] == str(spec["completions"])
    pods = {i: make_project(tmp_path / f"pod-{i}") for i in range(spec["completions"])}
    run_all([(command(gate), pods[i], {**env, "JOB_COMPLETION_INDEX": str(i)}) for i in pods], (0,))
    (code,) = run_all([(command(merger), make_project(tmp_path / "merge-pod"), {})], (0, 1))
    shard_files = sorted(volume.glob("shard-*/medrobust.json"))
    output = merge_output(command(merger)[-1])
    check_merged(Path(output) / "medrobust.json", code, shard_files, "kubernetes", unsharded)
