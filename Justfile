# trunner developer commands. Every recipe bootstraps .venv from the locks first (`just lock` makes them from
# pyproject.toml): `run` with requirements.lock (runtime only), the others with requirements-dev.lock.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv + "/bin/python"
dev_lock := "requirements-dev.lock"
runtime_lock := "requirements.lock"

# Run every example job locally through the full pipeline.
run *ARGS: runtime
    {{py}} -m trunner run --mode local --jobs examples/jobs {{ARGS}}

# Run the test suite, spread over every core (pytest-xdist); `just test -n 0 …` runs it in one process.
test *ARGS: setup
    {{py}} -m pytest -n auto {{ARGS}}

# Build the container image with buildah and check it with podman (as root: installs what it needs).
image-check *ARGS: setup
    bash .ci/image-check {{ARGS}}

# Print the benchmark figures.
bench: setup
    for script in bench/bench_*.py; do {{py}} "$script"; done

# Static checks: ruff and mypy --strict.
lint: setup
    {{venv}}/bin/ruff check trunner tests bench
    {{venv}}/bin/ruff format --check trunner tests bench
    {{venv}}/bin/mypy

# Run the suite against the newest release of every dependency (no lock) in .venv-latest, then the
# error-reporting tests against the other sentry-sdk major. A canary: not part of CI.
test-latest *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    python3 -m venv --clear .venv-latest
    .venv-latest/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools
    .venv-latest/bin/pip install -q --disable-pip-version-check --upgrade -e '.[dev]'
    .venv-latest/bin/pip list --format=freeze --exclude-editable | sed 's/^/test-latest: /'
    .venv-latest/bin/python -m pytest -n auto {{ARGS}}
    {{just_executable()}} test-sentry2 'sentry-sdk>=2.20,<3'
    {{just_executable()}} test-sentry2 'sentry-sdk==2.20.0'

# The error-reporting tests (through the CLI, against the loopback Sentry stand-in) with the locked set but
# another sentry-sdk (default: the newest 2.x), in .venv-sentry2: both majors stay supported.
test-sentry2 spec="sentry-sdk>=2.20,<3" *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    python3 -m venv --clear .venv-sentry2
    .venv-sentry2/bin/pip install -q --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: -r {{dev_lock}}
    .venv-sentry2/bin/pip install -q --disable-pip-version-check --no-deps --only-binary=:all: '{{spec}}'
    .venv-sentry2/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    .venv-sentry2/bin/pip list --format=freeze | grep -i '^sentry-sdk==' | sed 's/^/test-sentry2: /'
    .venv-sentry2/bin/python -m pytest -n 0 tests/test_errorreport.py tests/cli/test_sentry.py {{ARGS}}

# Pin every dependency with hashes, from pyproject.toml: requirements-dev.lock (runtime, dev extra, build
# backend: what .venv holds for test, bench, lint and CI) and requirements.lock (runtime and build backend
# only, at the same versions: `just run`, the image, `uv tool install`). Each starts with the digest of pyproject.toml's
# dependency tables, which tests/test_lockfile.py checks.
lock: setup
    #!/usr/bin/env bash
    set -euo pipefail
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    "{{py}}" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
        > "$work/build"
    compile=("{{venv}}/bin/uv" pip compile --generate-hashes --universal --python-version 3.11 --no-header --quiet)
    digest=$("{{py}}" -c 'import hashlib, json, tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print(hashlib.sha256(json.dumps([p["build-system"]["requires"], p["project"]["requires-python"], p["project"]["dependencies"], p["project"].get("optional-dependencies", {})], sort_keys=True).encode()).hexdigest())')
    header=$(printf '# Made by `just lock` from pyproject.toml; do not edit.\n# pyproject-dependencies-sha256: %s' "$digest")
    "${compile[@]}" pyproject.toml --extra dev - < "$work/build" --output-file "$work/dev"
    { echo "$header"; cat "$work/dev"; } > {{dev_lock}}
    "${compile[@]}" pyproject.toml - < "$work/build" --constraint {{dev_lock}} --output-file "$work/runtime"
    { echo "$header"; cat "$work/runtime"; } > {{runtime_lock}}

# Create or refresh .venv with the runtime lock only (all `just run` needs), unless the dev lock is in.
runtime:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{py}}" ]; then python3 -m venv "{{venv}}"; fi
    dev=$(cat {{dev_lock}} pyproject.toml | sha256sum)
    runtime=$(cat {{runtime_lock}} pyproject.toml | sha256sum)
    if [ "$(cat {{venv}}/.installed 2>/dev/null)" = "$dev" ] || [ "$(cat {{venv}}/.installed-runtime 2>/dev/null)" = "$runtime" ]; then
        exit 0
    fi
    "{{py}}" -m pip install -q --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: -r {{runtime_lock}}
    "{{py}}" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    echo "$runtime" > "{{venv}}/.installed-runtime"

# Create or refresh .venv with exactly the dev lock (and trunner, editable) whenever it or pyproject.toml changes.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{py}}" ]; then python3 -m venv "{{venv}}"; fi
    dev=$(cat {{dev_lock}} pyproject.toml | sha256sum)
    if [ "$(cat {{venv}}/.installed 2>/dev/null)" = "$dev" ]; then exit 0; fi
    "{{py}}" -m pip install -q --disable-pip-version-check --require-hashes --no-deps --only-binary=:all: -r {{dev_lock}}
    "{{py}}" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
    "{{py}}" .ci/prune-venv {{dev_lock}}
    echo "$dev" > "{{venv}}/.installed"
