"""Pluggable answer generators. Importing this package registers the built-in ones."""

from rag.generators import extractive, openai  # noqa: F401  (register "extractive" and "openai")
from rag.generators.base import (CheckedGenerator, Draft, DraftStream, Evidence, Generator, GeneratorDeps, Quote,
                                 StreamingGenerator)
from rag.errors import UnknownGenerator
from rag.generators.registry import available, create_generator, register, unregister

__all__ = ["CheckedGenerator", "Draft", "DraftStream", "Evidence", "Generator", "GeneratorDeps", "Quote",
           "StreamingGenerator", "UnknownGenerator", "available", "create_generator", "register", "unregister"]
