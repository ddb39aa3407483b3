"""flask_chat's import layers (setup.cfg's ``[importlinter]`` contracts): every module
imports only from its own layer or below, and no circle of imports exists, type-only
and function-level imports included."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_import_layers_hold_and_no_module_imports_round_a_circle() -> None:
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    result = subprocess.run(
        [lint, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout
