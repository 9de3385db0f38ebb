"""Chat templates from GGUF files render in Jinja's immutable sandbox, like Hugging Face's."""

from __future__ import annotations

import time

import pytest

from llamahomed.service.chat_template import ChatTemplate, ChatTemplateError
from llamahomed.core.errors import LlamaHomeError

GEMMA_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
MESSAGES = [{"role": "user", "content": "hi "}, {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "how are you?"}]


def test_a_gemma_style_template_renders_and_drops_the_bos_the_tokenizer_adds() -> None:
    template = ChatTemplate(GEMMA_LIKE, bos_token="<bos>", eos_token="<eos>")
    assert template.render(MESSAGES) == (
        "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\nhello<end_of_turn>\n"
        "<start_of_turn>user\nhow are you?<end_of_turn>\n<start_of_turn>model\n")
    keep = ChatTemplate(GEMMA_LIKE, bos_token="<bos>", strip_bos=False)
    assert keep.render(MESSAGES[:1], add_generation_prompt=False) == (
        "<bos><start_of_turn>user\nhi<end_of_turn>\n")


def test_raise_exception_in_the_template_is_a_400_about_the_messages() -> None:
    template = ChatTemplate(GEMMA_LIKE, bos_token="<bos>")
    with pytest.raises(ChatTemplateError) as info:
        template.render([{"role": "assistant", "content": "first"}])
    assert info.value.status == 400 and info.value.code == "invalid_request"
    assert "must alternate" in info.value.message
    assert info.value.details["errors"][0]["field"] == "messages"


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.append({'role': 'x'}) }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_the_sandbox_refuses_python_internals_and_mutation(source: str) -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate(source).render(MESSAGES)


def test_a_template_that_does_not_compile_is_a_server_error() -> None:
    with pytest.raises(LlamaHomeError) as info:
        ChatTemplate("{% for m in messages %}")
    assert info.value.status == 500 and "does not compile" in info.value.message


def test_strftime_now_and_loop_controls_are_available() -> None:
    source = ("{{ strftime_now('%Y') }}|{% for m in messages %}{% if loop.index > 1 %}{% break %}"
              "{% endif %}{{ m.content }}{% endfor %}")
    assert ChatTemplate(source).render(MESSAGES) == f"{time.strftime('%Y')}|hi "
