"""Pluggable answer generators. Importing this package registers the built-in ones."""

from rag.generators import extractive  # noqa: F401  (registers "extractive")
from rag.generators.base import Draft, Evidence, Generator, GeneratorDeps, Quote
from rag.generators.registry import UnknownGenerator, available, create_generator, register, unregister

__all__ = ["Draft", "Evidence", "Generator", "GeneratorDeps", "Quote", "UnknownGenerator", "available",
           "create_generator", "register", "unregister"]
