"""Textual error correction: ``tec_grammar`` and ``tec_coherence`` (sentence -> sentence, WER).

The paper's Figure 3 swaps the two labels; each task here uses the instruction that fits it.
"""

from nemo_neko.tasks.base import Task
from nemo_neko.tasks.registry import register_task


class _TextEditTask(Task):
    metric = "wer"
    input_field = "source"
    instruction: str

    def prompt(self, record, inputs=None):
        (text,) = self.inputs(record) if inputs is None else inputs
        return f"{self.instruction}: {text}"


@register_task
class GrammarCorrectionTask(_TextEditTask):
    name = "tec_grammar"
    instruction = "Remove all grammatical errors from this text"


@register_task
class CoherenceTask(_TextEditTask):
    name = "tec_coherence"
    instruction = "Fix coherence in this sentence"
