#!/bin/sh
# The service's install step, shared by the Dockerfile and tests/packaging: the base
# dependencies only — no PyTorch, no compilers needed at run time.
set -eu
VENV="${1:?usage: install-service.sh VENV_DIR [PROJECT_DIR]}"
PROJECT="${2:-.}"
python -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$PROJECT"
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "error: torch was installed into the service environment" >&2
  exit 1
fi
"$VENV/bin/python" -c "import app.main, app.cli; app.cli.build_parser(with_train_flags=False)"
