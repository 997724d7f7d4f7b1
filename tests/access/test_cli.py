"""``hdsvault access explain`` and ``access policy`` as an operator runs them.

In-process through Typer's runner (one import of the CLI, not one per command).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hdsvault.cli.main import app

runner = CliRunner()


class Result:
    def __init__(self, r: Any) -> None:
        self.returncode, self.stdout, self.stderr = r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    data = tmp_path_factory.mktemp("cli") / "var"
    e = {
        "HDSVAULT_DATA_DIR": str(data),
        "HDSVAULT_ACCESS__POLICY": "builtin",
        "HDSVAULT_CONFIG": "",
    }
    assert runner.invoke(app, ["init"], env=e).exit_code == 0
    assert runner.invoke(app, ["tenant", "add", "750712184", "--name", "CHU"], env=e).exit_code == 0
    return e


def _run(env: dict[str, str], *args: str) -> Result:
    return Result(runner.invoke(app, ["access", *args], env=env))


def test_explain_prints_the_decision_path(env: dict[str, str]) -> None:
    base = [
        "explain",
        "--subject",
        "dr",
        "--role",
        "nurse",
        "--tenant",
        "750712184",
        "--care-unit",
        "cardiology",
        "--request",
        "GET /fhir/750712184/Patient/123",
    ]
    r = _run(env, *base, "--encounter-unit", "cardiology")
    assert r.returncode == 0, r.stderr
    assert "→ care.read" in r.stdout and "decision   ALLOW by care.read" in r.stdout
    r = _run(env, *base, "--encounter-unit", "cardiology", "--labels", "R,PSY")
    assert r.returncode == 1 and "DENY by sens.psychiatry" in r.stdout
    r = _run(env, *base, "--patient-labels", "VIP", "--break-glass", "unconscious patient in ED")
    assert r.returncode == 0 and "ALLOW by break-glass.declared" in r.stdout
    assert "→ sens.vip-staff" in r.stdout
    r = _run(
        env,
        "explain",
        "--subject",
        "op",
        "--role",
        "platform-operator",
        "--request",
        "GET /fhir/750712184/Patient/123",
    )
    assert r.returncode == 1 and "DENY by sod.no-clinical-access" in r.stdout
    r = _run(env, *base[:-1], "GET /nowhere")
    assert r.returncode == 2 and "not a /fhir" in r.stderr


def test_explain_with_a_token(env: dict[str, str]) -> None:
    out = runner.invoke(app, ["token", "create", "--tenant", "750712184", "--role", "dpo"], env=env)
    token = out.stdout.split()[-1]
    r = _run(env, "explain", "--token", token, "--request", "GET /fhir/750712184/AuditEvent")
    assert r.returncode == 0 and "ALLOW by audit.dpo" in r.stdout
    r = _run(
        env, "explain", "--token", "hdsv_000000000000000000000000_x", "--request", "GET /admin/x"
    )
    assert r.returncode == 1 and "unknown-token" in r.stderr


def test_policy_check(env: dict[str, str], tmp_path: Path) -> None:
    r = _run(env, "policy")
    assert r.returncode == 0 and "hdsvault-default@1.0.0" in r.stdout and "valid" in r.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[policy]\nid="x"\nversion="1"\n[[rules]]\nid="a"\neffect="allow"\nreason="r"\nroles=["god"]\n'
    )
    r = _run(env, "policy", str(bad))
    assert r.returncode == 2 and "rules.0(a).roles" in r.stderr
