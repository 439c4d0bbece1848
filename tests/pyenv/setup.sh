#!/usr/bin/env bash
# Create (or reuse) the Python venv the tests need and print its path.
# The venv lives outside the clone (CONTINUUM_VENV, default /var/cache/continuum-venv)
# so that later runs reuse it; it is rebuilt when requirements.txt changes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${CONTINUUM_VENV:-/var/cache/continuum-venv}
want=$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    echo "$venv"
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2
echo "$want" >"$venv/.requirements.sha256"
echo "$venv"
