"""``make bench``: every benchmark, one after the other, each beside its real peer.

Each benchmark is a standalone script (run it alone for more options); this runner calls them
in sequence with sizes that keep the whole run under about half an hour on 2 cores, and stops
at none: a failing benchmark is reported and the next one runs.

    python -m bench            # all
    python -m bench crypto fhir  # some
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

BENCHES: dict[str, list[str]] = {
    "crypto": ["crypto.py"],  # envelope AEAD vs raw AES-GCM
    "journal": ["journal.py", "--entries", "1000000"],  # appends, verify vs SHA-256, proofs
    "journal-proofs": ["journal_proofs.py"],  # in-memory tree at 1M leaves
    "backup": ["backup/run.py"],  # vs restic and borg on >= 1 GiB
    "fhir": ["fhir/run.py", "--quick"],  # import vs raw SQL insert, search latency
    "imaging": ["imaging/run.py"],  # C-STORE, STOW-RS, WADO-RS vs Orthanc, one client
    # the same with four at once: a viewer's parallel connections, modalities sending together
    "imaging-c4": ["imaging/run.py", "--concurrency", "4"],
}


def main(argv: list[str]) -> int:
    chosen = argv or list(BENCHES)
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    failed = []
    for name in chosen:
        script, *args = BENCHES[name]
        path = HERE / script
        if not path.exists():
            print(f"\n=== {name}: {script} not present, skipped")
            continue
        print(f"\n=== {name}: {script} {' '.join(args)}", flush=True)
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(path), *args], check=False)
        print(f"=== {name}: {time.perf_counter() - start:.0f} s, exit {result.returncode}")
        if result.returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
