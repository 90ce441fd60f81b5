"""Reading a target's batch back as examples: which rows and positions hold which conversation,
and what each token's label is in one canonical convention.

The canonical view of an example of ``n`` tokens is a list ``label[t]`` for ``t`` in ``0..n-1``:
the target the loss sets for token ``t`` (that is, the label predicting token ``t`` from the
logits at ``t - 1``), or -100. It is the Hugging Face convention restricted to one document, so
the reference's ``labels_for(example)`` is directly comparable. A shifted target's label at
``t - 1`` becomes the canonical label of ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class Segment:
    """The real tokens of one document: ``row``, positions ``[start, stop)``."""

    row: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def real_positions(batch: dict, row: int, expected_len: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` of the real tokens of a non-packed row (left or right padding)."""
    T = batch["input_ids"].shape[1]
    mask = batch.get("attention_mask")
    if mask is not None:
        idx = torch.nonzero(mask[row], as_tuple=False).flatten()
        if idx.numel() == 0:
            return 0, 0
        return int(idx[0]), int(idx[-1]) + 1
    return 0, min(T, expected_len if expected_len is not None else T)


def _document_starts(batch: dict, r: int) -> list[bool] | None:
    """Whether each position of row ``r`` starts a document (its document id changes, its
    position id does not grow); None without document ids and position ids."""
    if "document_ids" in batch and isinstance(batch["document_ids"], torch.Tensor):
        keys = batch["document_ids"][r].tolist()
        return [t == 0 or keys[t] != keys[t - 1] for t in range(len(keys))]
    if "position_ids" in batch:
        pos = batch["position_ids"][r].tolist()
        return [t == 0 or pos[t] <= pos[t - 1] for t in range(len(pos))]
    return None


def document_segments(batch: dict) -> list[Segment]:
    """Documents of a packed batch, split where position ids restart (or by document_ids)."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    segs = []
    for r in range(ids.shape[0]):
        real = mask[r].bool() if mask is not None else torch.ones(ids.shape[1], dtype=torch.bool)
        restart = _document_starts(batch, r) or [t == 0 for t in range(ids.shape[1])]
        start = None
        for t in range(ids.shape[1] + 1):
            boundary = t == ids.shape[1] or restart[t] or not bool(real[t])
            if boundary and start is not None:
                segs.append(Segment(r, start, t))
                start = None
            if t < ids.shape[1] and bool(real[t]) and start is None:
                start = t
    return segs


def canonical_labels(batch: dict, seg: Segment, *, labels_shifted: bool) -> list[int]:
    """The canonical label of every token of ``seg`` (see the module docstring)."""
    labels = batch["labels"][seg.row].tolist()
    out = []
    for t in range(seg.start, seg.stop):
        if labels_shifted:
            out.append(labels[t - 1] if t - 1 >= 0 else IGNORE_INDEX)
        else:
            out.append(labels[t])
    if seg.start == 0 and out:
        out[0] = IGNORE_INDEX  # no logits precede the first position of a row
    return out


def trained_padding(batch: dict, segments: list[Segment], *, labels_shifted: bool
                    ) -> list[tuple[int, int]]:
    """(row, label index) of labels that train a token outside every real segment (padding)."""
    B, T = batch["labels"].shape
    inside = torch.zeros(B, T, dtype=torch.bool)
    for s in segments:
        inside[s.row, s.start:s.stop] = True
    hits = []
    labels = batch["labels"]
    for r in range(B):
        for i in range(T):
            if int(labels[r, i]) == IGNORE_INDEX:
                continue
            target_pos = i + 1 if labels_shifted else i
            if labels_shifted and target_pos >= T:
                hits.append((r, i))  # a target beyond the row
            elif target_pos < T and not inside[r, target_pos]:
                hits.append((r, i))
    return hits


def row_segments(batch: dict, expected_lengths: list[int]) -> list[Segment]:
    """One segment per row for a non-packed target, row i holding conversation i."""
    return [Segment(r, *real_positions(batch, r, expected_lengths[r] if r < len(
        expected_lengths) else None)) for r in range(batch["input_ids"].shape[0])]


def match_documents(batch: dict, expected_ids: list[list[int]]):
    """Match packed documents to examples by their input ids.

    Returns ``(matches, unmatched)``: ``matches[i]`` is the Segment holding example ``i`` or
    None, ``unmatched`` the segments that equal no example (pieces of split documents)."""
    segs = document_segments(batch)
    ids = batch["input_ids"]
    want = {}
    for i, e in enumerate(expected_ids):
        want.setdefault(tuple(e), []).append(i)
    matches: list[Segment | None] = [None] * len(expected_ids)
    unmatched = []
    for s in segs:
        key = tuple(ids[s.row, s.start:s.stop].tolist())
        if key in want and want[key]:
            matches[want[key].pop(0)] = s
        else:
            unmatched.append(s)
    # Rows whose boundaries cannot be read (no position_ids, no document_ids): find a document
    # as a contiguous run of its ids, so that the checks still see where it sits.
    taken = {(s.row, t) for s in matches if s is not None for t in range(s.start, s.stop)}
    for i, e in enumerate(expected_ids):
        if matches[i] is not None or not e:
            continue
        for r in range(ids.shape[0]):
            row = ids[r].tolist()
            for start in range(0, len(row) - len(e) + 1):
                if row[start:start + len(e)] == list(e) and (r, start) not in taken:
                    matches[i] = Segment(r, start, start + len(e))
                    taken.update((r, t) for t in range(start, start + len(e)))
                    break
            if matches[i] is not None:
                break
    return matches, unmatched


def _find_run(rows: list[list[int]], ids: list[int], taken: set) -> Segment | None:
    n = len(ids)
    if not n:
        return None
    first = ids[0]
    for r, row in enumerate(rows):
        for s in range(len(row) - n + 1):
            if row[s] == first and row[s:s + n] == ids and not any(
                    (r, t) in taken for t in range(s, s + n)):
                return Segment(r, s, s + n)
    return None


def _restarts(batch: dict, row: int) -> int:
    """How many times the position ids (or document ids) of ``row`` start a new document
    between two attended positions: 0 for a row that holds one document."""
    mask = batch.get("attention_mask")
    shaped = [batch.get(k) for k in ("document_ids", "position_ids")]
    if any(isinstance(x, torch.Tensor) and (x.dim() != 2 or row >= x.shape[0]) for x in shaped):
        return 0  # not one id per token and row (e.g. multimodal position ids): not read here
    if not isinstance(batch.get("document_ids"), torch.Tensor) and not isinstance(
            batch.get("position_ids"), torch.Tensor):
        return 0
    starts = _document_starts(batch, row)
    real = (mask[row].bool().tolist() if isinstance(mask, torch.Tensor) and mask.dim() == 2
            else [True] * len(starts))
    return sum(1 for t in range(1, len(starts)) if starts[t] and real[t] and real[t - 1])


def locate_examples(batch: dict, expected_ids: list[list[int]], *, pad_id: int | None,
                    droppable_tail: list[bool] | None = None,
                    splits_documents: bool = False) -> list[Segment | None]:
    """Where each example sits in the batch, found by its ids (never by row order, never by the
    attention mask): a contiguous run of the example's ids in any row, packed or not.

    ``droppable_tail[i]`` says that example ``i``'s last token is untrained template glue (the
    newline after the last end token) that a target may leave out: then the run without it
    counts. Examples found nowhere are paired, in order, with what holds no found example: the
    documents of a packed row (one whose position ids or document ids start a new document
    between attended positions), else a whole row (its extent from the attention mask, else
    without the pad tokens at either end), so the checks can still show what differs; an
    example with no such document or row gets None.

    ``splits_documents`` (a target that declares it cuts documents across rows): a packed row
    that holds a found example does not offer its first and last documents, where a document
    cut across rows lies. The head of such a document is no conversation of its own: paired
    with a conversation found nowhere, it read as that conversation with its ids cut short
    (a false S1/S2/S4/S11 failure of torchtune's split packing on qwen2.5's special strings).
    The documents between them are whole, and are offered.
    """
    rows = batch["input_ids"].tolist()
    order = sorted(range(len(expected_ids)), key=lambda i: -len(expected_ids[i]))
    taken: set = set()
    found: list[Segment | None] = [None] * len(expected_ids)
    for i in order:
        ids = list(expected_ids[i])
        seg = _find_run(rows, ids, taken)
        if seg is None and droppable_tail and droppable_tail[i] and len(ids) > 1:
            seg = _find_run(rows, ids[:-1], taken)
        if seg is not None:
            found[i] = seg
            taken.update((seg.row, t) for t in range(seg.start, seg.stop))
    used_rows = {s.row for s in found if s is not None}
    mask = batch.get("attention_mask")
    # a row whose position ids or document ids restart between attended positions is packed:
    # its documents that hold no found example are paired with the examples found nowhere,
    # one each, in order (a gap in the attention mask alone, e.g. a pad id inside a message,
    # splits no document; pad tokens that restart their positions are no document); a row
    # that is not packed and holds no found example is paired whole
    packed = {r for r in range(len(rows)) if _restarts(batch, r) > 0}
    documents: dict[int, list[Segment]] = {}
    if packed:
        claimed = [s for s in found if s is not None]
        real = [d for d in document_segments(batch)
                if d.row in packed and any(t != pad_id for t in rows[d.row][d.start:d.stop])]
        # a document cut across rows sits at the end of one row and the start of the next
        edges: dict[int, set] = {}
        for r in {d.row for d in real}:
            starts = [d.start for d in real if d.row == r]
            edges[r] = {min(starts), max(starts)}
        for d in real:
            if (not (splits_documents and d.row in used_rows and d.start in edges[d.row])
                    and not any(c.row == d.row and c.start < d.stop and d.start < c.stop
                                for c in claimed)):
                documents.setdefault(d.row, []).append(d)
    free: list = []
    for r in range(len(rows)):
        if r in packed:
            free += documents.get(r, [])
        elif r not in used_rows:
            free.append(r)
    for i in range(len(expected_ids)):
        if found[i] is not None or not free:
            continue
        r = free.pop(0)
        if isinstance(r, Segment):
            found[i] = r
            continue
        if mask is not None and bool(mask[r].any()):
            idx = torch.nonzero(mask[r], as_tuple=False).flatten()
            start, stop = int(idx[0]), int(idx[-1]) + 1
        else:
            start, stop = 0, len(rows[r])
            while pad_id is not None and start < stop and rows[r][start] == pad_id:
                start += 1
            # trailing pads (with pad == eos, keep as many as the example may end with)
            keep = len(expected_ids[i])
            while (pad_id is not None and stop > start + keep and rows[r][stop - 1] == pad_id):
                stop -= 1
        found[i] = Segment(r, start, stop)
    return found


def packed_rows(segments: list[Segment | None]) -> list[int]:
    """Rows that hold two or more of the located examples: the batch is packed there, whether
    or not the target declares it."""
    count: dict[int, int] = {}
    for s in segments:
        if s is not None:
            count[s.row] = count.get(s.row, 0) + 1
    return sorted(r for r, c in count.items() if c > 1)
