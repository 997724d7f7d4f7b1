"""A real platform loaded with Synthea records, configured with backup repositories, and the
CLI driven in-process (Typer's runner) or as a real ``hdsvault serve`` subprocess.

The KEK file lives *outside* the data directory (``<tmp>/safe/kek.key``): the round-trip tests
destroy the data directory, as ransomware would, and the KEK must survive that — which is
exactly what ``docs/backup.md`` asks of operators.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hdsvault.access.roles import Role
from hdsvault.access.tokens import Principal, create_token
from hdsvault.cli.main import app
from hdsvault.config import Settings, load_settings
from hdsvault.platform import Platform, init_platform
from hdsvault.records import bulk
from hdsvault.records.model import Caller
from hdsvault.records.store import RecordStore
from hdsvault.tenants.service import add_tenant

from support.serving import start_on_free_port

TENANT = "750712184"
SYNTHEA = Path("/work/shared/data/synthea-r4")
if not SYNTHEA.is_dir():  # CI: shared/ beside the clone
    SYNTHEA = Path(__file__).resolve().parents[3] / "shared" / "data" / "synthea-r4"


@dataclass
class Site:
    """One platform under test: its configuration file, settings, and a service token."""

    root: Path
    config: Path
    settings: Settings
    token: str = ""

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def open(self) -> Platform:
        return Platform.open(self.settings)

    def cli(self, *args: str, ok: bool = True) -> Any:
        result = CliRunner().invoke(app, ["--config", str(self.config), *args])
        if ok and result.exit_code != 0:
            raise AssertionError(
                f"hdsvault {' '.join(args)} exited {result.exit_code}:\n{result.output}"
                f"\n{result.exception!r}"
            )
        return result

    def cli_json(self, *args: str, ok: bool = True) -> Any:
        out = self.cli(*args, "--json", ok=ok).stdout
        return json.loads(out[out.index("{") if out.lstrip().startswith("{") else out.index("[") :])


def toml_repo(name: str, kind: str, **fields: Any) -> str:
    lines = ["[[backup.repositories]]", f'name = "{name}"', f'kind = "{kind}"']
    for k, v in fields.items():
        lines.append(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}")
    return "\n".join(lines)


def make_site(root: Path, db_url: str, repos: list[str], bundles: int = 2) -> Site:
    """Initialise a platform with one tenant and ``bundles`` Synthea patients imported."""
    root.mkdir(parents=True, exist_ok=True)
    if db_url.startswith("sqlite"):  # inside the data directory, as in the default set-up
        db_url = f"sqlite:///{root / 'var' / 'hdsvault.db'}"
    config = root / "hdsvault.toml"
    config.write_text(
        "\n".join(
            [
                f'data_dir = "{root / "var"}"',
                "[database]",
                f'url = "{db_url}"',
                "[kek.file]",
                f'path = "{root / "safe" / "kek.key"}"',
                "[logging]",
                'level = "warning"',
                *repos,
            ]
        )
        + "\n"
    )
    settings = load_settings(config)
    init_platform(settings)
    site = Site(root, config, settings)
    platform = site.open()
    try:
        add_tenant(platform, TENANT, "Hôpital de test", by="test")
        if bundles:
            caller = Caller(Principal(subject="os:test", tenant=TENANT, role=Role.SERVICE), TENANT)
            files = sorted(SYNTHEA.glob("*.json.gz"))[:bundles]
            report = bulk.import_paths(
                RecordStore(platform), caller, files, validate_resources=False
            )
            assert not report.errors, report.errors
        site.token = create_token(
            platform.engine, tenant=TENANT, role=Role.SERVICE, ttl=timedelta(days=1), by="test"
        ).token
    finally:
        platform.close()
    return site


@contextlib.contextmanager
def serving(site: Site) -> Iterator[str]:
    """A real ``hdsvault serve`` subprocess on a free loopback port, itself answering there
    (``support.serving``); yields its base URL. Its output goes to ``server-PORT.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HDSVAULT_")}
    script = Path(sys.executable).parent / "hdsvault"
    logs: dict[int, Path] = {}

    def launch(port: int) -> subprocess.Popen[bytes]:
        logs[port] = site.root / f"server-{port}.log"
        with logs[port].open("wb") as log:  # the child keeps its own descriptor
            return subprocess.Popen(
                [str(script), "--config", str(site.config), "serve", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def output(proc: subprocess.Popen[bytes]) -> str:
        return "".join(path.read_text() for path in logs.values())

    proc, port = start_on_free_port(launch, output)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}
