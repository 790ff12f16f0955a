from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from liquid import Node

from services.dispatch.adapters.templates import TemplateStore, compile_template
from services.dispatch.domain.template_errors import (
    InvalidTemplate,
    RenderFailed,
    UndefinedVariable,
)
from services.dispatch.domain.templates import default_sample, merge
from services.dispatch.errors import TemplateError

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


def write(folder: Path, template_id: str, **parts: str) -> None:
    (folder / template_id).mkdir(parents=True)
    for name, body in parts.items():
        (folder / template_id / f"{name}.liquid").write_text(body)


LINKS = {
    "unsubscribe_url": "https://mail.shop.example/u/v1.cGF5bG9hZA.bWFj",
    "preferences_url": "https://mail.shop.example/preferences/v1.cGF5bG9hZA.bWFj",
}
"""What every message dispatch renders has (docs/dispatch.md, unsubscribe)."""


def test_welcome_template_renders_with_a_name() -> None:
    rendered = TemplateStore(REPO_TEMPLATES).render(
        "welcome-1", "email", {"customer": {"first_name": "Ana"}, "event": {}, **LINKS}
    )
    assert rendered.subject == "Welcome, Ana!"
    assert "Hi Ana," in rendered.text
    assert rendered.html is not None and "<h1>Welcome, Ana!</h1>" in rendered.html


def test_default_filter_covers_a_missing_trait() -> None:
    rendered = TemplateStore(REPO_TEMPLATES).render(
        "welcome-1", "email", {"customer": {}, "event": {}, **LINKS}
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


# ── The plain-output shortcut renders what python-liquid renders ─────────────────────────────

_OUTPUTS = """\
[{{ customer.first_name }}][{{ customer.first_name | default: "friend" }}]
[{{ customer.first_name | default: 7 }}][{{ customer.first_name | default: customer.id }}]
[{{ event.properties.order_id }}][{{ event.properties.total | default: "0" }}]
[{{ customer.tags.size }}][{{ customer.tags.first }}][{{ customer.size }}]
[{{ customer.size | default: "s" }}][{{ customer.first | default: 1 }}]
[{{ customer.last | default: "l" }}]
{% assign items = event.properties.items | default: nil -%}
{% if items %}{% for item in items %}<{{ forloop.index }}:{{ item.name | default: item.product_id }}
 x {{ item.quantity | default: 1 }} {{ item.price | default: "?" }}>{% endfor %}{% endif %}
{% capture c %}{{ customer.first_name | default: "c" }}{% endcapture %}[{{ c }}]
{% case customer.first_name %}{% when "Ana" %}[{{ customer.id }}]{% else %}[-]{% endcase %}
"""

_VALUES: list[object] = [
    "Ana",
    "",
    " ",
    "Zoë <b>&amp;</b> \"q\" 'a'",
    0,
    7,
    -1,
    1.5,
    True,
    False,
    None,
    ["a", "b"],
    [],
    {"first_name": "x"},
    {},
]


def _variable_sets() -> list[dict[str, object]]:
    sets: list[dict[str, object]] = []
    for value in _VALUES:
        customer: dict[str, object] = {"id": "c-1", "first_name": value, "tags": value}
        items: list[object] = [
            {"name": value, "product_id": "p-1", "price": value},
            {"product_id": "p-2", "quantity": value},
            {"name": "Mug", "quantity": 2, "price": "9.90"},
        ]
        sets.append(
            {
                "customer": customer,
                "event": {"properties": {"order_id": value, "total": value, "items": items}},
            }
        )
        sets.append({"customer": {"id": value}, "event": {"properties": {"items": value}}})
        sets.append({"customer": value, "event": value})
    sets.append({"customer": {"id": "c-2"}})  # event undefined: an error, both ways
    sets.append({})
    return sets


def _outcome(template: object, variables: dict[str, object]) -> str:
    try:
        return str(template.render(variables))  # type: ignore[attr-defined]
    except Exception as exc:  # the error itself is what is compared
        return f"{exc.__class__.__name__}: {exc}"


def _sources() -> list[tuple[str, str]]:
    found = [("inline/" + part, _OUTPUTS) for part in ("text", "html")]
    for folder in sorted(REPO_TEMPLATES.iterdir()):
        for path in sorted(folder.glob("*.liquid")):
            found.append((f"{folder.name}/{path.stem}", path.read_text()))
    return found


@pytest.mark.parametrize(("name", "source"), _sources(), ids=[n for n, _ in _sources()])
def test_plain_outputs_render_as_python_liquid_does(name: str, source: str) -> None:
    from services.dispatch.adapters.templates import _environment, _PlainOutput, parse_part

    part = name.split("/")[1]
    fast = parse_part("t", part, source)
    reference = _environment(html=part == "html").from_string(source)
    shortcuts = [n for n in _walk(fast.nodes) if isinstance(n, _PlainOutput)]
    if "{{" in source:
        assert shortcuts, "the shortcut is not in use: this test would prove nothing"
    for variables in _variable_sets():
        assert _outcome(fast, variables) == _outcome(reference, variables), variables


def _walk(nodes: Sequence[Node]) -> list[Node]:
    from liquid import RenderContext

    from services.dispatch.adapters.templates import _environment

    static = RenderContext(_environment(html=False).from_string(""))
    found: list[Node] = []
    pending = list(nodes)
    while pending:
        node = pending.pop()
        found.append(node)
        pending.extend(node.children(static, include_partials=False))
        pending.extend(getattr(node, "nodes", []))
    return found


def _marketing_email_templates() -> list[str]:
    """The templates the shipped journeys send as marketing email (the default category)."""
    found: set[str] = set()
    for path in sorted((REPO_TEMPLATES.parent / "journeys").glob("*.json")):
        for step in json.loads(path.read_text())["steps"].values():
            send = step.get("send")
            if send and send["channel"] == "email" and send.get("category") != "transactional":
                found.add(send["template"])
    return sorted(found)


@pytest.mark.parametrize("template_id", _marketing_email_templates())
def test_every_shipped_marketing_email_has_a_visible_unsubscribe_link(template_id: str) -> None:
    # Gmail and Yahoo want a visible unsubscribe link in the body of bulk mail, besides the
    # List-Unsubscribe header (docs/dispatch.md, deliverability checklist).
    links = LINKS
    # The event the journey started on (cross-sell follows an order): what every run has.
    order = {"type": "order_completed", "properties": {"order_id": "1001", "total": "59.90"}}
    variables = merge(default_sample("email"), {**links, "event": order})
    rendered = TemplateStore(REPO_TEMPLATES).render(template_id, "email", variables)
    assert rendered.html is not None
    assert f'href="{links["unsubscribe_url"]}"' in rendered.html
    assert f'href="{links["preferences_url"]}"' in rendered.html
    assert links["unsubscribe_url"] in rendered.text
    assert links["preferences_url"] in rendered.text


@pytest.mark.parametrize("template_id", _marketing_email_templates())
def test_a_shipped_marketing_email_without_its_links_does_not_render(template_id: str) -> None:
    # Every dispatcher has links, so a footer guarded by `{% if unsubscribe_url %}` could only
    # ever hide a missing link: a render without them must fail, never send mail without them.
    variables = merge(default_sample("email"), {"event": {"properties": {"order_id": "1001"}}})
    del variables["unsubscribe_url"], variables["preferences_url"]
    with pytest.raises(TemplateError, match="unsubscribe_url is undefined"):
        TemplateStore(REPO_TEMPLATES).render(template_id, "email", variables)


@pytest.mark.parametrize(
    ("source", "line", "column", "opened"),
    [
        ("Hello\n{% if x %}yes", 2, 1, "if"),
        ("a\n{% for i in x %}\n  {% if i %}b{% endif %}\nc", 2, 1, "for"),
        ("{% if a %}\n  {%- if b %}{% endif %}", 1, 1, "if"),
        ("{% comment %}{% unless %}{% endcomment %}\n\n  {%- unless x %}", 3, 3, "unless"),
        ("x\n{% raw %}{% capture c %}{% endraw %}{% capture c %}y", 2, 37, "capture"),
    ],
)
def test_a_block_never_closed_is_placed_where_it_opens(
    source: str, line: int, column: int, opened: str
) -> None:
    with pytest.raises(InvalidTemplate) as raised:
        compile_template("t", "sms", {"sms": source}, version=0)
    assert (raised.value.line, raised.value.column) == (line, column)
    assert f"{{% {opened} %}} is never closed" in raised.value.problem


def test_a_syntax_error_without_a_place_points_at_the_end() -> None:
    with pytest.raises(InvalidTemplate) as raised:
        compile_template("t", "sms", {"sms": "x\n{% case x %}{% when 1 %}"}, version=0)
    assert (raised.value.line, raised.value.column) == (2, 25)


# ── Money ─────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("source", "amount", "shown"),
    [
        ('{{ p | money: "EUR" }}', "12.5", "€12.50"),
        ('{{ p | money: "USD" }}', "12.5", "$12.50"),
        ('{{ p | money: "usd" }}', 1234, "$1,234.00"),
        ('{{ p | money: "GBP" }}', 39.9, "£39.90"),
        ('{{ p | money: "JPY" }}', "1200", "¥1,200"),  # no minor units
        ('{{ p | money: "EUR", "de_DE" }}', "12.5", "12,50\xa0€"),
        ('{{ p | money: "EUR", "fr-FR" }}', "1234.5", "1\u202f234,50\xa0€"),
        ('{{ p | money: "CHF", "de_CH" }}', "59.90", "CHF\xa059.90"),
        ('{{ p | money: "EUR" }}', "-5", "-€5.00"),
    ],
)
def test_money_prints_an_amount_with_its_currency(source: str, amount: object, shown: str) -> None:
    template = compile_template("t", "sms", {"sms": source}, version=0)
    assert template.render({"p": amount}).text == shown


@pytest.mark.parametrize(
    ("source", "variables", "problem"),
    [
        ('{{ p | money: "EUR" }}', {"p": "12,50"}, "'12,50' is not an amount"),
        ('{{ p | money: "EUR" }}', {"p": None}, "None is not an amount"),
        ('{{ p | money: "EUR" }}', {"p": True}, "True is not an amount"),
        ('{{ p | money: "XYZ" }}', {"p": "1"}, "ISO 4217 code"),
        ("{{ p | money }}", {"p": "1"}, "ISO 4217 code"),
        ('{{ p | money: "EUR", "xx_QQ" }}', {"p": "1"}, "'xx_QQ' is not a locale"),
    ],
)
def test_money_refuses_what_it_cannot_print_right(
    source: str, variables: dict[str, object], problem: str
) -> None:
    template = compile_template("t", "sms", {"sms": source}, version=0)
    with pytest.raises(RenderFailed, match=problem):
        template.render(variables)


def test_money_of_an_undefined_variable_names_it() -> None:
    template = compile_template("t", "sms", {"sms": "{{ p | money: c }}"}, version=0)
    with pytest.raises(UndefinedVariable) as raised:
        template.render({"p": "1"})
    assert raised.value.variable == "c"


def test_the_order_thanks_template_prints_prices_in_the_orders_currency() -> None:
    order = {
        "type": "order_completed",
        "properties": {
            "order_id": "1001",
            "total": "1290",
            "currency": "JPY",
            "items": [
                {"name": "Teapot", "price": "990", "quantity": 1},
                {"name": "Tea", "price": "300"},
            ],
        },
    }
    variables = merge(default_sample("email"), {"event": order})
    rendered = TemplateStore(REPO_TEMPLATES).render("order-thanks", "email", variables)
    assert "- Teapot \N{MULTIPLICATION SIGN} 1: ¥990\n" in rendered.text
    assert "- Tea \N{MULTIPLICATION SIGN} 1: ¥300\n" in rendered.text
    assert "Total: ¥1,290" in rendered.text
    assert rendered.html is not None
    assert "<td>¥990</td>" in rendered.html and "<strong>¥1,290</strong>" in rendered.html


@pytest.mark.parametrize(
    ("properties", "shown"),
    [
        # Shopify's webhook: the id is a long number, `name` ("#1001") is what the shop shows.
        ({"order_id": "820982911946154508", "order_number": "#1001"}, "#1001"),
        ({"order_id": "o-1001"}, "o-1001"),
    ],
)
def test_the_order_thanks_template_names_the_order_as_the_shop_does(
    properties: dict[str, str], shown: str
) -> None:
    order = {
        "type": "order_completed",
        "properties": {**properties, "total": "9", "currency": "EUR"},
    }
    variables = merge(default_sample("email"), {"event": order})
    rendered = TemplateStore(REPO_TEMPLATES).render("order-thanks", "email", variables)
    assert rendered.subject == f"Thank you for your order {shown}"
    assert f"thank you for your order {shown}." in rendered.text
    assert rendered.html is not None and f"<strong>{shown}</strong>" in rendered.html
