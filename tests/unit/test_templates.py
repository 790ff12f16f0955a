from __future__ import annotations

from pathlib import Path

import pytest

from services.dispatch.adapters.templates import TemplateStore
from services.dispatch.errors import TemplateError

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def write(folder: Path, template_id: str, **parts: str) -> None:
    (folder / template_id).mkdir(parents=True)
    for name, body in parts.items():
        (folder / template_id / f"{name}.liquid").write_text(body)


def test_welcome_template_renders_with_a_name() -> None:
    rendered = TemplateStore(REPO_TEMPLATES).render(
        "welcome-1", "email", {"customer": {"first_name": "Ana"}, "event": {}, "message": {}}
    )
    assert rendered.subject == "Welcome, Ana!"
    assert "Hi Ana," in rendered.text
    assert rendered.html is not None and "<h1>Welcome, Ana!</h1>" in rendered.html


def test_default_filter_covers_a_missing_trait() -> None:
    rendered = TemplateStore(REPO_TEMPLATES).render(
        "welcome-1", "email", {"customer": {}, "event": {}, "message": {}}
    )
    assert rendered.subject == "Welcome, friend!"


def test_undefined_variable_is_an_error_not_a_blank(tmp_path: Path) -> None:
    write(tmp_path, "t", subject="Hi {{ customer.first_name }}", text="x")
    with pytest.raises(TemplateError, match="first_name is undefined"):
        TemplateStore(tmp_path).render("t", "email", {"customer": {}})


def test_html_is_escaped_but_text_is_not(tmp_path: Path) -> None:
    write(tmp_path, "t", subject="{{ n }}", html="<p>{{ n }}</p>", text="{{ n }}")
    rendered = TemplateStore(tmp_path).render("t", "email", {"n": "<b>Ana & Bo</b>"})
    assert rendered.html == "<p>&lt;b&gt;Ana &amp; Bo&lt;/b&gt;</p>"
    assert rendered.text == "<b>Ana & Bo</b>"


def test_missing_template_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"subject\.liquid is missing"):
        TemplateStore(tmp_path).render("nope", "email", {})


def test_sms_template(tmp_path: Path) -> None:
    write(tmp_path, "s", sms="Hi {{ customer.first_name }}, 10% off today")
    rendered = TemplateStore(tmp_path).render("s", "sms", {"customer": {"first_name": "Bo"}})
    assert rendered.text == "Hi Bo, 10% off today"
    assert rendered.subject is None
