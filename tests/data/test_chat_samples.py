"""Chat-formatted samples: the tokenizer's own template around the task prompt, the loss on the
assistant reply and its end-of-turn token only, generation prompts ending at the assistant turn
and stopping at its end of turn; a tokenizer without a template is a clear error."""

import numpy as np
import pytest

from nemo_neko.data.packing import pack_sequence
from nemo_neko.data.records import CorrectionRecord
from nemo_neko.data.samples import SampleBuilder
from nemo_neko.data.tokenizer import TextTokenizer, train_bpe_tokenizer
from nemo_neko.tasks import get_task

TEMPLATE = (  # SmolLM2-Instruct's template, default system turn included
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    words = "list all flights from boston to denver show me the fares on monday".split()
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=10)) for _ in range(300)]
    special = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|endoftext|>", "unk": "<unk>"}
    trained = train_bpe_tokenizer(texts, vocab_size=300, special_tokens=special)
    trained.chat_template = TEMPLATE
    folder = tmp_path_factory.mktemp("chat_tokenizer")
    trained.save(folder)
    return TextTokenizer.from_dir(folder)  # as a run reads it: the template from the folder


def record():
    return CorrectionRecord(
        "a1",
        "asr",
        "atis",
        "list all flights from boston",
        hypotheses=["list all flight from boston", "list of flights from boston"],
    )


def test_the_template_survives_a_save_and_load(tokenizer):
    assert tokenizer.chat_template == TEMPLATE


def test_sample_is_the_template_with_the_reply_learned_and_nothing_else(tokenizer):
    builder = SampleBuilder(tokenizer, 512, "chat")
    data = builder.build([record()], "atis")
    sample, prompt = data.sample(0).tolist(), int(data.prompt_lengths[0])
    task_prompt = get_task("asr").prompt(record())
    conversation = tokenizer.render_chat(
        [{"role": "user", "content": task_prompt}], add_generation_prompt=True
    )
    assert tokenizer.decode(sample[:prompt], skip_special_tokens=False) == conversation
    assert conversation.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert conversation.endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(sample[prompt:-1]) == "list all flights from boston"
    assert sample[-1] == tokenizer.eos_id == tokenizer._tok.token_to_id("<|im_end|>")
    assert tokenizer.bos_id not in sample[prompt:], "no BOS is added around the template"
    packed = pack_sequence([np.asarray(sample)], [prompt], [0], 600, tokenizer.pad_id)
    learned = packed.labels[packed.loss_mask > 0].tolist()
    assert learned == sample[prompt:], "the loss covers the reply and its end of turn only"


def test_system_prompt_replaces_the_template_default(tokenizer):
    builder = SampleBuilder(tokenizer, 512, "chat", system_prompt="")
    text = builder.prompt_text(record())
    assert text.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")


def test_generation_prompt_ends_at_the_assistant_turn(tokenizer):
    builder = SampleBuilder(tokenizer, 512, "chat")
    ids = builder.inference_prompt(record(), reserve=20)
    assert tokenizer.decode(ids, skip_special_tokens=False).endswith("<|im_start|>assistant\n")
    full = builder.build([record()], "atis").sample(0).tolist()
    assert full[: len(ids)] == ids, "the prompt of generation is the prompt of training"
    # the decoder stops at the tokenizer's EOS, which is the template's end of turn
    turn_end = tokenizer.encode(tokenizer.render_chat([{"role": "user", "content": "x"}]))[-2]
    assert tokenizer.eos_id == turn_end


def test_plain_stays_selectable_and_a_tokenizer_without_template_is_refused(tokenizer, tmp_path):
    plain = SampleBuilder(tokenizer, 512, "plain").build([record()], "atis").sample(0).tolist()
    assert plain[0] == tokenizer.bos_id and "<|im_start|>user" not in tokenizer.decode(
        plain, skip_special_tokens=False
    )
    bare = train_bpe_tokenizer(["some text here"] * 20, vocab_size=280)
    with pytest.raises(
        ValueError, match="prompt_format=chat needs a tokenizer with a chat template"
    ):
        SampleBuilder(bare, 512, "chat")
