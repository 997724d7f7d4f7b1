"""S3 Object Lock repositories against a real moto S3 server on loopback.

moto 5 enforces some of Object Lock and not all of it; what it does not enforce is asserted
here *as observed* (so an upgrade that changes it shows up) and documented in docs/backup.md:
hdsvault's own refusals do not depend on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from platformkit import Site, make_site, toml_repo

from hdsvault.backup import ObjectLockedError
from hdsvault.backup.s3 import S3Repository


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}),
    )


@pytest.fixture
def bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "hdsv-" + request.node.name.lower().replace("_", "-")[:40]
    client(moto_endpoint).create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


@pytest.fixture
def site(tmp_path: Path, moto_endpoint: str, bucket: str) -> Site:
    repo = toml_repo(
        "offsite",
        "s3",
        endpoint_url=moto_endpoint,
        bucket=bucket,
        prefix="hdsvault",
        access_key_id="test",
        secret_access_key="test",
        retention_days=30,
    )
    return make_site(tmp_path / "site", "sqlite:///", [repo], bundles=1)


def test_s3_round_trip_with_compliance_lock(
    site: Site, moto_endpoint: str, bucket: str, tmp_path: Path
) -> None:
    s3 = client(moto_endpoint)
    first = site.cli_json("backup", "run")[0]
    site.cli_json("backup", "run")
    assert site.cli_json("backup", "verify", "--read-data")["ok"]
    site.cli("backup", "restore", first["snapshot"], "--to", str(tmp_path / "out"))
    assert (tmp_path / "out/platform/database/hdsvault.sqlite").is_file()

    key = f"hdsvault/snapshots/{first['snapshot']}"
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    until = head["ObjectLockRetainUntilDate"]
    assert timedelta(days=29) < until - datetime.now(UTC) <= timedelta(days=30)
    lock = s3.head_object(Bucket=bucket, Key="hdsvault/config")
    assert lock["ObjectLockMode"] == "COMPLIANCE"

    # Deleting the locked version: refused by the store (moto enforces this) ...
    with pytest.raises(ClientError) as exc:
        s3.delete_object(Bucket=bucket, Key=key, VersionId=head["VersionId"])
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    # ... and by hdsvault before it asks
    repo = S3Repository(bucket, retention=timedelta(days=30), prefix="hdsvault", client=s3)
    with pytest.raises(ObjectLockedError, match="COMPLIANCE"):
        repo.delete(f"snapshots/{first['snapshot']}")
    # Write-once: a second PUT of an existing name is refused (If-None-Match)
    from hdsvault.backup import ObjectExistsError

    with pytest.raises(ObjectExistsError):
        repo.put(f"snapshots/{first['snapshot']}", b"forged")

    # Retention: forget keeps what is locked
    forgot = site.cli_json("backup", "forget", "--policy", "last=1")
    assert forgot["locked"] == [first["snapshot"]] and forgot["removed"] == []

    # A plain DELETE (no version) only hides the object behind a delete marker: verify sees a
    # missing manifest, and the locked version is recovered.
    s3.delete_object(Bucket=bucket, Key=key)
    report = site.cli_json("backup", "verify", ok=False)
    assert not report["ok"]
    assert repo.hidden_by_delete_markers("snapshots") == [f"snapshots/{first['snapshot']}"]
    repo.undelete(f"snapshots/{first['snapshot']}")
    assert site.cli_json("backup", "verify")["ok"]

    # Maintenance extends retention of live objects; never shortens
    later = datetime.now(UTC) + timedelta(days=60)
    assert repo.extend_retention([f"snapshots/{first['snapshot']}"], later) == 1
    assert (
        repo.extend_retention([f"snapshots/{first['snapshot']}"], later - timedelta(days=50)) == 0
    )
    assert s3.head_object(Bucket=bucket, Key=key)["ObjectLockRetainUntilDate"] >= later - timedelta(
        seconds=1
    )
    site.cli("backup", "maintain")


def test_what_moto_does_not_enforce(moto_endpoint: str, bucket: str) -> None:
    """Observed moto 5 behaviour that real S3 refuses (documented in docs/backup.md)."""
    s3 = client(moto_endpoint)
    until = datetime.now(UTC) + timedelta(days=1)
    v = s3.put_object(
        Bucket=bucket,
        Key="k",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )["VersionId"]
    # 1. shortening a COMPLIANCE retention is accepted (S3: AccessDenied)
    s3.put_object_retention(
        Bucket=bucket,
        Key="k",
        VersionId=v,
        Retention={"Mode": "COMPLIANCE", "RetainUntilDate": until - timedelta(hours=12)},
    )
    # 2. COMPLIANCE -> GOVERNANCE is accepted (S3: refused)
    s3.put_object_retention(
        Bucket=bucket,
        Key="k",
        VersionId=v,
        Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until},
    )
    assert s3.head_object(Bucket=bucket, Key="k")["ObjectLockMode"] == "GOVERNANCE"
    # 3. a retain-until date in the past is accepted at PUT (S3: InvalidArgument)
    s3.put_object(
        Bucket=bucket,
        Key="p",
        Body=b"x",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) - timedelta(days=1),
    )
    # 4. versioning can be suspended on an Object Lock bucket (S3: InvalidBucketState)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})


def test_bucket_without_object_lock_is_refused(moto_endpoint: str) -> None:
    from hdsvault.backup import BackupError

    s3 = client(moto_endpoint)
    s3.create_bucket(Bucket="hdsv-plain")
    with pytest.raises(BackupError, match="Object Lock"):
        S3Repository("hdsv-plain", retention=timedelta(days=1), client=s3)
