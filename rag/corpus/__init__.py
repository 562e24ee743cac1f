"""The corpus layer: Jekyll posts (Markdown with YAML front matter) -> `Article`.

One-way flow, each module importing only the ones after it:

    watch.py       following the folder: a snapshot of its posts, and waiting for a settled change
    jekyll.py      files -> Article: front matter, dates, ids, URLs, `_config.yml`, malformed-file reports
    site_rules.py  the named cleanup rule set for a site's own boilerplate and artefacts; `clean_body`
    markdown.py    Markdown, HTML, Liquid -> plain text with headings, calling the rule set's hooks

Everything downstream (chunking, retrieval, quoting) sees only the plain text this package returns.
"""

from rag.corpus.jekyll import READER, CorpusLoad, KnownFiles, article_url, load_article, load_corpus, site_settings
from rag.corpus.markdown import SiteRules
from rag.corpus.site_rules import RULE_SETS, clean_body, rule_set

__all__ = [
    "READER",
    "RULE_SETS",
    "CorpusLoad",
    "SiteRules",
    "article_url",
    "clean_body",
    "load_article",
    "load_corpus",
    "KnownFiles",
    "rule_set",
    "site_settings",
]
