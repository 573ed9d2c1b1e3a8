#!/usr/bin/env bash
# The unit tests on each other CPython from 3.12 up that this machine has (pyenv's
# versions, or python3.X on PATH), each in a fresh virtual environment. A version
# that is not installed is skipped with a line saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

for minor in 3.12 3.13 3.14; do
    python=""
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$minor".*/bin/python; do
        [[ -x $candidate ]] && python=$candidate
    done
    if [[ -z $python ]] && command -v "python$minor" >/dev/null 2>&1; then
        python=$(command -v "python$minor")
    fi
    if [[ -z $python ]] || ! "$python" -c pass >/dev/null 2>&1; then
        echo "Python $minor: not installed here, skipped"
        continue
    fi
    echo "Python $minor: unit tests with $("$python" --version)"
    venv=$(mktemp -d)
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q -e '.[test]'
    "$venv/bin/python" -m pytest -q tests/unit
    rm -rf "$venv"
done
