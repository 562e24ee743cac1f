"""The README documents every setting and every CLI command."""

from __future__ import annotations

from rag.cli import build_parser
from rag.settings import Settings
from tests.conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme():
    missing = [f"RAG_{name.upper()}" for name in Settings.model_fields if f"`RAG_{name.upper()}`" not in README]
    assert not missing, f"undocumented settings: {missing}"


def test_every_generator_setting_is_in_the_readme():
    from rag.generators import settings_classes

    declared = [f"{cls.model_config['env_prefix']}{name.upper()}" for cls in settings_classes().values()
                for name in cls.model_fields]
    assert "RAG_LLM_BASE_URL" in declared and "RAG_EXTRACTIVE_W_RANK" in declared
    missing = [variable for variable in declared if f"`{variable}`" not in README]
    assert not missing, f"undocumented generator settings: {missing}"


def test_every_command_is_in_the_readme():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(f"rag {name}" in README for name in commands), list(commands)
