"""The suite as a guest in a user's repository (issue 10).

A temporary repository with its own ``reference.py``, a root ``conftest.py`` that loads its own
Hypothesis profile, ``pythonpath = ["."]`` and Hypothesis tests of its own. The README's adapter
example is copied into it. Then, in fresh processes (the installed plugin loads through its
``pytest11`` entry point, as in any user's environment):

* ``python -m pytest --sft-target my_adapter:MyTarget`` and ``pytest ...`` run our checks and the
  user's tests, which still import *their* ``reference``;
* the user's Hypothesis tests run as many examples with the plugin as without it, under
  ``CI=true`` and with their own profile, and ``HF_HUB_OFFLINE`` stays unset in their tests;
* ``--collect-only`` counts our items, ``-k`` and a printed node id select one check;
* ``sft-conformance check my_adapter:MyTarget`` finds the module in the working directory, and a
  file target written as a dataclass with ``from __future__ import annotations`` loads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sys.executable).parent


def script(name: str) -> str:
    """A console script of this environment (beside the interpreter, else on PATH)."""
    import shutil

    found = SCRIPTS / name if (SCRIPTS / name).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"no {name} console script in this environment")
    return str(found)


def readme_adapter() -> str:
    """The adapter code block of the README's 'Checking your own trainer' section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Checking your own trainer"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


USER_REFERENCE = 'WHO = "the user\'s own reference module"\n'

USER_CONFTEST = '''
import os
from hypothesis import settings

settings.register_profile("dev", max_examples=7)
if os.environ.get("USER_PROFILE"):
    settings.load_profile(os.environ["USER_PROFILE"])
'''

USER_TESTS = '''
import os
from pathlib import Path

from hypothesis import given, strategies as st

import reference

COUNTS = Path(os.environ["COUNT_FILE"])


def test_own_reference_module():
    assert reference.WHO == "the user's own reference module"


def test_hub_variables_untouched():
    assert "HF_HUB_OFFLINE" not in os.environ
    assert "HF_DATASETS_OFFLINE" not in os.environ


@given(st.integers())
def test_user_property(x):
    with COUNTS.open("a") as fh:
        fh.write("x\\n")
'''

DATACLASS_TARGET = '''
from __future__ import annotations

from dataclasses import dataclass, field

from sft_conformance.reference import Collator, sft_loss


@dataclass
class DataclassTarget:
    name: str = "user-dataclass"
    known_failures: dict[str, str] = field(default_factory=dict)

    def collate(self, conversations, tokenizer, max_length):
        return Collator()(conversations, tokenizer, max_length)

    def loss(self, logits, labels, num_items_in_batch=None):
        return sft_loss(logits, labels, num_items_in_batch=num_items_in_batch)
'''


@pytest.fixture(scope="module")
def user_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("user_repo")
    (repo / "reference.py").write_text(USER_REFERENCE)
    (repo / "conftest.py").write_text(USER_CONFTEST)
    (repo / "pyproject.toml").write_text('[tool.pytest.ini_options]\npythonpath = ["."]\n'
                                         'testpaths = ["tests"]\n')
    (repo / "tests").mkdir()
    (repo / "tests" / "test_user.py").write_text(USER_TESTS)
    (repo / "my_adapter.py").write_text(readme_adapter())
    (repo / "dc_adapter.py").write_text(DATACLASS_TARGET)
    return repo


def run(repo, *args, extra_env=None, timeout=600):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HYPOTHESIS", "SFT_CONFORMANCE", "PYTEST"))
           and k not in ("CI", "PYTHONPATH")}
    env["COUNT_FILE"] = str(repo / "counts.txt")
    env.update(extra_env or {})
    (repo / "counts.txt").write_text("")
    proc = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, len((repo / "counts.txt").read_text().splitlines())


PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:randomly")
SUITE = ("--sft-target", "my_adapter:MyTarget", "--sft-profile", "ci",
         "--sft-check", "S1", "--sft-check", "S6")


@pytest.mark.parametrize("profile_env", [{"CI": "true"}, {"USER_PROFILE": "dev"}],
                         ids=["CI=true", "user dev profile"])
def test_suite_and_user_tests_share_a_session(user_repo, profile_env):
    proc, n_with = run(user_repo, *PYTEST, *SUITE, "-rA", extra_env=profile_env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for passed in ("::sft-conformance[my_adapter:MyTarget]::S1-template_parity",
                   "::sft-conformance[my_adapter:MyTarget]::S6-loss_equals_oracle",
                   "tests/test_user.py::test_own_reference_module",
                   "tests/test_user.py::test_hub_variables_untouched",
                   "tests/test_user.py::test_user_property"):
        assert f"PASSED {passed}" in out, out
    # the user's Hypothesis tests run as many examples as without the plugin installed
    without, n_without = run(user_repo, *PYTEST, "tests/test_user.py::test_user_property",
                             "-p", "no:sft_conformance", "-q", extra_env=profile_env)
    assert without.returncode == 0, without.stdout + without.stderr
    assert n_with == n_without == (7 if "USER_PROFILE" in profile_env else 100)


def test_collect_only_and_selection(user_repo):
    proc, _ = run(user_repo, *PYTEST, *SUITE, "--collect-only", "-q")
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "sft-conformance[my_adapter:MyTarget]::S1-template_parity" in out
    assert re.search(r"\b5 tests collected", out), out  # 3 user tests + 2 checks
    proc, _ = run(user_repo, *PYTEST, *SUITE, "-k", "S6-", "-q")
    assert proc.returncode == 0 and "1 passed, 4 deselected" in proc.stdout, proc.stdout
    node = "::sft-conformance[my_adapter:MyTarget]::S1-template_parity"
    proc, _ = run(user_repo, *PYTEST, *SUITE, node, "-q")
    assert proc.returncode == 0 and re.search(r"^1 passed", proc.stdout, re.M), proc.stdout


def test_console_scripts_find_modules_in_the_working_directory(user_repo):
    proc, _ = run(user_repo, script("pytest"), "-p", "no:cacheprovider", *SUITE[:4],
                  "--sft-check", "S1", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc, _ = run(user_repo, script("sft-conformance"), "check", "my_adapter:MyTarget",
                  "dc_adapter.py:DataclassTarget", "--check", "S1", "--profile", "ci")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "user-dataclass" in proc.stdout and "my-trainer" in proc.stdout
    proc, _ = run(user_repo, sys.executable, "-m", "sft_conformance.cli", "check",
                  "my_adapter:MyTarget", "--check", "S1", "--profile", "ci")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_bad_target_is_a_usage_error_not_an_internal_error(user_repo):
    proc, _ = run(user_repo, *PYTEST, "--sft-target", "my_adapter:Nope", "-q")
    assert proc.returncode == 4, proc.stdout + proc.stderr  # pytest's usage error
    assert "my_adapter:Nope" in proc.stderr and "has no attribute 'Nope'" in proc.stderr
    assert "INTERNALERROR" not in proc.stdout + proc.stderr


def test_readme_adapter_is_the_shipped_example():
    shipped = textwrap.dedent((ROOT / "examples/ci/my_adapter.py").read_text())
    for line in ("class MyTarget:", "def collate(self, conversations, tokenizer, max_length):",
                 "def loss(self, logits, labels, num_items_in_batch=None):"):
        assert line in readme_adapter() and line in shipped
