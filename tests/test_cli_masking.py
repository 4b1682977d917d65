"""Masking as a user meets it: ``trunner test -f job.yaml`` with the local executor, real tools
printing each secret in the forms they print it (plain, base64, shell-quoted, URL-encoded, JSON)."""

from __future__ import annotations

import json

import yaml

from tests.test_cli import trunner
from trunner.logs.secret_forms import forms_of

COMMANDS = [
    'echo "long: $LONG"',
    'printf %s "$LONG" | base64',
    'echo "::set-outcome-var $KEY=1"',
    'echo "::set-outcome-var joined=$A$B"',
    'echo "overlap: abcdef123xyz789"',
    "echo $TRAIL.",
    'printf %s "$TINY" | base64',
    "jq -n env.QUOTE",
    'bash -c \'printf "%q\\n" "$QUOTE"\'',
    "python3 -c 'import os, urllib.parse; print(urllib.parse.quote(os.environ[\"QUOTE\"]).lower())'",
    "bash -xc ': \"$QUOTE\"'",
    "echo '{ braces stay }'",
    'echo "$JSON"',
]
SECRETS = {
    "LONG": "L0ng-secret-" + "x9" * 150 + "-end",
    "KEY": "key_secret_123",
    "A": "abcdef123",
    "B": "123xyz789",
    "TRAIL": "trailing-secret   ",
    "TINY": "k3y!",
    "QUOTE": 'it\'s a "secret" \\ value',
    "JSON": '{\n  "private_key": "pk-0123456789"\n}\n',
}


def test_trunner_test_masks_every_form_real_tools_print(tmp_path):
    job = {
        "id": "10",
        "commands": COMMANDS,
        "variables": [{"key": k, "value": v, "sensitive": True} for k, v in SECRETS.items()],
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job, width=1000))
    # a 1024-byte batch makes the line limit 256: LONG (312 characters) and its base64 are longer
    result = trunner("test", "--executor", "local", "-f", str(path), "--job-pod-log-max-size", "1024")
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    for value in SECRETS.values():
        for needle in forms_of(value).needles:
            if len(needle) >= 4:
                assert needle.decode() not in output, (needle, output)
    lines = result.stdout.splitlines()
    assert "{ braces stay }" in result.stdout
    assert "outcome variable joined=**********" in lines
    assert any(line.endswith("] ::set-outcome-var **********=1") for line in lines)
    assert "sensitive variable JSON: 2 of its lines are shorter than 6 characters" in result.stderr
    assert "sensitive variable TINY is shorter than 6 characters" in result.stderr


def test_a_lone_surrogate_in_a_job_file_is_one_clear_error():
    # A job file is YAML, which has no lone surrogates; the API's JSON can carry one, and such a
    # job runs and reports (tests/logs/test_mask_leaks.py).
    job = '{"id": "9", "commands": ["echo hi"], "variables": [{"key": "S", "value": "tok-\\ud800-en-value", "sensitive": true}]}'
    assert json.loads(job)["variables"][0]["value"] == "tok-\ud800-en-value"
    result = trunner("test", "-f", "-", stdin=job)
    assert result.returncode == 2
    assert result.stderr.startswith("trunner: <stdin>: ") and "Traceback" not in result.stderr
