#!/usr/bin/env bash
# Set up vdxp-gateway on Debian 12 (system packages, a virtualenv, the package) and run a job.
#   ./bootstrap.sh demo    set up, then run the self-contained demonstration
#   ./bootstrap.sh test    set up, then run the whole test suite (lint, types, tests)
#   ./bootstrap.sh setup   set up only
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"

job="${1:-demo}"
shift || true
VENV="${VDXP_VENV:-.venv}"

# softhsm2: the development HSM; opensc: pkcs11-tool; openssl: cross-checks in tests.
APT_PACKAGES=(softhsm2 opensc openssl python3 python3-venv python3-dev gcc ca-certificates postgresql gnupg)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "bootstrap: need root (or sudo) to install: ${APT_PACKAGES[*]}" >&2; exit 1; fi
}

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bootstrap: installing system packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# A Python >= 3.11: the first one on PATH that qualifies (Debian 12's python3 is 3.11).
PY=""
for cand in python3.13 python3.12 python3.11 python3; do
  if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$(command -v "$cand")"; break
  fi
done
[ -n "$PY" ] || { echo "bootstrap: Python 3.11 or newer not found" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating virtualenv $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.vdxp-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing Python packages"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c 'import gateway, hsm, protocols, pkcs11, twisted, lxml' # fails loudly if the install did
  echo "$want" > "$stamp"
fi

case "$job" in
  setup) echo "bootstrap: ready ($VENV/bin/vdxp-gateway)" ;;
  demo) exec "$VENV/bin/vdxp-gateway" demo "$@" ;;
  test)
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *) echo "usage: $0 [demo|test|setup] [args...]" >&2; exit 2 ;;
esac
