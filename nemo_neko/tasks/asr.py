"""``asr``: N-best speech-recognition hypotheses -> transcript, scored by WER."""

from nemo_neko.tasks.base import Task
from nemo_neko.tasks.registry import register_task


@register_task
class ASRTask(Task):
    name = "asr"
    metric = "wer"
    input_field = "hypotheses"

    def prompt(self, record, inputs=None):
        hypotheses = self.inputs(record) if inputs is None else inputs
        return (
            f"The following text contains {len(hypotheses)}-best hypotheses from an Automatic "
            "Speech Recognition system. As part of a speech recognition task, please perform error "
            "correction on the hypotheses to generate the most accurate transcription of the "
            f"spoken text.\n{hypotheses!r}"
        )
