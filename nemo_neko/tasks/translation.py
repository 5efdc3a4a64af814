"""``st`` and ``mt``: N-best translations (in the target language) -> translation, scored by BLEU."""

from nemo_neko.tasks.base import Task, language_name
from nemo_neko.tasks.registry import register_task


class _TranslationTask(Task):
    metric = "bleu"
    input_field = "hypotheses"
    needs_languages = True
    system: str
    what: str

    def prompt(self, record, inputs=None):
        hypotheses = self.inputs(record) if inputs is None else inputs
        return (
            f"The following text contains {len(hypotheses)}-best hypotheses from a {self.system} "
            f"system. As part of a {self.system.lower()} task, please perform error correction on "
            f"the hypotheses to generate the most accurate {language_name(record.tgt_lang)} "
            f"translation of the {self.what} {language_name(record.src_lang)} text.\n{hypotheses!r}"
        )


@register_task
class SpeechTranslationTask(_TranslationTask):
    name = "st"
    system = "Speech Translation"
    what = "spoken"


@register_task
class MachineTranslationTask(_TranslationTask):
    name = "mt"
    system = "Machine Translation"
    what = "given"
