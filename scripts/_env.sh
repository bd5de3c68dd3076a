# Shared by scripts/serve and scripts/test: make .venv hold this project, installing only
# when pyproject.toml changed. Sourced, not run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
VENV=${GANFORGE_VENV:-$ROOT/.venv}
extras=${1:-}
stamp="$VENV/.ganforge-installed"
# The server's pyproject and the client's (clients/python, a dependency installed from here).
hash="$(cat pyproject.toml clients/python/pyproject.toml | sha256sum | cut -c1-16)"
want="${hash}${extras}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
have="$(cat "$stamp" 2>/dev/null || true)"
# An install with the test extras also serves; only a changed pyproject.toml reinstalls.
# ganforge-client comes from clients/python in the same pip command, so pip takes this
# checkout's copy for the server's dependency and never looks for one on an index.
if [ "$have" != "$want" ] && [ "$have" != "${hash}[test]" ]; then
  echo "installing ganforge${extras} into $VENV (torch is large: first time takes minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q -e ./clients/python -e ".${extras}" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
