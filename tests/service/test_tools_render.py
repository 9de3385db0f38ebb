"""Tools and tool-call history reach the prompt: through a template's own ``tools`` support, or
as a generic system prompt and plain text for a template without it (SmolLM2's ChatML)."""

from __future__ import annotations

import json

from llamahomed.service.chat_template import ChatTemplate
from llamahomed.service.tools import Tool, ToolCall, ToolChoice, ToolSet, render_prompt, syntax_of
from tests.fixtures.tiny_gguf import DEFAULT_CHAT_TEMPLATE

# A small Hermes-style template with tool support of its own (the shape of Qwen 2.5's).
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{%- endfor %}\n</tools>\n"
    "Answer calls as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant\n"
    "{{- message.content or '' }}"
    "{%- for call in message.tool_calls %}\n<tool_call>\n"
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}"
    "\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n"
    "{{- message.content }}\n</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}")

WEATHER = Tool("get_weather", "Current weather in a city",
               {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
CALL = ToolCall("get_weather", {"city": "Paris"}, "call_1")
HISTORY = [{"role": "user", "content": "Weather in Paris?"},
           {"role": "assistant", "content": "", "tool_calls": [CALL]},
           {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_1"}]


def test_a_template_with_tool_support_gets_the_tools_and_the_calls_in_its_own_shape() -> None:
    prompt = render_prompt(ChatTemplate(HERMES_TEMPLATE), HISTORY, ToolSet((WEATHER,)))
    # Jinja's tojson sorts keys; the template's own markup (trim_blocks eats the newlines)
    assert json.dumps(WEATHER.schema_for_prompt(), sort_keys=True) in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in prompt
    assert '<|im_start|>user\n<tool_response>{"temp": 21}\n</tool_response>' in prompt
    assert prompt.endswith("<|im_start|>assistant")
    assert "You can call functions" not in prompt  # no generic prompt on top of the template's


def test_tool_choice_none_shows_no_tools_but_keeps_the_history() -> None:
    tools = ToolSet((WEATHER,), ToolChoice("none"))
    native = render_prompt(ChatTemplate(HERMES_TEMPLATE), HISTORY, tools)
    assert "<tools>" not in native and '"city": "Paris"' in native
    generic = render_prompt(ChatTemplate(DEFAULT_CHAT_TEMPLATE), HISTORY, tools)
    assert "<tools>" not in generic and "<tool_response>" in generic


def test_a_template_without_tools_gets_a_system_prompt_and_the_history_as_text() -> None:
    tools = ToolSet((WEATHER,), ToolChoice("required"))
    messages = [{"role": "system", "content": "Be brief."}, *HISTORY,
                {"role": "tool", "content": "second result", "tool_call_id": "call_1"}]
    prompt = render_prompt(ChatTemplate(DEFAULT_CHAT_TEMPLATE), messages, tools)
    system = prompt.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nBe brief.\n\nYou can call functions")
    assert json.dumps(WEATHER.schema_for_prompt()) in system
    assert "Call one of the functions now." in system
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
            '{"city": "Paris"}}\n</tool_call><|im_end|>') in prompt
    # both results in one user turn, after the call
    assert ('<|im_start|>user\n<tool_response>\n{"temp": 21}\n</tool_response>\n'
            '<tool_response>\nsecond result\n</tool_response><|im_end|>') in prompt
    assert "<|im_start|>tool" not in prompt


def test_a_named_choice_is_said_in_the_generic_prompt() -> None:
    tools = ToolSet((WEATHER,), ToolChoice("named", "get_weather"))
    prompt = render_prompt(ChatTemplate(DEFAULT_CHAT_TEMPLATE), HISTORY[:1], tools)
    assert prompt.startswith("<|im_start|>system\nYou can call functions")
    assert "Call the function get_weather now." in prompt


def test_the_call_syntax_follows_the_template() -> None:
    assert syntax_of(HERMES_TEMPLATE) == "hermes"
    assert syntax_of(DEFAULT_CHAT_TEMPLATE) == "hermes"
    assert syntax_of("{% if tools %}[AVAILABLE_TOOLS]{% endif %}[TOOL_CALLS]") == "mistral"
    assert syntax_of("{% if tools %}{{ 'ipython' }}{% endif %}<|python_tag|>") == "llama3"


def test_mistral_templates_get_call_ids_of_nine_letters_or_digits() -> None:
    mistral = ("{% for m in messages %}{% if m.tool_calls %}{% for c in m.tool_calls %}"
               "{% if c.id | length != 9 %}{{ raise_exception('ids of length 9') }}{% endif %}"
               "[TOOL_CALLS]{{ c.id }}{% endfor %}{% elif m.role == 'tool' %}"
               "[TOOL_RESULTS]{{ m.tool_call_id }}{% else %}{{ m.content }}{% endif %}{% endfor %}"
               "{% if tools %}[AVAILABLE_TOOLS]{% endif %}")
    prompt = render_prompt(ChatTemplate(mistral), HISTORY, ToolSet((WEATHER,)))
    shown = prompt.split("[TOOL_CALLS]")[1].split("[TOOL_RESULTS]")
    assert len(shown[0]) == 9 and shown[0].isalnum() and shown[1].startswith(shown[0])
