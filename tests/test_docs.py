"""The README documents every setting and every CLI command."""

from __future__ import annotations

from rag.cli import build_parser
from rag.settings import Settings
from tests.conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme():
    missing = [f"RAG_{name.upper()}" for name in Settings.model_fields if f"`RAG_{name.upper()}`" not in README]
    assert not missing, f"undocumented settings: {missing}"


def test_every_command_is_in_the_readme():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(f"rag {name}" in README for name in commands), list(commands)
