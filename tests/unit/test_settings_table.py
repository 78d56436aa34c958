"""The README's settings table is the settings model's: generated, and failing here on drift."""

from __future__ import annotations

from pathlib import Path

from cards.settings import Settings
from cards.settings_table import END, START, env_name, render, replace_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_table_is_the_generated_one() -> None:
    text = README.read_text(encoding="utf-8")
    assert render() in text, "run: python -m cards.settings_table --write README.md"


def test_every_setting_has_a_description_and_one_row() -> None:
    table = render()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert table.count(f"| `{env_name(name, field)}` |") == 1


def test_env_names_follow_the_models_aliases_and_prefix() -> None:
    fields = Settings.model_fields
    assert env_name("celery_broker_url", fields["celery_broker_url"]) == "CELERY_BROKER_URL"
    assert env_name("stripe_api_base", fields["stripe_api_base"]) == "STRIPE_API_BASE"
    assert env_name("bulk_queue", fields["bulk_queue"]) == "CARDS_BULK_QUEUE"


def test_replace_table_rewrites_only_between_the_markers() -> None:
    text = f"before\n{START}\n| stale |\n{END}\nafter\n"
    assert replace_table(text) == f"before\n{render()}\nafter\n"
