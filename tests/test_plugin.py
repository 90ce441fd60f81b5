"""The pytest plugin: --sft-target and the parametrizer, run in a child pytest."""

from __future__ import annotations

import textwrap

pytest_plugins = ["pytester"]


def test_sft_target_option_runs_checks(pytester):
    result = pytester.runpytest("-p", "no:cacheprovider", "--sft-target",
                                "mutant-off-by-one-late", "--sft-check", "S2", "--sft-check",
                                "S3", "--sft-profile", "ci")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*sft-conformance targets: mutant-off-by-one-late*",
                                 "*S2: an assistant token is not trained*",
                                 "*Reproduce:*"])


def test_parametrizer_with_expected_failures(pytester):
    pytester.makepyfile(test_mine=textwrap.dedent('''
        from sft_conformance import parametrize_checks

        @parametrize_checks("mutant-missing-end-token", profile="ci",
                            expected_failures={"S4": "we do not train the end token yet"})
        def test_conformance(sft_check):
            sft_check()
    '''))
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "S4 or S3", "-rx")
    result.assert_outcomes(passed=1, xfailed=1)
    result.stdout.fnmatch_lines(["*we do not train the end token yet*"])
