"""Generators by name, each with the settings class it declares: built-ins register on import of
`rag.generators`; others call `register` the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from rag.errors import GeneratorNotConfigured, InvalidSetting, UnknownGenerator
from rag.generators.base import Generator, GeneratorDeps, GeneratorSettings

GeneratorFactory = Callable[[GeneratorDeps], Generator]


@dataclass(frozen=True)
class Registration:
    factory: GeneratorFactory
    settings: type[GeneratorSettings] | None

    @property
    def prefix(self) -> str:
        """The settings' keyword prefix: `RAG_LLM_` variables are `llm_*` keywords of `Settings`."""
        return str(self.settings.model_config.get("env_prefix", "")).lower().removeprefix("rag_") if self.settings else ""

    def own_settings(self, overrides: Mapping[str, object]) -> GeneratorSettings | None:
        """The generator's settings: its environment variables, overridden by prefixed keywords."""
        if self.settings is None:
            return None
        mine = {key.removeprefix(self.prefix): value for key, value in overrides.items() if key.startswith(self.prefix)}
        try:
            return self.settings(**mine)
        except ValidationError as exc:
            problems = "; ".join(f"RAG_{self.prefix.upper()}{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                                 for e in exc.errors())
            raise InvalidSetting(f"invalid setting: {problems}") from None


_REGISTRY: dict[str, Registration] = {}


def register(name: str, settings: type[GeneratorSettings] | None = None) -> Callable[[GeneratorFactory], GeneratorFactory]:
    def add(factory: GeneratorFactory) -> GeneratorFactory:
        _REGISTRY[name] = Registration(factory, settings)
        return factory

    return add


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def available() -> list[str]:
    return sorted(_REGISTRY)


def settings_classes() -> dict[str, type[GeneratorSettings]]:
    """Each registered generator's settings class (what the README must document)."""
    return {name: r.settings for name, r in sorted(_REGISTRY.items()) if r.settings is not None}


def unknown_settings(keywords: Mapping[str, object]) -> list[str]:
    """The keywords no registered generator declares (a typo, or a plug-in that is not installed)."""
    declared = {r.prefix + field for r in _REGISTRY.values() if r.settings for field in r.settings.model_fields}
    return sorted(key for key in keywords if key not in declared)


def create_generator(name: str, embedder, overrides: Mapping[str, object] = {}) -> Generator:
    """Build generator `name` with the loaded embedder and its settings (`overrides`: prefixed keywords)."""
    try:
        registration = _REGISTRY[name]
    except KeyError:
        raise UnknownGenerator(f"unknown generator {name!r}; available: {', '.join(available())}") from None
    try:
        return registration.factory(GeneratorDeps(embedder, registration.own_settings(overrides), overrides))
    except GeneratorNotConfigured as exc:
        raise UnknownGenerator(f"generator {name!r} is not configured: {exc.message}") from None
