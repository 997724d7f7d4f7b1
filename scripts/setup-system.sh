#!/usr/bin/env bash
# Install the system packages the test suite's real components need (Debian/Ubuntu).
#
# The tests start their own throwaway services (PostgreSQL clusters, SoftHSM2 tokens, an
# rsyslog receiver); they need the binaries, not running system services. This script:
#   - checks each package with dpkg and does nothing (no apt-get update, ~50 ms) when all are
#     present, so CI and `make` can call it on every run;
#   - otherwise installs the missing ones with apt-get (noninteractive, no recommends);
#   - ensures the unprivileged `postgres` OS user exists: initdb refuses to run as root, so
#     tests running as root run the PostgreSQL binaries as that user.
# Needs root to install; without root it only reports what is missing and exits 1.
#
# Usage: scripts/setup-system.sh          (exit 0 = everything present)
#        scripts/setup-system.sh --bench  (also the benchmark peers: restic, borgbackup, and
#                                          orthanc-postgresql for the imaging bench on PostgreSQL)
set -euo pipefail
bench=0
[[ "${1:-}" == "--bench" ]] && bench=1

# rsyslogd, useradd live in sbin, often not on an unprivileged PATH.
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'setup-system: %s\n' "$*"; }

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()

# PostgreSQL server binaries: any /usr/lib/postgresql/<major>/bin/initdb will do.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    # Debian bookworm ships 15; on other releases fall back to the distribution default.
    if apt-cache show postgresql-15 >/dev/null 2>&1; then
        missing+=(postgresql-15)
    else
        missing+=(postgresql)
    fi
fi
for pkg in gcc libsqlite3-dev libssl-dev softhsm2 opensc rsyslog rsyslog-gnutls dcmtk orthanc orthanc-dicomweb; do
    # dcmtk, orthanc(-dicomweb): DICOM peers of the imaging interoperability tests and bench;
    # gcc, libsqlite3-dev, libssl-dev: build the journal verifier's compiled walk;
    # softhsm2: PKCS#11 module + softhsm2-util; opensc: pkcs11-tool;
    # rsyslog(-gnutls): SIEM receiver over TCP/TLS for the journal exporter tests.
    is_installed "$pkg" || missing+=("$pkg")
done
if ((bench)); then
    for pkg in restic borgbackup orthanc-postgresql; do
        is_installed "$pkg" || missing+=("$pkg")
    done
fi

if ((${#missing[@]} > 0)); then
    if [[ $EUID -ne 0 ]]; then
        log "missing packages: ${missing[*]}"
        log "not root: run 'sudo $0' (or: sudo apt-get install ${missing[*]})"
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-y -q -o DPkg::Lock::Timeout=300)
    log "installing: ${missing[*]}"
    apt-get "${apt_opts[@]}" update
    apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
    log "installed: ${missing[*]}"
else
    log "system packages present (postgresql, gcc, libsqlite3-dev, libssl-dev, softhsm2, opensc, rsyslog, rsyslog-gnutls, dcmtk, orthanc, orthanc-dicomweb)"
fi

# The postgresql packages create this user; make sure of it anyway (minimal images, or
# binaries installed another way).
if ! id -u postgres >/dev/null 2>&1; then
    if [[ $EUID -ne 0 ]]; then
        log "no 'postgres' OS user; not needed when tests run unprivileged (they run initdb as you)"
    else
        log "creating system user 'postgres'"
        useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
            --shell /usr/sbin/nologin postgres
    fi
fi

# Fail here, clearly, rather than in the middle of the test run.
for tool in softhsm2-util pkcs11-tool rsyslogd storescu Orthanc; do
    command -v "$tool" >/dev/null || { log "ERROR: $tool still not found"; exit 1; }
done
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
    || { log "ERROR: no PostgreSQL initdb under /usr/lib/postgresql/*/bin"; exit 1; }
log "ok"
