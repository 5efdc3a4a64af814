"""Each task renders its own prompt (paper Figure 3 wording) and names its metric."""

import pytest

from nemo_neko.data.records import CorrectionRecord
from nemo_neko.tasks import Task, get_task, known_tasks, language_name, register_task

ASR_INSTRUCTION = (
    "The following text contains 3-best hypotheses from an Automatic Speech Recognition system. "
    "As part of a speech recognition task, please perform error correction on the hypotheses to "
    "generate the most accurate transcription of the spoken text."
)


def test_asr_prompt_is_the_paper_instruction_and_the_python_list():
    record = CorrectionRecord(
        id="1",
        task="asr",
        dataset="ls",
        reference="it's fine",
        hypotheses=["it's fine", "its fine", "it is fine"],
    )
    task = get_task("asr")
    assert (
        task.prompt(record) == ASR_INSTRUCTION + "\n" + "[\"it's fine\", 'its fine', 'it is fine']"
    )
    assert task.metric == "wer" and task.baseline(record) == "it's fine"
    # the number of hypotheses follows the record (or the truncated list given)
    assert task.prompt(record, ["a"]).startswith("The following text contains 1-best hypotheses")


def test_translation_prompts_name_the_languages():
    record = CorrectionRecord(
        id="1",
        task="st",
        dataset="covost2",
        reference="Guten Tag",
        hypotheses=["Guten Tag", "Gut Tag"],
        src_lang="en",
        tgt_lang="de",
    )
    st = get_task("st").prompt(record)
    assert "2-best hypotheses from a Speech Translation system" in st
    assert "most accurate German translation of the spoken English text." in st
    mt = get_task("mt").prompt(
        CorrectionRecord(**{**record.__dict__, "task": "mt", "src_lang": "zh", "tgt_lang": "en"})
    )
    assert (
        "Machine Translation system" in mt and "English translation of the given Chinese text" in mt
    )
    assert get_task("st").metric == get_task("mt").metric == "bleu"
    assert language_name("pt-BR") == "Portuguese" and language_name("xx") == "xx"


def test_source_tasks_quote_or_prefix_their_text():
    ocr = CorrectionRecord(
        id="1", task="ocr", dataset="p", source="Tbe qnick fox", reference="The quick fox"
    )
    assert get_task("ocr").prompt(ocr).endswith('\n"Tbe qnick fox"')
    assert get_task("ocr").baseline(ocr) == "Tbe qnick fox"
    gec = CorrectionRecord(
        id="2", task="tec_grammar", dataset="c", source="He go home.", reference="He goes home."
    )
    assert (
        get_task("tec_grammar").prompt(gec)
        == "Remove all grammatical errors from this text: He go home."
    )
    coh = CorrectionRecord(
        id="3", task="tec_coherence", dataset="c", source="A. B.", reference="A, so B."
    )
    assert get_task("tec_coherence").prompt(coh) == "Fix coherence in this sentence: A. B."
    assert {get_task(n).metric for n in ("ocr", "tec_grammar", "tec_coherence")} == {"wer"}


def test_registry():
    assert known_tasks() == ["asr", "mt", "ocr", "st", "tec_coherence", "tec_grammar"]
    with pytest.raises(KeyError, match="unknown task 'nope' \\(known tasks: asr"):
        get_task("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_task(type(get_task("asr")))

    class BadMetric(Task):
        name, metric, input_field = "x_bad", "cer", "source"

    with pytest.raises(ValueError, match="metric must be 'wer' or 'bleu'"):
        register_task(BadMetric)
