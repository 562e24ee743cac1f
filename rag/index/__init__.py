"""The index: a store that owns its storage, behind one seam, and the build that fills it.

- `manifest.py`: what a built index records of itself, and the one compatibility check.
- `store.py`: the protocols a store implements (`IndexStore` to read, `IndexWriter` to write, `StoreKind`).
- `folder.py`: the folder store (FAISS + bm25s + SQLite generations), the default.
- `milvus.py`: the Milvus store (collections behind an alias), for stateless service replicas.
- `build.py`: corpus -> chunks -> vectors -> a store, reusing what the store already holds.
"""

from rag.index.build import BuildConfig, BuildReport, build_index
from rag.index.folder import FolderConfig, FolderIndex, FolderStore, live_generation
from rag.index.manifest import Manifest
from rag.index.store import BuildProgress, IndexStore, IndexWriter, Passage, StoreKind

__all__ = ["BuildConfig", "BuildProgress", "BuildReport", "FolderConfig", "FolderIndex", "FolderStore", "IndexStore", "IndexWriter", "Manifest",
           "Passage", "StoreKind", "build_index", "live_generation"]
