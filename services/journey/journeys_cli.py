"""``ciclo journeys``: print the JSON Schema of the journey language, validate journey files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click


@click.group(help="Journey definitions (JSON).")
def journeys() -> None:
    pass


@journeys.command("schema", help="Print the JSON Schema of the journey language.")
def schema() -> None:
    from services.journey.domain.definitions import JourneyDefinition

    click.echo(json.dumps(JourneyDefinition.model_json_schema(), indent=2))


@journeys.command(
    "validate",
    help="Validate journey files; print each problem as 'FILE: PATH: MESSAGE'. Template ids are "
    "the folder names under CICLO_TEMPLATES_DIR (default 'templates').",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    from services.journey.adapters.files import check_document, read_document, template_ids
    from services.journey.errors import InvalidJourney

    templates = template_ids(Path(os.environ.get("CICLO_TEMPLATES_DIR", "templates")))
    failed = False
    for path in files:
        try:
            document = read_document(path)
        except InvalidJourney as exc:
            click.echo(str(exc))
            failed = True
            continue
        problems = check_document(document, templates=templates)
        for problem in problems:
            click.echo(f"{path}: {problem}")
        failed = failed or bool(problems)
        if not problems:
            click.echo(f"{path}: ok")
    if failed:
        raise SystemExit(1)
