"""The command line end to end: exit codes, JSON, header, bad targets."""

from __future__ import annotations

import json
import textwrap

from sft_conformance.cli import main

ADAPTER = textwrap.dedent('''
    from sft_conformance.reference import Collator, sft_loss


    class MyTarget:
        name = "my-trainer"
        labels_shifted = False

        def collate(self, conversations, tokenizer, max_length):
            return Collator()(conversations, tokenizer, max_length)

        def loss(self, logits, labels, num_items_in_batch=None):
            return sft_loss(logits, labels, num_items_in_batch=num_items_in_batch)


    class Broken(MyTarget):
        name = "broken"

        def collate(self, conversations, tokenizer, max_length):
            batch = super().collate(conversations, tokenizer, max_length)
            batch["labels"][:, :] = -100  # trains nothing
            return batch


    class NoCollate:
        name = "no-collate"


    class WrongShape(MyTarget):
        name = "wrong-shape"

        def collate(self, conversations, tokenizer, max_length):
            batch = super().collate(conversations, tokenizer, max_length)
            batch["labels"] = batch["labels"][:, :-1]
            return batch


    class Raises(MyTarget):
        name = "raises"

        def collate(self, conversations, tokenizer, max_length):
            raise KeyError("prompt")
''')


def _adapter(tmp_path):
    path = tmp_path / "my_adapter.py"
    path.write_text(ADAPTER)
    return path


def test_user_adapter_file_passes_and_writes_json(tmp_path, capsys):
    path = _adapter(tmp_path)
    out = tmp_path / "r.json"
    code = main(["check", f"{path}:MyTarget", "--profile", "ci", "--check", "S2",
                 "--check", "S6", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "profile: ci" in text and "torch" in text and "tokenizer:" in text
    data = json.loads(out.read_text())
    checks = data["runs"][0]["checks"]
    assert [c["id"] for c in checks] == ["S2", "S6"]
    assert all(set(c) >= {"id", "status", "message", "counterexample"} for c in checks)


def test_failing_target_exits_1_with_counterexample(tmp_path, capsys):
    path = _adapter(tmp_path)
    out = tmp_path / "r.json"
    code = main(["check", f"{path}:Broken", "--profile", "ci", "--check", "S2",
                 "--json", str(out)])
    assert code == 1
    (check,) = json.loads(out.read_text())["runs"][0]["checks"]
    assert check["status"] == "failed" and check["counterexample"]["conversations"]


def test_configuration_errors_exit_2(tmp_path, capsys):
    path = _adapter(tmp_path)
    assert main(["check", "no_such_module:Thing"]) == 2
    assert "does not import" in capsys.readouterr().err
    assert main(["check", f"{path}:NoCollate"]) == 2
    assert "has no collate" in capsys.readouterr().err
    assert main(["check", "not-a-target"]) == 2
    assert main([]) == 2


def test_a_target_that_raises_on_trainable_data_fails_naming_check_and_example(tmp_path,
                                                                              capsys):
    path = _adapter(tmp_path)
    code = main(["check", f"{path}:Raises", "--profile", "ci", "--check", "S1"])
    text = capsys.readouterr().out
    assert code == 1
    # a target that raises on trainable data refused it: S1's finding, with what was lost
    assert "S1: the target refused a batch that has tokens to train" in text
    assert "KeyError: 'prompt'" in text and "trainable token" in text
    assert "example 0" in text and "Reproduce:" in text


def test_a_malformed_batch_is_a_configuration_error(tmp_path, capsys):
    """The specification's exit code 2 for a malformed batch: the probe batch is validated
    before any check runs, one line naming the target, the key and the shape."""
    path = _adapter(tmp_path)
    assert main(["check", f"{path}:WrongShape", "--profile", "ci", "--check", "S1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "target 'wrong-shape'" in err and "has shape" in err and "malformed batch" in err


def test_targets_lists_builtins(capsys):
    assert main(["targets"]) == 0
    text = capsys.readouterr().out
    assert "reference" in text and "textbook-seed003" in text and "mutant-" not in text
