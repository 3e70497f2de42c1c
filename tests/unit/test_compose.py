"""docker-compose.yml, Dockerfile and docker/: checked without a Docker engine.

`docker-compose config` validates and normalises the compose file (variables substituted, relative
paths made absolute); the tests then check the things `config` does not: that every file we
bind-mount and build from exists (Docker would silently create an empty *directory* in place of a
missing bind-mount source), that the proxy accepts docker/rwproxy.toml with the environment the
compose file gives it, and that the init scripts get the variables they require.

The `docker-compose` binary is needed. Outside CI its absence skips these tests; in CI (`CI` set)
it fails them, so that a missing tool cannot pass for a green run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
PROXY_CONFIG_IN_CONTAINER = "/etc/rwproxy/rwproxy.toml"


def _yaml_to_python(text: str, compose_exe: str):
    """PyYAML if the test environment has it; otherwise the interpreter docker-compose (v1, a
    Python program that depends on PyYAML) runs under."""
    try:
        import yaml
    except ImportError:
        pass
    else:
        return yaml.safe_load(text)
    with open(compose_exe, "rb") as fh:
        first = fh.readline().decode(errors="replace")
    interpreter = first[2:].strip().split() if first.startswith("#!") and "python" in first else None
    if not interpreter:
        pytest.fail(f"cannot parse `docker-compose config` output: PyYAML is not installed here and "
                    f"{compose_exe} is not a Python script; install PyYAML in the test environment")
    out = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"YAML -> JSON via {interpreter} failed: {out.stderr}"
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def compose() -> dict:
    exe = shutil.which("docker-compose")
    if exe is None:
        reason = "the docker-compose binary is not on PATH (apt install docker-compose)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run these tests")
        pytest.skip(reason)
    # Our variables unset, so the compose file's own defaults are what gets checked.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RWPROXY_", "MARIADB_", "COMPOSE_"))}
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, f"docker-compose config rejected {COMPOSE.name}:\n{out.stderr}"
    return _yaml_to_python(out.stdout, exe)


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount; named volumes are skipped."""
    mounts = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            if v.get("type") == "bind":
                mounts.append((Path(v["source"]), v["target"]))
        else:
            source, _, rest = v.partition(":")
            if source.startswith(("/", ".", "~")):
                mounts.append((Path(source).expanduser(), rest.split(":")[0]))
    return mounts


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # KEY=VALUE form
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _published(service: dict) -> dict[int, int]:
    """published host port -> container port."""
    ports = {}
    for p in service.get("ports", []):
        if isinstance(p, dict):
            ports[int(p["published"])] = int(p["target"])
        else:
            *_, host, container = str(p).split(":")
            ports[int(host)] = int(container.split("/")[0])
    return ports


def test_services(compose):
    assert set(compose["services"]) == {"primary", "replica", "rwproxy"}


def test_rwproxy_publishes_data_and_admin_ports(compose):
    assert _published(compose["services"]["rwproxy"]) == {6033: 6033, 6032: 6032}


def test_startup_order_waits_for_a_healthy_primary(compose):
    services = compose["services"]
    for name in ("rwproxy", "replica"):
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
        assert depends.get("primary", {}).get("condition") == "service_healthy", name
    assert "healthcheck.sh" in services["primary"]["healthcheck"]["test"]
    assert "--innodb_initialized" in services["primary"]["healthcheck"]["test"]


def test_every_bind_mount_source_exists_in_the_repo(compose):
    seen = 0
    for name, service in compose["services"].items():
        for host, container in _bind_mounts(service):
            seen += 1
            assert host.exists(), f"{name}: bind-mount source {host} (-> {container}) is missing"
            assert host.resolve().is_relative_to(REPO), f"{name}: {host} is outside the repository"
            if host.is_file():
                assert host.stat().st_size > 0, f"{name}: {host} is empty"
    assert seen >= 3, "expected the proxy config and both init scripts to be bind-mounted"


def test_proxy_config_and_init_scripts_are_mounted_where_they_are_read(compose):
    services = compose["services"]
    targets = {c for _, c in _bind_mounts(services["rwproxy"])}
    assert PROXY_CONFIG_IN_CONTAINER in targets
    for name in ("primary", "replica"):
        scripts = [h for h, c in _bind_mounts(services[name]) if c.startswith("/docker-entrypoint-initdb.d/")]
        assert scripts, f"{name}: nothing mounted into /docker-entrypoint-initdb.d"
        assert all(h.suffix in (".sh", ".sql") for h in scripts), scripts


def test_init_scripts_get_the_variables_they_require(compose):
    for name, service in compose["services"].items():
        env = _environment(service)
        for host, container in _bind_mounts(service):
            if not container.startswith("/docker-entrypoint-initdb.d/") or host.suffix != ".sh":
                continue
            required = re.findall(r"\$\{(\w+):\?", host.read_text())
            missing = [v for v in required if not env.get(v)]
            assert not missing, f"{name}: {host.name} requires {missing}, not in its environment"


def test_replication_topology(compose):
    services = compose["services"]
    ids = {}
    for name in ("primary", "replica"):
        command = services[name]["command"]
        command = command.split() if isinstance(command, str) else command
        assert "--gtid-strict-mode=1" in command and any(a.startswith("--log-bin") for a in command), name
        ids[name] = next(a for a in command if a.startswith("--server-id="))
    assert ids["primary"] != ids["replica"], ids
    assert "--read-only=1" in services["replica"]["command"]
    script = "".join(h.read_text() for h, c in _bind_mounts(services["replica"]) if h.is_file())
    assert "master_use_gtid = slave_pos" in script and "START SLAVE" in script


def test_build_context_and_dockerfile(compose):
    build = compose["services"]["rwproxy"]["build"]
    context = Path(build["context"])
    dockerfile = context / build.get("dockerfile", "Dockerfile")
    assert context.is_dir(), context
    assert dockerfile.is_file(), dockerfile
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"^USER (?!root\b|0\b)\S+", text, re.MULTILINE), "the image must not run as root"
    assert 'ENTRYPOINT ["rwproxy"]' in text
    assert f'CMD ["--config", "{PROXY_CONFIG_IN_CONTAINER}"]' in text
    ignored = {line.strip().rstrip("/") for line in (context / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for sources in re.findall(r"^COPY\s+(?!--)(.+?)\s+\S+\s*$", text, re.MULTILINE):
        for src in sources.split():
            assert (context / src).exists(), f"Dockerfile copies {src}, which is missing"
            assert src.rstrip("/") not in ignored, f"Dockerfile copies {src}, which .dockerignore excludes"
    assert {".venv", ".git"} <= ignored


def test_proxy_accepts_the_compose_config(compose, monkeypatch):
    """docker/rwproxy.toml loads with exactly the environment the rwproxy service gets, listens
    on the published data port, and names only compose services as servers."""
    from proxy import config as config_mod
    service = compose["services"]["rwproxy"]
    host = next(h for h, c in _bind_mounts(service) if c == PROXY_CONFIG_IN_CONTAINER)
    for key in list(os.environ):
        if key.startswith("RWPROXY_"):
            monkeypatch.delenv(key)
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    config = config_mod.load_config(host)
    data = config.listeners["data"]
    assert data.port in _published(service).values()
    assert data.address in ("0.0.0.0", "*", ""), "inside a container the proxy must listen on all interfaces"
    servers = {(s.hostgroup_id, s.hostname) for s in config.servers}
    assert servers == {(0, "primary"), (1, "replica")}
    assert {s.port for s in config.servers} == {3306}
