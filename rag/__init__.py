"""Retrieval-augmented Q&A over a corpus of Japanese articles.

Data flows one way: corpus -> chunking -> embeddings/index -> retrieval -> answer -> cli/service.
"""

__version__ = "0.1.0"
