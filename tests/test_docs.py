"""The documents a new user reads first stay true: every setting documented, every linked file there."""

from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_settings_page() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", page, flags=re.MULTILINE))
    names = {field.alias for field in Settings.model_fields.values()}
    assert names - documented == set(), "settings missing from docs/settings.md"
    assert documented - names == set(), "docs/settings.md documents settings that do not exist"


def test_the_readme_is_short_names_make_test_and_links_only_what_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert len(readme.splitlines()) < 80
    linked = re.findall(r"`((?:docs/)?[\w./-]+\.md)`", readme)
    assert linked and all((ROOT / path).is_file() for path in linked), linked
    assert "DESIGN.md" not in readme  # the design beside the checkout is not in a clone: docs/architecture.md
