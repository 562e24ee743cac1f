"""Pluggable answer generators. Importing this package registers the built-in ones."""

from rag.generators import extractive, openai  # noqa: F401  (register "extractive" and "openai")
from rag.generators.base import (ABSTAIN_TEXT, CheckedGenerator, Draft, DraftStream, Evidence, Generator,
                                 GeneratorDeps, GeneratorSettings, Quote, StreamingGenerator)
from rag.generators.registry import (available, create_generator, register, settings_classes, unknown_settings,
                                     unregister)

__all__ = ["ABSTAIN_TEXT", "CheckedGenerator", "Draft", "DraftStream", "Evidence", "Generator", "GeneratorDeps",
           "GeneratorSettings", "Quote", "StreamingGenerator", "available", "create_generator", "register",
           "settings_classes", "unknown_settings", "unregister"]
