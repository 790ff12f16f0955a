"""Templates checked before they are used: the discount pools a template draws from (found by
static analysis), syntax errors and strict rendering errors located by part, line and variable,
and the rules of parts and samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.dispatch.adapters.templates import TemplateStore, compile_template
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    MissingPart,
    RenderFailed,
    UndefinedVariable,
)
from services.dispatch.domain.templates import (
    default_sample,
    merge,
    part_problems,
    preview_code,
)
from services.dispatch.errors import TemplateError


def email(**parts: str) -> dict[str, str]:
    return {"subject": "Hi", "text": "Hello", **parts}


# ── Pools ─────────────────────────────────────────────────────────────────────────────────────


def test_pools_are_found_in_every_part() -> None:
    template = compile_template(
        "promo",
        "email",
        email(
            subject="{{ codes.welcome10 }} inside",
            html="<b>{{ codes.welcome10 | upcase }}</b>"
            "{% if x %}{{ codes['spring-sale'] }}{% endif %}",
            text="{% assign c = codes.vip_2 %}Code: {{ c }}",
        ),
        version=1,
    )
    assert template.pools == {"welcome10", "spring-sale", "vip_2"}


def test_a_template_without_codes_draws_none() -> None:
    template = compile_template("t", "email", email(text="{{ customer.id }}"), version=1)
    assert template.pools == frozenset()


def test_a_local_variable_named_codes_is_not_a_pool() -> None:
    template = compile_template(
        "t", "sms", {"sms": "{% assign codes = 'x' %}{{ codes.size }}"}, version=1
    )
    assert template.pools == frozenset()


def test_parts_of_another_channel_are_not_read() -> None:
    template = compile_template("t", "sms", {"sms": "hi", "text": "{{ codes.a }}"}, version=1)
    assert template.pools == frozenset()


@pytest.mark.parametrize(
    ("source", "line"),
    [
        ("Hello\n{{ codes[name] }}", 2),
        ("{% for c in codes %}{{ c }}{% endfor %}", 1),
        ("x\ny\n{{ codes.WELCOME }}", 3),
        ("{{ codes }}", 1),
    ],
)
def test_codes_must_name_their_pool(source: str, line: int) -> None:
    with pytest.raises(InvalidTemplate, match=r"codes\.<pool>") as caught:
        compile_template("t", "email", email(html=source), version=1)
    assert (caught.value.part, caught.value.line) == ("html", line)


# ── Syntax ────────────────────────────────────────────────────────────────────────────────────


def test_a_syntax_error_names_the_part_and_the_line() -> None:
    with pytest.raises(InvalidTemplate) as caught:
        compile_template("t", "email", email(text="Hello\nthere {% for %}"), version=2)
    error = caught.value
    assert (error.part, error.line, error.column) == ("text", 2, 10)
    assert "missing expression" in error.problem
    assert str(error).startswith("template t v2 text: missing expression (line 2")


def test_an_unknown_filter_is_refused_before_any_render() -> None:
    with pytest.raises(InvalidTemplate, match="unknown filter 'shout'") as caught:
        compile_template("t", "email", email(subject="Hi\n{{ 'a' | upcase | shout }}"), version=1)
    assert (caught.value.part, caught.value.line) == ("subject", 2)


@pytest.mark.parametrize("tag", ["include", "render"])
def test_partials_are_refused(tag: str) -> None:
    with pytest.raises(InvalidTemplate, match=f"unexpected tag '{tag}'"):
        compile_template("t", "email", email(html=f"{{% {tag} 'footer' %}}"), version=1)


# ── Strict rendering ──────────────────────────────────────────────────────────────────────────


def test_an_undefined_variable_names_itself_its_part_and_its_line() -> None:
    template = compile_template(
        "t", "email", email(html="<p>Hi</p>\n<p>{{ customer.first_name }}</p>"), version=3
    )
    with pytest.raises(UndefinedVariable) as caught:
        template.render({"customer": {"id": "c1"}})
    error = caught.value
    assert (error.variable, error.part, error.line) == ("customer.first_name", "html", 2)
    assert "template t v3 html: customer.first_name is undefined" in str(error)


def test_a_top_level_undefined_variable_is_named_without_quotes() -> None:
    template = compile_template("t", "sms", {"sms": "{{ coupon }}"}, version=1)
    with pytest.raises(UndefinedVariable) as caught:
        template.render({})
    assert caught.value.variable == "coupon"


def test_a_condition_on_a_missing_trait_is_an_error_but_default_is_not() -> None:
    strict = compile_template(
        "t", "sms", {"sms": "{% if customer.vip %}VIP{% endif %}x"}, version=1
    )
    with pytest.raises(UndefinedVariable, match=r"customer\.vip"):
        strict.render({"customer": {}})
    lenient = compile_template(
        "t",
        "sms",
        {"sms": "{% assign vip = customer.vip | default: false %}{% if vip %}VIP {% endif %}Hi"},
        version=1,
    )
    assert lenient.render({"customer": {}}).text == "Hi"
    assert lenient.render({"customer": {"vip": True}}).text == "VIP Hi"


def test_a_failing_filter_is_a_render_error_with_its_line() -> None:
    template = compile_template("t", "sms", {"sms": "a\n{{ 10 | divided_by: 0 }}"}, version=1)
    with pytest.raises(RenderFailed) as caught:
        template.render({})
    assert not isinstance(caught.value, UndefinedVariable)
    assert (caught.value.part, caught.value.line) == ("sms", 2)


def test_runaway_loops_are_stopped() -> None:
    template = compile_template(
        "t",
        "sms",
        {"sms": "{% for i in (1..1000) %}{% for j in (1..1000) %}x{% endfor %}{% endfor %}"},
        version=1,
    )
    with pytest.raises(RenderFailed, match="loop iteration limit"):
        template.render({})


def test_html_is_escaped_and_the_subject_is_one_line() -> None:
    template = compile_template(
        "t",
        "email",
        {"subject": "Hello\n{{ n }}\r\n!", "html": "<p>{{ n }}</p>", "text": "{{ n }}"},
        version=1,
    )
    rendered = template.render({"n": "<b>Bo</b>"})
    assert rendered.subject == "Hello <b>Bo</b> !"
    assert rendered.html == "<p>&lt;b&gt;Bo&lt;/b&gt;</p>"
    assert rendered.text == "<b>Bo</b>"


def test_a_subject_that_renders_empty_is_a_missing_part() -> None:
    template = compile_template(
        "t", "email", {"subject": "{{ customer.x | default: '' }}", "text": "x"}, version=4
    )
    with pytest.raises(MissingPart, match="subject is missing or renders empty"):
        template.render({"customer": {}})


def test_every_error_is_a_template_error_the_dispatcher_catches() -> None:
    for error in (InvalidTemplate, RenderFailed, UndefinedVariable, MissingPart):
        assert issubclass(error, TemplateError)


def test_file_templates_carry_their_pools(tmp_path: Path) -> None:
    (tmp_path / "promo").mkdir()
    (tmp_path / "promo" / "subject.liquid").write_text("For you")
    (tmp_path / "promo" / "text.liquid").write_text("Code {{ codes.spring }}")
    store = TemplateStore(tmp_path)
    template = store.load("promo", "email")
    assert template is not None
    assert (template.version, template.from_file, set(template.pools)) == (0, True, {"spring"})
    assert store.load("promo", "sms") is None
    assert store.load("../promo", "email") is None
    assert store.templates() == [("promo", "email")]
    rendered = store.render("promo", "email", {"codes": {"spring": "S-1"}})
    assert rendered.text == "Code S-1"


# ── Parts and samples ─────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("channel", "parts", "expected"),
    [
        ("email", {"subject": "s", "text": "t"}, []),
        ("email", {"subject": "s", "html": "h"}, []),
        ("email", {"text": "t"}, [("subject", "an email template needs a subject")]),
        (
            "email",
            {"subject": "s", "text": "  "},
            [("text", "an email template needs a text part, an html part or both")],
        ),
        ("sms", {"sms": "hi"}, []),
        (
            "sms",
            {"subject": "s"},
            [
                ("subject", "not a part of an sms template (use sms)"),
                ("sms", "an sms template needs an sms part"),
            ],
        ),
        ("sms", {"sms": "x" * 5000}, [("sms", "longer than 4096 characters")]),
    ],
)
def test_required_parts(
    channel: Any, parts: dict[str, str], expected: list[tuple[str, str]]
) -> None:
    assert part_problems(channel, parts) == expected


def test_a_sample_merges_over_the_default_key_by_key() -> None:
    sample = merge(
        default_sample("email"),
        {"customer": {"first_name": "Ana"}, "event": {"properties": {"total": "9.90"}}},
    )
    assert sample["customer"] == {"id": "c_sample", "email": "ana@example.com", "first_name": "Ana"}
    assert sample["event"]["properties"] == {"total": "9.90"}
    assert sample["event"]["type"] == "sample"
    assert "phone" in default_sample("sms")["customer"]
    assert "first_name" not in default_sample("email")["customer"]


def test_preview_codes_are_visibly_not_real() -> None:
    assert preview_code("welcome10") == "PREVIEW-WELCOME10"
