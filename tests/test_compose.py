"""Static checks of docker-compose.yml and the Dockerfile (no container engine needed).

The end-to-end run of the stack is scripts/compose-smoke.sh.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

CORE = ("api", "worker", "redis", "postgres")


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose) -> dict:
    svcs = compose.get("services")
    assert isinstance(svcs, dict) and svcs, "no services in docker-compose.yml"
    return svcs


@pytest.fixture(scope="module")
def dockerfile() -> list[str]:
    """Dockerfile instructions, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]


def _gpu_devices(svc: dict) -> list:
    return (((svc.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get(
        "devices"
    ) or []


def _env(svc: dict) -> dict:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


def _volume_sources(svc: dict) -> dict[str, str]:
    """Mounted volumes as {source: target}, short or long syntax."""
    out = {}
    for vol in svc.get("volumes") or []:
        if isinstance(vol, str):
            src, _, rest = vol.partition(":")
            out[src] = rest.split(":")[0]
        else:
            out[vol.get("source")] = vol.get("target")
    return out


def _test_cmd(svc: dict) -> str:
    test = (svc.get("healthcheck") or {}).get("test")
    return " ".join(test) if isinstance(test, list) else str(test or "")


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command")
    return cmd.split() if isinstance(cmd, str) else list(cmd or [])


@pytest.mark.parametrize("name", CORE)
def test_core_service_exists(services, name):
    assert name in services, f"service {name!r} missing"


@pytest.mark.parametrize("name", CORE + ("worker-cpu",))
def test_every_service_has_a_healthcheck_and_restart_policy(services, name):
    svc = services[name]
    hc = svc.get("healthcheck") or {}
    assert not hc.get("disable"), f"{name}: healthcheck disabled"
    test = hc.get("test")
    assert test and test not in (["NONE"], "NONE"), f"{name}: no healthcheck test"
    assert svc.get("restart") in ("always", "unless-stopped", "on-failure"), (
        f"{name}: no restart policy"
    )


def test_api_healthcheck_hits_the_api(services):
    api = services["api"]
    assert re.search(r"/(healthz|readyz)\b", _test_cmd(api)), (
        "api healthcheck must hit /healthz or /readyz"
    )
    assert "curl" not in _test_cmd(api), "slim image has no curl; use python"
    assert any(str(p).endswith("8000:8000") for p in api.get("ports") or []), (
        "api must publish 8000:8000"
    )
    assert _command(api)[-2:] == ["ganforge", "serve"]


@pytest.mark.parametrize("name", ["worker", "worker-cpu"])
def test_worker_healthcheck_checks_the_worker_process(services, name):
    # Decision recorded in docker-compose.yml: a light check that PID 1 is the worker,
    # not an HTTP probe (the image's default) and not `celery inspect ping`.
    svc = services[name]
    test = _test_cmd(svc)
    assert "/proc/1/cmdline" in test and "worker" in test, (
        f"{name}: healthcheck should check the worker process"
    )
    assert "http" not in test, f"{name}: a worker serves no HTTP"
    assert _command(svc)[-2:] == ["ganforge", "worker"]


@pytest.mark.parametrize("name", ["worker", "worker-cpu"])
def test_worker_stop_grace_covers_a_hand_back_and_is_the_one_the_docs_give(services, name):
    # SIGTERM hands the job back in about a second (tests/integration/test_handback.py);
    # the grace leaves room for a long step and a checkpoint upload retried to its end.
    from app.core.artifacts.s3store import UPLOAD_RETRIES

    grace = str(services[name].get("stop_grace_period"))
    match = re.fullmatch(r"(\d+)s", grace)
    assert match, f"{name}: stop_grace_period {grace!r} should be in seconds"
    assert sum(UPLOAD_RETRIES) + 10 <= int(match[1]) <= 60, grace
    assert f"`stop_grace_period: {grace}`" in (ROOT / "docs" / "deploying.md").read_text()


@pytest.mark.parametrize("name", ["api", "worker", "worker-cpu"])
def test_app_services_wait_for_healthy_backends(services, name):
    deps = services[name].get("depends_on")
    assert isinstance(deps, dict), f"{name}: depends_on must use the long form with conditions"
    for backend in ("redis", "postgres"):
        assert backend in deps, f"{name}: does not depend on {backend}"
        assert deps[backend].get("condition") == "service_healthy", (
            f"{name}: {backend} not service_healthy"
        )


def test_workers_start_after_a_healthy_api(services):
    # `ganforge serve` runs the migrations; workers need the schema.
    for name in ("worker", "worker-cpu"):
        assert services[name]["depends_on"].get("api", {}).get("condition") == "service_healthy", (
            name
        )
    assert services["api"].get("healthcheck", {}).get("test") and "/readyz" not in _test_cmd(
        services["api"]
    ), "api healthcheck on /readyz would deadlock with workers waiting for a healthy api"


@pytest.mark.parametrize("name", ["api", "worker", "worker-cpu"])
def test_app_services_fleet_environment(services, name):
    env = _env(services[name])
    assert env.get("GANFORGE_BROKER_URL") == "redis://redis:6379/0", name
    assert (
        env.get("GANFORGE_DATABASE_URL") == "postgresql://ganforge:ganforge@postgres:5432/ganforge"
    ), name
    assert env.get("GANFORGE_STORE_DIR") == "/data/store", name


def test_s3_profile_switches_the_store_by_environment(services):
    for name in ("api", "worker", "worker-cpu", "s3-bucket"):
        env = _env(services[name])
        assert env.get("GANFORGE_STORE_URL") == "${GANFORGE_STORE_URL:-}", name  # empty: local
        assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(env), name
    for name in ("minio", "s3-bucket"):
        assert services[name].get("profiles") == ["s3"], name
    assert _command(services["s3-bucket"]) == ["ganforge", "store", "init"]
    assert services["s3-bucket"]["depends_on"]["minio"]["condition"] == "service_healthy"
    minio = _env(services["minio"])
    assert minio["MINIO_ROOT_USER"] == "${AWS_ACCESS_KEY_ID:-}"


def test_app_services_share_one_image(services):
    images = {services[n].get("image") for n in ("api", "worker", "worker-cpu")}
    assert len(images) == 1 and None not in images, (
        f"api and workers must run one image, got {images}"
    )


def test_named_volumes_declared_and_mounted(compose, services):
    declared = set((compose.get("volumes") or {}).keys())
    assert {"store"} <= declared, "volume 'store' not declared"
    for name, svc in services.items():
        for src in _volume_sources(svc):
            if not src.startswith((".", "/", "~")):
                assert src in declared, f"{name} mounts undeclared volume {src!r}"
    for name in ("api", "worker", "worker-cpu"):
        assert _volume_sources(services[name]).get("store") == "/data/store", (
            f"{name}: store not at /data/store"
        )
    redis_vols = _volume_sources(services["redis"])
    assert any(src in declared and dst == "/data" for src, dst in redis_vols.items()), (
        "redis /data not a named volume"
    )
    pg_vols = _volume_sources(services["postgres"])
    assert any(
        src in declared and dst.startswith("/var/lib/postgresql") for src, dst in pg_vols.items()
    ), "postgres data not a named volume"


def test_worker_reserves_nvidia_gpus(services):
    devices = _gpu_devices(services["worker"])
    assert devices, "worker has no device reservation"
    assert any(
        d.get("driver") == "nvidia" and "gpu" in (d.get("capabilities") or []) for d in devices
    ), f"worker reservation is not an nvidia gpu: {devices}"


def test_gpu_worker_announces_every_gpu_it_reserves(services):
    """A job on N GPUs needs a worker that announces N: the GPU worker reserves them all and
    leaves GANFORGE_WORKER_DEVICES unset, so it announces what CUDA sees (worker.group)."""
    worker = services["worker"]
    assert all(d.get("count") == "all" for d in _gpu_devices(worker)), _gpu_devices(worker)
    assert "GANFORGE_WORKER_DEVICES" not in _env(worker)
    shm = str(worker.get("shm_size", ""))
    assert shm.endswith("gb") and int(shm[:-2]) >= 2, shm  # NCCL between a host's ranks
    cpu = _env(services["worker-cpu"])["GANFORGE_WORKER_DEVICES"]
    assert re.fullmatch(r"\$\{GANFORGE_CPU_WORKER_DEVICES:-1\}", cpu), cpu


def test_cpu_worker_has_no_gpu_and_sits_in_a_profile(services):
    cpu = services["worker-cpu"]
    assert not _gpu_devices(cpu), "worker-cpu must not reserve a GPU"
    assert "cpu" in (cpu.get("profiles") or []), "worker-cpu must be under profile 'cpu'"
    assert not services["worker"].get("profiles"), "the GPU worker belongs to the default profile"


def test_redis_is_a_safe_broker(services):
    redis = services["redis"]
    assert str(redis.get("image", "")).startswith("redis:7")
    cmd = " ".join(_command(redis))
    assert re.search(r"--maxmemory-policy\s+noeviction\b", cmd), "redis must not evict (broker)"
    assert re.search(r"--appendonly\s+yes\b", cmd), "redis must persist (appendonly yes)"
    assert "redis-cli ping" in _test_cmd(redis)


def test_postgres(services):
    pg = services["postgres"]
    assert str(pg.get("image", "")).startswith("postgres:16")
    env = _env(pg)
    assert (env.get("POSTGRES_USER"), env.get("POSTGRES_PASSWORD"), env.get("POSTGRES_DB")) == (
        "ganforge",
        "ganforge",
        "ganforge",
    )
    assert re.search(r"pg_isready\b.*-U\s+ganforge\b", _test_cmd(pg))
    # UTF8, not SQL_ASCII (psycopg would hand SQLAlchemy bytes): via the locale initdb sees.
    assert str(env.get("LANG", "")).upper().replace("-", "").endswith("UTF8"), (
        "postgres LANG must be a UTF-8 locale"
    )


def test_cpu_command_documented(compose):
    head = COMPOSE.read_text().split("services:", 1)[0]
    assert "--profile cpu up -d" in head and "worker-cpu" in head, (
        "document the CPU command at the top"
    )


def test_dockerfile_base_image(dockerfile):
    froms = [ln for ln in dockerfile if ln.upper().startswith("FROM ")]
    assert froms, "no FROM"
    assert froms[-1].split()[1] == "python:3.11-slim", f"final stage is {froms[-1]!r}"


def test_dockerfile_runs_as_non_root(dockerfile):
    users = [ln.split(None, 1)[1].strip() for ln in dockerfile if ln.upper().startswith("USER ")]
    assert users, "no USER: the image would run as root"
    assert users[-1].split(":")[0] not in ("root", "0"), f"last USER is {users[-1]}"


def test_dockerfile_healthcheck_and_defaults(dockerfile):
    hcs = [ln for ln in dockerfile if ln.upper().startswith("HEALTHCHECK ")]
    assert hcs, "no HEALTHCHECK"
    assert "/healthz" in hcs[-1] and "urllib" in hcs[-1], (
        "HEALTHCHECK should probe /healthz with urllib"
    )
    assert "NONE" not in hcs[-1].split()
    text = "\n".join(dockerfile)
    assert re.search(r"^EXPOSE\s+8000\b", text, re.M), "EXPOSE 8000 missing"
    assert re.search(r"GANFORGE_DATA_DIR=/data\b", text), "GANFORGE_DATA_DIR=/data missing"
    assert re.search(r"GANFORGE_HOST=0\.0\.0\.0\b", text), "GANFORGE_HOST=0.0.0.0 missing"
    cmds = [ln for ln in dockerfile if ln.upper().startswith("CMD ")]
    assert cmds and cmds[-1] == 'CMD ["ganforge", "serve"]', f"default CMD is {cmds[-1:]}"


def test_dockerfile_installs_dependencies_before_copying_source(dockerfile):
    copies = [i for i, ln in enumerate(dockerfile) if ln.upper().startswith(("COPY ", "ADD "))]
    assert copies, "no COPY"
    first = dockerfile[copies[0]]
    assert "pyproject.toml" in first and " . " not in f"{first} ", (
        f"first COPY should be pyproject only: {first}"
    )
    installs = [
        i
        for i, ln in enumerate(dockerfile)
        if ln.upper().startswith("RUN ") and "pip install" in ln
    ]
    assert installs and installs[0] < copies[-1], (
        "dependencies must be installed before the source is copied"
    )
