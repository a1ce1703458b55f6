"""The lazy top-level API: `from reface import deidentify` gives the function, whatever was imported first."""

import subprocess
import sys

import pytest

CASES = {
    "fresh": "from reface import deidentify, deidentify_file",
    "module first": "import reface.deidentify\nfrom reface import deidentify\nfrom reface import deidentify_file",
    "attribute": "import reface\ndeidentify, deidentify_file = reface.deidentify, reface.deidentify_file",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_deidentify_is_callable_however_imported(case):
    # a fresh interpreter per case: what is imported first is the point
    code = CASES[case] + (
        "\nimport numpy as np"
        "\nassert callable(deidentify) and callable(deidentify_file)"
        "\nfrom reface import load_scan, RefaceError"
        "\ntry:\n    deidentify(None, method='no-such-method')"
        "\nexcept RefaceError as e:\n    assert 'no-such-method' in str(e)"
        "\nelse:\n    raise SystemExit('an unknown method was accepted')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-800:]


def test_unknown_attribute_is_an_attribute_error():
    import reface

    with pytest.raises(AttributeError):
        reface.no_such_thing  # noqa: B018
