"""HypoTranslate (GenTranslate's ST/MT N-best release) -> ``st`` / ``mt`` records.

HypoTranslate (Hu et al., "GenTranslate: Large Language Models are Generative Multilingual Speech
and Machine Translators", ACL 2024; dataset ``PeacefulData/HypoTranslate``, Apache-2.0) ships
SeamlessM4T N-best translations with their reference translation. Sources read:

* the dataset card (``huggingface.co/datasets/PeacefulData/HypoTranslate``, README.md): file
  name format, language and task conventions, ``en-x/`` and ``x-en/`` folders of ``.pt`` files;
* GenTranslate's code (``github.com/YUCHEN005/GenTranslate``): ``finetune/gentrans.py`` and
  ``inference/gentrans.py`` load each file with ``torch.load`` as a list of dicts and read
  ``input_ids``, ``labels``, ``input_ids_no_response`` and ``ground_truth`` (stripped);
* a third-party converter (``SWivid/litgpt``, ``prepare_dataset_json_from_pt.py``) that reads
  ``item["input"]`` as the N-best list and ``item["ground_truth"]`` as the target, and drops items
  whose ``ground_truth`` is empty (so the release has some).

**File type.** The release is torch pickles (``.pt``: a list of dicts of strings, lists and int
tensors; loaded here with ``torch.load(weights_only=True)``, i.e. no arbitrary code). The same
items as a JSON array (``.json``) or JSON lines (``.jsonl``) are accepted too, with the same keys
(token fields, if present, as lists of ints).

**File name.** ``[split]_[data_source]_[src]_[tgt]_[task]_[seamlessm4t_size].pt``, e.g.
``train_fleurs_en_cy_st_large.pt``; the first uploads had no size (``test_fleurs_en_fr_st.pt``).
Languages are the translation's source and target (the N-best list and the reference are both in
the target language). On speech datasets (FLEURS, CoVoST-2, MuST-C) task ``mt`` means a cascaded
ASR+MT system.

Fields of one item:

=========================  ===================================================================
``input``                  N-best translations (list of strings) -> ``hypotheses`` (stripped)
``ground_truth``           reference translation -> ``reference`` (stripped; empty is an error)
``input_ids``              LLaMA-2 token ids of GenTranslate's prompt + answer (not imported:
                           derived from ``input``/``ground_truth`` and tied to one tokenizer)
``input_ids_no_response``  the prompt's token ids (not imported, same reason)
``labels``                 training labels for ``input_ids`` (not imported, same reason)
=========================  ===================================================================

Uncertain, stated here rather than guessed silently: the card does not say the N-best order;
GenTranslate feeds it to the LLM as decoded (beam order), so it is taken as best first. The full
key set of every release file is not documented: any other key is an error naming it, unless the
caller lists it in ``ignore_fields`` (then it is dropped and counted in the report).

Task and languages come from the file name and/or the arguments. ``task=`` overrides the file
name's task (e.g. to relabel a cascaded ``mt`` file as ``st``; the file's task stays in
``meta.hypotranslate_task``); ``src_lang``/``tgt_lang`` given both ways must agree. Ids are
``<id_prefix>-<item index>`` (default prefix ``<dataset>-<file stem>``); ``meta.origin`` keeps
``<file>#<index>`` and ``meta`` the split and data source from the file name.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from nemo_neko.data.importers._common import (
    ImportReport,
    Row,
    Where,
    check_object,
    default_prefix,
    emit_records,
    read_rows,
)
from nemo_neko.data.records import CorrectionRecord, RecordError

TASKS = ("st", "mt")
TOKEN_FIELDS = ("input_ids", "input_ids_no_response", "labels")
KNOWN_FIELDS = ("input", "ground_truth", *TOKEN_FIELDS)
SPLITS = ("train", "dev", "test")


def parse_filename(path: str | os.PathLike) -> dict[str, str] | None:
    """Split a release file name into split, data_source, src_lang, tgt_lang, task, model_size.

    Returns None when the name does not follow the release's pattern.
    """
    stem = Path(path).name.split(".")[0]
    parts = stem.split("_")
    size = ""
    if parts and parts[-1] not in TASKS:
        size = parts.pop()
    if len(parts) < 5 or parts[0] not in SPLITS or parts[-1] not in TASKS:
        return None
    split, *source, src, tgt, task = parts
    return dict(
        split=split,
        data_source="_".join(source),
        src_lang=src,
        tgt_lang=tgt,
        task=task,
        model_size=size,
    )


def import_hypotranslate(
    path: str | os.PathLike,
    *,
    dataset: str,
    report: ImportReport | None = None,
    skip_invalid: bool = False,
    task: str | None = None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    id_prefix: str | None = None,
    ignore_fields: Iterable[str] = (),
) -> Iterator[CorrectionRecord]:
    """Yield one ``st``/``mt`` record per item of a HypoTranslate file.

    Args:
        path: a release ``.pt`` file, or the same items as ``.json``/``.jsonl``.
        dataset: dataset name of the records (e.g. ``"fleurs_en_fr"``).
        report: receives counts (and rejected items with ``skip_invalid``).
        skip_invalid: collect invalid items in ``report`` instead of raising.
        task: ``"st"`` or ``"mt"``; default: from the file name.
        src_lang: source language code; default: from the file name.
        tgt_lang: target language code; default: from the file name.
        id_prefix: prefix of the generated ids (default ``<dataset>-<file stem>``).
        ignore_fields: extra item keys to drop (and count) instead of rejecting.

    Raises:
        ValueError: task or languages unknown, or contradicting the file name.
        RecordError: an invalid item (unless ``skip_invalid``).
    """
    path = str(path)
    if skip_invalid and report is None:
        raise ValueError("skip_invalid=True needs an ImportReport to receive the rejected items")
    report = report if report is not None else ImportReport()
    info = parse_filename(path) or {}
    file_task = info.get("task")
    task = task or file_task
    if task not in TASKS:
        raise ValueError(
            f"{path}: task {task!r} is not a HypoTranslate task (known: {', '.join(TASKS)}); "
            "pass task= or use the release file name [split]_[source]_[src]_[tgt]_[task]_[size].pt"
        )
    langs = {}
    for name, given in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
        from_file = info.get(name)
        if given and from_file and given != from_file:
            raise ValueError(f"{path}: {name}={given!r} contradicts the file name ({from_file!r})")
        langs[name] = given or from_file
        if not langs[name]:
            raise ValueError(f"{path}: {name} unknown: pass {name}= (task {task!r} needs it)")
    ignored = tuple(ignore_fields)
    prefix = id_prefix or default_prefix(dataset, path)
    origin = Path(path).name
    file_meta = {k: info[k] for k in ("split", "data_source") if info.get(k)}
    if file_task and file_task != task:
        file_meta["hypotranslate_task"] = file_task

    def convert(item: Any, where: Where) -> CorrectionRecord:
        known = (*KNOWN_FIELDS, *ignored)
        item = check_object(
            item, where, fmt="HypoTranslate", required=("input", "ground_truth"), known=known
        )
        for name in ignored:
            if name in item:
                report.ignored_fields[name] = report.ignored_fields.get(name, 0) + 1
        hypotheses = item["input"]
        if isinstance(hypotheses, str):
            message = "must be a list of N-best strings, got one string (a rendered prompt?)"
            raise where.error("input", message)
        if not isinstance(hypotheses, list) or not all(isinstance(h, str) for h in hypotheses):
            raise where.error("input", "must be a list of strings")
        if not hypotheses:
            raise where.error("input", "empty hypothesis list")
        reference = item["ground_truth"]
        if not isinstance(reference, str):
            raise where.error("ground_truth", f"must be a string, got {type(reference).__name__}")
        if not reference.strip():
            raise where.error("ground_truth", "empty ground truth")
        return CorrectionRecord(
            id=f"{prefix}-{where.pos - 1:06d}",
            task=task,
            dataset=dataset,
            hypotheses=[h.strip() for h in hypotheses],
            reference=reference.strip(),
            src_lang=langs["src_lang"],
            tgt_lang=langs["tgt_lang"],
            meta={"origin": f"{origin}#{where.pos - 1}", **file_meta},
        )

    if Path(path).name.endswith(".pt"):
        unit, rows = "item", _torch_rows(path)
    else:
        unit, rows = read_rows(path)
    return emit_records(
        rows, convert, path=path, unit=unit, report=report, skip_invalid=skip_invalid
    )


def _torch_rows(path: str) -> Iterator[Row]:
    import pickle

    import torch

    try:
        items = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecordError(path, 1, None, f"not a loadable torch pickle: {first}") from None
    if not isinstance(items, list):
        raise RecordError(path, 1, None, f"expected a list of items, got {type(items).__name__}")
    yield from enumerate(items, start=1)
