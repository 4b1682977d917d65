# trunner developer commands. Every recipe bootstraps .venv from pyproject.toml first: `run` with the
# runtime dependencies only, the others with the dev extra too.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv + "/bin/python"

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

# Pin the runtime dependencies and the build backend with hashes in requirements.lock (the image installs it).
lock: setup
    {{py}} -m pip install -q --disable-pip-version-check "uv==0.13.8"
    {{py}} -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))' \
        | {{venv}}/bin/uv pip compile pyproject.toml - --generate-hashes --universal --python-version 3.11 \
            --no-header --quiet --output-file requirements.lock

# Create or refresh .venv with trunner's runtime dependencies only (all `just run` needs).
runtime:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -x "{{py}}" ]; then python3 -m venv "{{venv}}"; fi
    for stamp in "{{venv}}/.installed" "{{venv}}/.installed-runtime"; do
        if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then exit 0; fi
    done
    "{{py}}" -m pip install -q --disable-pip-version-check -e .
    touch "{{venv}}/.installed-runtime"

# Create or refresh .venv with the dev extra (tests, linters) when pyproject.toml changes.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.installed"
    if [ ! -x "{{py}}" ]; then python3 -m venv "{{venv}}"; fi
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "{{py}}" -m pip install -q --disable-pip-version-check -e '.[dev]'
        touch "$stamp"
    fi
