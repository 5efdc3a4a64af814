"""``ocr``: OCR output text -> corrected text, scored by WER."""

from nemo_neko.tasks.base import Task
from nemo_neko.tasks.registry import register_task


@register_task
class OCRTask(Task):
    name = "ocr"
    metric = "wer"
    input_field = "source"

    def prompt(self, record, inputs=None):
        (text,) = self.inputs(record) if inputs is None else inputs
        return (
            "The following text is the output of an Optical Character Recognition system. As part "
            "of a post-OCR correction task, please correct the recognition errors in the text to "
            f'generate the most accurate transcription of the document.\n"{text}"'
        )
