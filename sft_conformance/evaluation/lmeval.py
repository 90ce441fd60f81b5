"""lm-eval, offline: the in-memory model, the task files shipped in the package, checkpoints.

* :class:`SFTHFLM` is lm-eval's Hugging Face model class with two changes that matter for chat
  models. Log-likelihood requests keep the context/continuation split where the task put it
  (stock lm-eval moves trailing whitespace of the context into the continuation, so with a ChatML
  prompt ending in ``assistant\\n`` the newline, which a correctly masked model never learned to
  predict, is scored; with a BPE that merges ``assistant\\n`` into one token, as the bundled one
  does, the model is fed an ``assistant`` token it never saw at that place instead). And every
  generation records whether it produced the end-of-turn token (lm-eval cuts generations at
  stop sequences and decodes without special tokens, so the returned text cannot say);
  :meth:`SFTHFLM.stopped` reads it back per context.
* Tasks are loaded by lm-eval's :class:`~lm_eval.tasks.TaskManager` from our own path only
  (``include_defaults=False``: indexing lm-eval's 14.7k built-in tasks costs 12-16 s), and a
  task's relative ``data_files`` are resolved against its YAML file, not the working directory.
* :func:`evaluate` runs ``simple_evaluate`` with the chat template applied the way the model was
  trained, no ``hf_evaluate`` metrics, few bootstrap iterations, samples logged.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

TOY_TASK_DIR = Path(__file__).resolve().parent.parent / "tasks"
TOY_TASKS = ("sftc_reverse", "sftc_sums")
TOY_LL_TASKS = ("sftc_reverse_ll", "sftc_sums_ll")


def _hflm_class():
    from lm_eval.models.huggingface import HFLM

    class SFTHFLM(HFLM):
        """HFLM that keeps the task's context/continuation split and records generation stops."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._stops: dict[str, bool] = {}

        def _encode_pair(self, context, continuation):
            if self.backend != "causal":
                return super()._encode_pair(context, continuation)
            whole = self.tok_encode(context + continuation)
            context_enc = self.tok_encode(context)
            if whole[:len(context_enc)] != context_enc:  # the boundary merged: fall back
                return super()._encode_pair(context, continuation)
            return context_enc, whole[len(context_enc):]

        def _model_generate(self, context, max_length, stop, **generation_kwargs):
            out = super()._model_generate(context, max_length, stop, **generation_kwargs)
            mask = generation_kwargs.get("attention_mask")
            eot = self.eot_token_id
            for row in range(context.shape[0]):
                ctx = context[row]
                if mask is not None:
                    ctx = ctx[mask[row].bool()]
                key = self.tokenizer.decode(ctx.tolist(), skip_special_tokens=False)
                gen = out[row, context.shape[1]:].tolist()
                self._stops[key] = eot in gen
            return out

        def stopped(self, context: str) -> bool | None:
            """Whether the generation for ``context`` produced the end-of-turn token."""
            if context in self._stops:
                return self._stops[context]
            ids = self.tok_encode(context)
            return self._stops.get(self.tokenizer.decode(ids, skip_special_tokens=False))

    return SFTHFLM


def make_lm(model, tokenizer, *, batch_size: int = 64, max_length: int | None = None):
    """lm-eval's HF model class around an in-memory model and our tokenizer (puts it in eval)."""
    cls = _hflm_class()
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", 2048)
    return cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
               max_length=max_length, device=str(next(model.parameters()).device))


def task_manager(include_path: str | Path | Sequence | None = None, *,
                 include_defaults: bool = False):
    """A TaskManager over our task files (and the user's ``include_path``), offline and fast."""
    from lm_eval.tasks import TaskManager

    paths = [str(TOY_TASK_DIR)]
    if include_path:
        extra = [include_path] if isinstance(include_path, (str, Path)) else list(include_path)
        paths += [str(p) for p in extra]
    return TaskManager(include_path=paths, include_defaults=include_defaults)


def _resolve_data_files(value, base: Path):
    if isinstance(value, str):
        if "://" in value or Path(value).is_absolute():
            return value
        candidate = base / value
        return str(candidate) if candidate.exists() else value
    if isinstance(value, list):
        return [_resolve_data_files(v, base) for v in value]
    if isinstance(value, dict):
        return {k: _resolve_data_files(v, base) for k, v in value.items()}
    return value


def resolve_tasks(names: Sequence[str], tm) -> list:
    """Task specs for ``simple_evaluate``: a leaf task whose YAML names relative ``data_files``
    becomes its full config with those paths resolved against the YAML's folder; anything else
    (groups, tags, built-in tasks) stays a name."""
    from lm_eval.tasks._yaml_loader import load_yaml

    specs = []
    for name in names:
        entry = tm.task_index.get(name)
        if entry is None:
            raise KeyError(f"unknown lm-eval task {name!r} (searched {tm.include_path}"
                           + ("" if getattr(tm, "_include_defaults", True) else
                              " without lm-eval's built-in tasks; pass --lm-eval-defaults")
                           + ")")
        path = getattr(entry, "yaml_path", None)
        kind = str(getattr(entry, "kind", "")).lower()
        if path is None or "group" in kind or "tag" in kind:
            specs.append(name)
            continue
        cfg = copy.deepcopy(load_yaml(path, resolve_func=True))
        data_files = (cfg.get("dataset_kwargs") or {}).get("data_files")
        if data_files is None:
            specs.append(name)
            continue
        cfg["dataset_kwargs"]["data_files"] = _resolve_data_files(data_files, Path(path).parent)
        cfg.pop("tag", None)
        cfg.pop("group", None)
        specs.append(cfg)
    return specs


def evaluate(lm, tasks: Sequence[str], *, tm=None, include_path=None, limit: int | None = None,
             apply_chat_template: bool = True, bootstrap_iters: int = 0, log_samples: bool = True,
             seed: int = 0) -> dict:
    """Run lm-eval on ``lm`` (an :class:`SFTHFLM`); return ``{"results", "samples", "stops"}``.

    ``results`` maps each task to its metrics (stderr keys dropped); ``samples`` to a list of
    ``{content, answer, response, metrics...}``; for generation tasks ``stops`` to the fraction of
    generations that produced the end-of-turn token.
    """
    import logging

    from lm_eval import simple_evaluate

    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    tm = tm or task_manager(include_path)
    out = simple_evaluate(model=lm, tasks=resolve_tasks(tasks, tm), task_manager=tm, limit=limit,
                          apply_chat_template=apply_chat_template,
                          bootstrap_iters=bootstrap_iters, log_samples=log_samples,
                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                          fewshot_random_seed=seed)
    results = {}
    for task, metrics in out["results"].items():
        results[task] = {k.split(",")[0]: float(v) for k, v in metrics.items()
                         if _is_number(v) and "stderr" not in k and k != "sample_len"}
    samples, stops = {}, {}
    for task, rows in (out.get("samples") or {}).items():
        kept = []
        for row in rows:
            doc = row.get("doc", {})
            resp = row.get("filtered_resps") or row.get("resps")
            context = row["arguments"][0][0] if row.get("arguments") else None
            item = {"content": doc.get("content"), "answer": doc.get("answer"),
                    "response": resp[0] if isinstance(resp, list) and resp else resp}
            for m in ("exact_match", "acc"):
                if m in row:
                    item[m] = float(row[m])
            if "exact_match" in item and context is not None and hasattr(lm, "stopped"):
                item["stopped"] = lm.stopped(context)
            kept.append(item)
        samples[task] = kept
        flags = [s["stopped"] for s in kept if s.get("stopped") is not None]
        if flags:
            stops[task] = sum(flags) / len(flags)
    return {"results": results, "samples": samples, "stops": stops,
            "versions": out.get("versions", {}), "config": _jsonable(out.get("config", {}))}


def _is_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, (str, bool))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def agreement(in_training: Sequence[dict], lm_eval_samples: Sequence[dict]) -> dict:
    """Compare the in-training greedy evaluation with lm-eval's, sample for sample."""
    by_content = {s["content"]: s for s in lm_eval_samples}
    same_match = same_stop = n = 0
    disagree = []
    for s in in_training:
        other = by_content.get(s["content"])
        if other is None:
            continue
        n += 1
        m_ok = s["exact_match"] == other.get("exact_match")
        s_ok = other.get("stopped") is None or s["stopped"] == other["stopped"]
        same_match += m_ok
        same_stop += s_ok
        if not (m_ok and s_ok):
            disagree.append({"content": s["content"], "ours": s["generation"],
                             "lm_eval": other.get("response")})
    return {"n": n, "exact_match_agree": same_match, "stop_agree": same_stop,
            "all_agree": n > 0 and same_match == n and same_stop == n,
            "disagreements": disagree[:10]}


def load_checkpoint(path: str | Path, *, dtype: str = "auto", device: str | None = None):
    """A local HF checkpoint and its tokenizer, without network."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {str(path)!r} is not a directory")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def evaluate_checkpoint(path, tasks: Sequence[str], *, tm=None, include_path=None,
                        batch_size: int = 16, limit: int | None = None,
                        apply_chat_template: bool | None = None, max_length: int | None = None,
                        device: str | None = None) -> dict:
    """lm-eval on a local checkpoint; the chat template is applied when the tokenizer has one."""
    model, tokenizer = load_checkpoint(path, device=device)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if apply_chat_template is None:
        apply_chat_template = bool(getattr(tokenizer, "chat_template", None))
    lm = make_lm(model, tokenizer, batch_size=batch_size, max_length=max_length)
    out = evaluate(lm, tasks, tm=tm, include_path=include_path, limit=limit,
                   apply_chat_template=apply_chat_template)
    out["checkpoint"] = str(path)
    out["apply_chat_template"] = apply_chat_template
    return out


def deltas(before: dict, after: dict) -> dict:
    """Per task and metric: before, after, after - before (forgetting shows as negative)."""
    table = {}
    for task in sorted(set(before["results"]) | set(after["results"])):
        b, a = before["results"].get(task, {}), after["results"].get(task, {})
        for metric in sorted(set(b) | set(a)):
            if metric in b and metric in a:
                table.setdefault(task, {})[metric] = {
                    "before": b[metric], "after": a[metric], "delta": a[metric] - b[metric]}
    for task in sorted(set(before.get("stops", {})) & set(after.get("stops", {}))):
        table.setdefault(task, {})["stop"] = {
            "before": before["stops"][task], "after": after["stops"][task],
            "delta": after["stops"][task] - before["stops"][task]}
    return table
