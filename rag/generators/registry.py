"""Generators by name: built-ins register on import of `rag.generators`; others call `register`."""

from __future__ import annotations

from collections.abc import Callable

from rag.errors import GeneratorNotConfigured, UnknownGenerator
from rag.generators.base import Generator, GeneratorDeps

GeneratorFactory = Callable[[GeneratorDeps], Generator]
_FACTORIES: dict[str, GeneratorFactory] = {}


def register(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    def add(factory: GeneratorFactory) -> GeneratorFactory:
        _FACTORIES[name] = factory
        return factory

    return add


def unregister(name: str) -> None:
    _FACTORIES.pop(name, None)


def available() -> list[str]:
    return sorted(_FACTORIES)


def create_generator(name: str, deps: GeneratorDeps) -> Generator:
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownGenerator(f"unknown generator {name!r}; available: {', '.join(available())}") from None
    try:
        return factory(deps)
    except GeneratorNotConfigured as exc:
        raise UnknownGenerator(f"generator {name!r} is not configured: {exc}") from None
