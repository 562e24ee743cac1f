"""The corpus layer: front matter -> metadata, Markdown -> clean text, boilerplate and repeats removed."""

from __future__ import annotations

import hashlib
import re
import time
import unicodedata
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rag.corpus import CorpusLoad, article_url, clean_body, load_article, load_corpus, site_settings
from rag.corpus.images import Image, read_image, site_folder
from rag.errors import CorpusNotFound, RagError
from rag.types import Article

SITE = "https://ai-media.co.jp"
PERMALINK = "/:year/:month/:day/:title/"
JST = timezone(timedelta(hours=9))
NEW_YORK = timezone(timedelta(hours=-5))
RULES = "allforces"  # the shared corpus's rule set: most cases below are its artefacts


def body_of(markdown: str) -> str:
    return clean_body(markdown, rules=RULES)[0]


def paragraphs(body: str) -> list[str]:
    return body.split("\n\n")


def assert_well_formed(body: str, headings) -> None:
    """Invariants every cleaned body keeps, whatever went in."""
    assert body == body.strip()
    assert "\n\n\n" not in body
    starts = {0} | {match.end() for match in re.finditer("\n\n", body)}
    for heading in headings:
        assert heading.start in starts, heading
        assert body[heading.start : heading.start + len(heading.text) + 2].rstrip("\n") == heading.text


def repeated_paragraphs(article: Article) -> list[str]:
    """Paragraphs (not headings) of 15+ characters that occur twice, compared after NFKC + whitespace removal."""
    heading_starts = {heading.start for heading in article.headings}
    seen: set[str] = set()
    repeated = []
    offset = 0
    for paragraph in paragraphs(article.body):
        key = re.sub(r"\s+", "", unicodedata.normalize("NFKC", paragraph))
        if offset not in heading_starts and len(paragraph) >= 15:
            if key in seen:
                repeated.append(paragraph)
            seen.add(key)
        offset += len(paragraph) + 2
    return repeated


# --- clean_body on small inline examples ----------------------------------------------------------

CLEANING_CASES = {
    "glued heading": ("## 概要と背景\n生成AIの市場は拡大している。", "概要と背景\n\n生成AIの市場は拡大している。"),
    "heading without space": ("##市場への影響\n影響は大きい。", "市場への影響\n\n影響は大きい。"),
    "link keeps text": ("詳しくは[公式発表](https://example.com/a_(b))を参照。", "詳しくは公式発表を参照。"),
    "image dropped": ("図を示す。![構成図](/img/a.png)\n\n![](b.png)", "図を示す。"),
    "link cut off at end of file": ("[Amazonで詳しく見る →](https://www.amazon.co", "Amazonで詳しく見る →"),
    "link definition dropped": ("本文です。\n\n[ref]: https://example.com \"t\"", "本文です。"),
    "bold and italic": ("**300億パラメータ**の*新*モデルと__高速__化", "300億パラメータの新モデルと高速化"),
    "asterisks in arithmetic survive": ("計算は2*3*4 = 24、snake_case_name も残る。", "計算は2*3*4 = 24、snake_case_name も残る。"),
    "escaped markup is literal": (r"\*注\* と \[1\]", "*注* と [1]"),
    "blockquote and bullets": ("> 引用です。\n\n- 項目A\n* 項目B\n+ 項目C\n1. 手順1", "引用です。\n\n項目A\n項目B\n項目C\n1. 手順1"),
    "horizontal rules": ("前の段落。\n\n---\n\n***\n\n___\n\n後の段落。", "前の段落。\n\n後の段落。"),
    "table": (
        "| モデル | スコア |\n|---|:---:|\n| [GPT-4o](https://x) | **88.7** |\n| Llama 3 | 86.1 |",
        "モデル / スコア\nGPT-4o / 88.7\nLlama 3 / 86.1",
    ),
    "liquid": (
        "{% include ads-mid-article.html %}\n本文{{ page.title }}です。{% raw %}{{ x }}{% endraw %}",
        "本文です。{{ x }}",
    ),
    "html tags": (
        "<p>段落1</p><p>行1<br>行2</p><!-- メモ -->\n<span>装飾</span>された文。<script>alert(1)</script><style>p{}</style>",
        "段落1\n\n行1\n行2\n\n装飾された文。",
    ),
    "unclosed script tag keeps the text after it": ("<script>タグは危険です。\n\n次の段落。", "タグは危険です。\n\n次の段落。"),
    "autolink": ("公式サイト <https://example.com/a> を参照。", "公式サイト https://example.com/a を参照。"),
    "CRLF line endings": ("## 見出し\r\n本文です。\r\n\r\n次の段落。", "見出し\n\n本文です。\n\n次の段落。"),
    "html heading": ("<h3>投資家への示唆</h3>\n本文。", "投資家への示唆\n\n本文。"),
    "entities": ("A &amp; B は &lt;tag&gt; と&quot;引用&quot;。", 'A & B は <tag> と"引用"。'),
    "inline code keeps markup": (
        "例えば `<script>alert(1)</script>` や `**x**` と書く。",
        "例えば <script>alert(1)</script> や **x** と書く。",
    ),
    "fenced code keeps markup": (
        "コード例：\n\n```python\n# コメント\nprint('<b>&amp;</b>')\n\n    x = [a](b)\n```\n\n以上。",
        "コード例：\n\n# コメント\nprint('<b>&amp;</b>')\n    x = [a](b)\n\n以上。",
    ),
    "related-articles section": (
        "本文です。\n\n---\n\n## 関連記事\n\n- [記事A](/2025/01/01/a/)\n- [記事B](/2025/01/02/b/)\n",
        "本文です。",
    ),
    "related-articles list then article text": (
        "## 関連記事\n- [記事A](/2025/01/01/a/)\n続きの本文がここにあります。",
        "続きの本文がここにあります。",
    ),
    "reading list": ("本文。\n\n### あわせて読みたい\n- [記事A](/a/)\n\n---\n\n後の本文。", "本文。\n\n後の本文。"),
    "book block": (
        "## この記事に関連するおすすめ書籍\n\n**[AI投資の最前線](https://www.amazon.co.jp/s?k=AI&tag=x-22)**\n"
        "  AI企業への投資判断に役立つ分析手法\n\n*※ 上記リンクはAmazonアソシエイトリンクです*\n\n"
        "### 4. 実践的示唆\n\nこの競争は私たちに影響を与える。",
        "4. 実践的示唆\n\nこの競争は私たちに影響を与える。",
    ),
    "book entries as headings": (
        "## この記事に関連するおすすめ書籍\n### [生成AI活用の最前線](https://www.amazon.co.jp/dp/1/)\n"
        "世界の企業100社超のAI活用事例から投資・導入判断のヒントを得る\n[Amazonで詳しく見る →](https://www.amazon.co.jp/dp/1/)\n"
        "---\n*※ 本ページのリンクにはアフィリエイトリンクが含まれます。購入によりサイト運営をサポートいただけます。*",
        "",
    ),
    "call to action": (
        "結論です。\n\n---\n\n## 技術選定のご相談を承っています\n\n実装経験に基づくアドバイスをしています。\n\n"
        "[お問い合わせはこちら](/services/?utm_source=article&utm_medium=cta&utm_campaign=tech_guide)\n"
        "{: .consulting-cta-link}",
        "結論です。",
    ),
    "call to action without heading": (
        "まとめです。\n\n---\n\n**ご相談は無料で承っております。** お気軽にどうぞ。\n\n[無料相談はこちら →](/contact/)",
        "まとめです。",
    ),
    "END marker": ("本文です。\n\n---END---\n\n続きの本文。", "本文です。\n\n続きの本文。"),
    "cite markers": (
        "市場は拡大した [cite: 1]。予測もある[cite_start]。データ [参照データ]。",
        "市場は拡大した。予測もある。データ。",
    ),
    "prompt text": (
        "生成AIの企業導入が急速に進んでいる。\n\n【既存の記事の最後の部分】\n生成AIの企業導入が急速に進んでいる。\n\n【要求事項】\n"
        "1. 上記の文章から自然に続くように記事を完成させる\n2. 記事の末尾に ---END--- を必ず追加する\n\n"
        "【文体の指示】\n- 短文と長文のリズムを意識\n\n新しい本文。",
        "生成AIの企業導入が急速に進んでいる。\n\n新しい本文。",
    ),
    "japanese refusal": (
        "大変申し訳ありませんが、「X」に関する情報は見つけることができませんでした。\n\n"
        "はい、承知いたしました。Xの可能性について考えてみましょう。",
        "Xの可能性について考えてみましょう。",
    ),
    "english quota error": (
        "I apologize, but I am unable to perform web searches due to a daily quota limit. "
        "Please let me know if you'd like me to try again later.\n\nNvidiaの話をしよう。",
        "Nvidiaの話をしよう。",
    ),
    "merge conflict markers": (
        "<<<<<<< Updated upstream\n本文A。\n=======\n本文B。\n>>>>>>> Stashed changes",
        "本文A。\n\n本文B。",
    ),
    "tex debris": ("ニュース、 $_{_{皆さんも}^{_{}^{}_{}^{}_{}^{}_{}", "ニュース、 皆さんも"),
    "full-width text is not normalised": ("ＡＩ市場は１００億ドル（約１．５兆円）。", "ＡＩ市場は１００億ドル（約１．５兆円）。"),
}


@pytest.mark.parametrize(("markdown", "expected"), CLEANING_CASES.values(), ids=CLEANING_CASES.keys())
def test_clean_body(markdown, expected):
    body, headings = clean_body(markdown, rules=RULES)
    assert body == expected
    assert_well_formed(body, headings)


def test_headings_record_level_text_and_offset():
    body, headings = clean_body("# 題\n導入。\n\n## 第1節 **重要**\n本文1。\n\n### 小節\n本文2。", rules=RULES)
    assert body == "題\n\n導入。\n\n第1節 重要\n\n本文1。\n\n小節\n\n本文2。"
    assert [(h.level, h.text) for h in headings] == [(1, "題"), (2, "第1節 重要"), (3, "小節")]
    assert_well_formed(body, headings)


def test_repeated_paragraph_is_dropped_but_short_lines_may_repeat():
    opening = "AIエージェントは2026年に企業アプリケーションの40%に搭載される見通しだ。"
    markdown = f"{opening}\n\n- はい\n\n{opening}\n\n-   はい\n\n{opening.replace('40%', '４０％')}"
    assert body_of(markdown) == f"{opening}\n\nはい\n\nはい"


def test_repeated_section_disappears_with_its_heading():
    section = "## 市場への影響\n\n市場は年率28%で成長し、2030年には8270億ドルに達すると予測されている。"
    body, headings = clean_body(f"導入の段落です。\n\n{section}\n\n## まとめ\n\n結論の段落です。\n\n{section}", rules=RULES)
    assert body == "導入の段落です。\n\n市場への影響\n\n市場は年率28%で成長し、2030年には8270億ドルに達すると予測されている。\n\nまとめ\n\n結論の段落です。"
    assert [h.text for h in headings] == ["市場への影響", "まとめ"]


def test_heading_kept_while_its_subsection_has_text():
    body, headings = clean_body("## 章\n\n### 節\n\n節の本文です。\n\n## 空の章\n\n## 次の章\n\n次の本文です。", rules=RULES)
    assert [h.text for h in headings] == ["章", "節", "次の章"]
    assert_well_formed(body, headings)


def test_truncated_and_flattened_copies_count_as_repeats():
    first = "AI市場は2025年時点で2440億ドルに達した。生成AI市場は710億ドルで前年比55%増となった。"
    second = "NVIDIAの年間売上は1305億ドルで前年比114%増だった。データセンター事業が牽引した。"
    markdown = (
        f"### 市場\n\n{first}\n\n{second}\n\n"
        f"...生成AI市場は710億ドルで前年比55%増となった。\n\n"  # a restart after a cut-off
        f"市場 {first} {second} --- ### あわせて読みたい - [記事](/a/)"  # the article flattened onto one line
    )
    assert body_of(markdown) == f"市場\n\n{first}\n\n{second}"


# --- site rule sets ------------------------------------------------------------------------------

# Cases above that only need generic Markdown, HTML and Liquid handling, no ALLFORCES rule.
GENERIC_CASES = [
    "glued heading", "heading without space", "link keeps text", "image dropped", "link cut off at end of file",
    "link definition dropped", "bold and italic", "asterisks in arithmetic survive", "escaped markup is literal",
    "blockquote and bullets", "horizontal rules", "table", "liquid", "html tags",
    "unclosed script tag keeps the text after it", "autolink", "CRLF line endings", "html heading", "entities",
    "inline code keeps markup", "fenced code keeps markup", "full-width text is not normalised",
]


@pytest.mark.parametrize("case", GENERIC_CASES)
def test_plain_blog_rules_strip_markdown_like_allforces(case):
    markdown, expected = CLEANING_CASES[case]
    assert clean_body(markdown, rules="none") == clean_body(markdown, rules="allforces")
    assert clean_body(markdown, rules="none")[0] == expected


ARTICLE = "## 概要\n\n**生成AI**の[市場](https://example.com/m)は拡大している。"


@pytest.mark.parametrize(
    ("artefact", "kept_as"),
    [
        ("## 関連記事\n\n- [記事A](/2025/01/01/a/)\n- [記事B](/2025/01/02/b/)", "関連記事\n\n記事A\n記事B"),
        ("---\n\n[お問い合わせはこちら](/services/?utm_medium=cta)\n{: .consulting-cta-link}", "お問い合わせはこちら"),
        ("はい、承知いたしました。", "はい、承知いたしました。"),
    ],
    ids=["related-articles list", "call to action", "chatter"],
)
def test_plain_blog_rules_keep_what_allforces_removes(artefact, kept_as):
    markdown = f"{ARTICLE}\n\n{artefact}"
    assert body_of(markdown) == "概要\n\n生成AIの市場は拡大している。"
    assert clean_body(markdown, rules="none")[0] == f"概要\n\n生成AIの市場は拡大している。\n\n{kept_as}"


def test_unknown_rule_set_is_a_one_line_error(tmp_path):
    expected = "unknown site rule set 'jekyll': use one of allforces, none (set RAG_SITE_RULES)"
    with pytest.raises(RagError) as error:
        load_corpus(tmp_path, site_url=SITE, permalink=PERMALINK, rules="jekyll")  # before the folder is read
    assert error.value.message == expected
    with pytest.raises(RagError, match=r"^unknown site rule set 'Allforces': use one of allforces, none"):
        clean_body("本文です。", rules="Allforces")


# --- metadata and URLs --------------------------------------------------------------------------


def write_post(folder: Path, name: str, front: str, body: str = "本文です。\n") -> Path:
    path = folder / name
    path.write_text(f"---\n{front}\n---\n\n{body}", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("front_date", "expected"),
    [
        ("2025-12-28 08:41:23 +0000", datetime(2025, 12, 28, 8, 41, 23, tzinfo=timezone.utc)),
        ("2026-02-13 18:04:39 +0900", datetime(2026, 2, 13, 18, 4, 39, tzinfo=JST)),
        ("2025-01-15 09:00:00", datetime(2025, 1, 15, 9, 0, tzinfo=JST)),  # naive: site time zone
        ("2025-01-15", datetime(2025, 1, 15, tzinfo=JST)),  # YAML reads this as a date
        ("2025-01-15T09:00:00+09:00", datetime(2025, 1, 15, 9, 0, tzinfo=JST)),  # YAML reads an aware datetime
        ("'2025-01-15 09:00:00.5 -05:00'", datetime(2025, 1, 15, 9, 0, 0, 500000, tzinfo=NEW_YORK)),
    ],
)
def test_dates_are_time_zone_aware(tmp_path, front_date, expected):
    path = write_post(tmp_path, "2025-01-15-post.md", f"title: 記事\ndate: {front_date}")
    article = load_article(path, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert article.date == expected
    assert article.date.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize(
    ("front", "categories", "tags"),
    [
        ('categories: ["AI技術ガイド"]\ntags: ["Meta", "LLM"]', ("AI技術ガイド",), ("Meta", "LLM")),
        ("categories: [AI導入戦略]\ntags: [AI活用事例]", ("AI導入戦略",), ("AI活用事例",)),
        ("categories: AI ニュース\ntags: LLM", ("AI", "ニュース"), ("LLM",)),  # Jekyll splits a string at spaces
        ("categories:\n  - 研究論文\ntags: []", ("研究論文",), ()),
        ("author: 編集部", (), ()),
    ],
)
def test_categories_and_tags_become_tuples(tmp_path, front, categories, tags):
    path = write_post(tmp_path, "2025-01-15-post.md", f"title: 記事\ndate: 2025-01-15 09:00:00 +0900\n{front}")
    article = load_article(path, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert (article.categories, article.tags) == (categories, tags)


def test_article_fields(tmp_path):
    front = 'title: "題名"\ndate: 2025-12-28 08:41:23 +0000\nauthor: "編集部"\ndescription: "説明文"'
    path = write_post(tmp_path, "2025-12-28-2-amazon-bedrockllm15.md", front, "## 見出し\n本文です。\n")
    article = load_article(path, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert article.article_id == "2025-12-28-2-amazon-bedrockllm15"
    assert article.path == "2025-12-28-2-amazon-bedrockllm15.md"
    assert (article.title, article.author, article.excerpt) == ("題名", "編集部", "説明文")
    assert article.url == "https://ai-media.co.jp/2025/12/28/2-amazon-bedrockllm15/"
    assert article.body == "見出し\n\n本文です。"
    assert article.content_hash == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("front", "image"), [
    ('image: "/assets/images/posts/a-ogp.png"', "/assets/images/posts/a-ogp.png"),  # as the shared corpus writes it
    ("image:\n  path: /assets/b.jpg\n  height: 630", "/assets/b.jpg"),  # jekyll-seo-tag's mapping form
    ("image: [a.png]", ""),
    ("author: 編集部", ""),
])
def test_the_front_matter_image_is_kept_as_written(tmp_path, front, image):
    path = write_post(tmp_path, "2025-01-15-post.md", f"title: 記事\ndate: 2025-01-15 09:00:00 +0900\n{front}")
    assert load_article(path, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES).image == image


PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)
ARTICLE_URL = "https://blog.example/2025/01/15/post/"


@pytest.fixture()
def site(tmp_path):
    """A Jekyll site folder: `_posts/`, images under `assets/`, and a secret beside the site."""
    root = tmp_path / "site"
    (root / "_posts").mkdir(parents=True)
    (root / "assets" / "img").mkdir(parents=True)
    (root / "assets" / "img" / "a.png").write_bytes(PNG)
    (root / "assets" / "img" / "画像 1.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(20))
    (root / "assets" / "img" / "b.webp").write_bytes(b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(8))
    (root / "assets" / "img" / "fake.png").write_text("<svg onload=alert(1)>", encoding="utf-8")
    (root / "assets" / "img" / "logo.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>", encoding="utf-8")
    (tmp_path / "secret.png").write_bytes(PNG)
    (root / "assets" / "img" / "out.png").symlink_to(tmp_path / "secret.png")
    return root


@pytest.mark.parametrize(("reference", "file", "media_type"), [
    ("/assets/img/a.png", "a.png", "image/png"),  # a site path
    ("assets/img/a.png", "a.png", "image/png"),  # relative to the site folder
    ("https://blog.example/assets/img/a.png?v=2", "a.png", "image/png"),  # a URL of the article's own site
    ("/assets/img/%E7%94%BB%E5%83%8F%201.jpg", "画像 1.jpg", "image/jpeg"),  # percent-encoded
    ("/assets/img/画像 1.jpg", "画像 1.jpg", "image/jpeg"),
    ("/assets/img/b.webp", "b.webp", "image/webp"),
])
def test_an_image_of_the_site_is_read_from_its_folder(site, reference, file, media_type):
    assert read_image(reference, ARTICLE_URL, site) == Image((site / "assets/img" / file).read_bytes(), media_type)


@pytest.mark.parametrize("reference", [
    "", "/assets/img/missing.png", "/assets/img/",
    "https://elsewhere.example/assets/img/a.png",  # another site: never fetched
    "//elsewhere.example/assets/img/a.png", "ftp://blog.example/assets/img/a.png", "data:image/png;base64,iVBORw0KGgo=",
    "/../secret.png", "../secret.png", "/assets/../../secret.png", "/assets/img/%2E%2E/%2E%2E/../secret.png",
    "/assets/img/out.png",  # a link out of the site folder
    "/assets/img/fake.png", "/assets/img/logo.svg",  # not an image by its first bytes; SVG is never served
    "/assets/img/a\x00.png",
])
def test_anything_else_gives_no_image(site, reference):
    assert read_image(reference, ARTICLE_URL, site) is None


def test_an_image_over_the_size_limit_gives_none(site):
    assert read_image("/assets/img/a.png", ARTICLE_URL, site, max_bytes=len(PNG)) is not None
    assert read_image("/assets/img/a.png", ARTICLE_URL, site, max_bytes=len(PNG) - 1) is None


def test_the_site_folder_of_a_corpus_setting(site, tmp_path):
    assert site_folder(site) == site
    assert site_folder(site / "_posts") == site  # RAG_CORPUS=../blog/_posts
    assert site_folder(tmp_path) == tmp_path  # a plain folder of posts is its own site


def test_url_date_is_the_front_matter_date_in_tokyo(tmp_path):
    # As Jekyll with timezone Asia/Tokyo: 23:30 UTC on the 28th is published under the 29th.
    path = write_post(tmp_path, "2025-12-28-1-late.md", "title: 記事\ndate: 2025-12-28 23:30:00 +0000")
    late = load_article(path, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert late.url == f"{SITE}/2025/12/29/1-late/"
    undated = write_post(tmp_path, "about.md", "title: 記事\ndate: 2025-03-04 10:00:00 +0900")
    about = load_article(undated, tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert about.url == f"{SITE}/2025/03/04/about/"


def test_url_matches_the_posts_own_canonical_url(shared_posts):
    name = "2025-08-29-08-aiエーシェント本格普及.md"
    article = load_article(shared_posts / name, shared_posts, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert article.url == f"{SITE}/2025/08/30/08-aiエーシェント本格普及/"


@pytest.mark.parametrize(
    ("permalink", "categories", "expected"),
    [
        ("/:year/:month/:day/:title/", (), "https://ai-media.co.jp/2025/08/29/08-aiエーシェント本格普及/"),
        ("/:categories/:year/:month/:day/:title/", (), "https://ai-media.co.jp/2025/08/29/08-aiエーシェント本格普及/"),
        ("/:categories/:title/", ("AI", "news"), "https://ai-media.co.jp/AI/news/08-aiエーシェント本格普及/"),
        ("pretty", (), "https://ai-media.co.jp/2025/08/29/08-aiエーシェント本格普及/"),
        ("date", ("AI",), "https://ai-media.co.jp/AI/2025/08/29/08-aiエーシェント本格普及.html"),
        ("/:year/:i_month/:i_day/:slug", (), "https://ai-media.co.jp/2025/8/29/08-aiエーシェント本格普及"),
    ],
)
def test_article_url(permalink, categories, expected):
    day = date(2025, 8, 29)
    assert article_url(SITE + "/", permalink, day, "08-aiエーシェント本格普及", categories=categories) == expected


def test_site_settings_read_jekyll_config(tmp_path):
    assert site_settings(tmp_path, SITE, PERMALINK) == (SITE, PERMALINK)
    (tmp_path / "_config.yml").write_text('url: "https://example.com/"\nbaseurl: /blog\npermalink: pretty\n')
    posts = tmp_path / "_posts"
    posts.mkdir()
    assert site_settings(posts, SITE, PERMALINK) == ("https://example.com/blog", "pretty")


def test_load_corpus_reads_posts_folder_and_config(tmp_path):
    (tmp_path / "_config.yml").write_text("url: https://example.com\npermalink: /:categories/:title/\n")
    (tmp_path / "README.md").write_text("not a post")
    posts = tmp_path / "_posts"
    (posts / "sub").mkdir(parents=True)
    write_post(posts / "sub", "2025-01-02-b.md", "title: B\ndate: 2025-01-02 09:00:00 +0900\ncategories: [ニュース]")
    write_post(posts, "2025-01-01-a.md", "title: A\ndate: 2025-01-01 09:00:00 +0900")
    loaded = load_corpus(tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert isinstance(loaded, CorpusLoad) and loaded.malformed == []
    assert [(a.path, a.url) for a in loaded.articles] == [
        ("2025-01-01-a.md", "https://example.com/a/"),
        ("sub/2025-01-02-b.md", "https://example.com/ニュース/b/"),
    ]


def test_sample_corpus_loads(sample_corpus):
    loaded = load_corpus(sample_corpus, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert loaded.malformed == [] and loaded.articles
    for article in loaded.articles:
        assert article.url.startswith("https://example.com/")  # from the sample's _config.yml
        assert "関連記事" not in article.body
        assert_well_formed(article.body, article.headings)


# --- malformed files ----------------------------------------------------------------------------


def test_malformed_files_are_collected_not_raised(tmp_path):
    write_post(tmp_path, "2025-01-01-good.md", "title: 良い記事\ndate: 2025-01-01 09:00:00 +0900")
    (tmp_path / "2025-01-02-no-front-matter.md").write_text("本文だけの記事です。\n", encoding="utf-8")
    write_post(tmp_path, "2025-01-03-broken-yaml.md", "title: 壊れた\nbroken\ndate: 2025-01-03")
    write_post(tmp_path, "2025-01-04-bad-date.md", "title: 日付不正\ndate: yesterday")
    write_post(tmp_path, "2025-01-05-no-date.md", "title: 日付なし")
    write_post(tmp_path, "2025-01-06-no-title.md", "date: 2025-01-06 09:00:00 +0900")
    (tmp_path / "2025-01-07-shift-jis.md").write_bytes(
        "---\ntitle: 文字化け\ndate: 2025-01-07\n---\n本文です。\n".encode("shift_jis")
    )
    write_post(tmp_path, "2025-01-08-empty.md", "title: 空\ndate: 2025-01-08", "## 関連記事\n\n- [A](/a/)\n\n---END---\n")

    loaded = load_corpus(tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)

    assert [a.article_id for a in loaded.articles] == ["2025-01-01-good"]
    reasons = {error.path: error.reason for error in loaded.malformed}
    assert reasons == {
        "2025-01-02-no-front-matter.md": "no YAML front matter",
        "2025-01-03-broken-yaml.md": "broken YAML front matter: could not find expected ':' at line 4",
        "2025-01-04-bad-date.md": "bad date: 'yesterday'",
        "2025-01-05-no-date.md": "missing date",
        "2025-01-06-no-title.md": "missing title",
        "2025-01-07-shift-jis.md": reasons["2025-01-07-shift-jis.md"],
        "2025-01-08-empty.md": "empty body after cleaning",
    }
    assert reasons["2025-01-07-shift-jis.md"].startswith("not UTF-8: byte 0x")
    assert all(error.message.startswith(f"{error.path}: ") for error in loaded.malformed)


def test_a_file_over_the_size_limit_is_named_and_skipped_unread(tmp_path, monkeypatch):
    from rag import parts
    from rag.settings import Settings

    write_post(tmp_path, "2025-01-01-small.md", "title: 小さい\ndate: 2025-01-01")
    write_post(tmp_path, "2025-01-02-huge.md", "title: 大きい\ndate: 2025-01-02", "長い行" * 2000)
    monkeypatch.setenv("RAG_MAX_ARTICLE_BYTES", "4096")
    loaded = parts.corpus(Settings(corpus=tmp_path))
    assert [a.article_id for a in loaded.articles] == ["2025-01-01-small"]
    size = (tmp_path / "2025-01-02-huge.md").stat().st_size
    assert [error.message for error in loaded.malformed] == [
        f"2025-01-02-huge.md: {size} bytes, over the limit of 4096 (RAG_MAX_ARTICLE_BYTES)"]


def test_hostile_front_matter_is_named_and_skipped_quickly(tmp_path):
    """Probes of issue 16 that held, kept: a YAML alias bomb is not expanded, a NUL byte is a YAML error."""
    bomb = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8))
    write_post(tmp_path, "2025-01-01-bomb.md", f"{bomb}title: *i\ndate: 2025-01-01")
    (tmp_path / "2025-01-02-nul.md").write_bytes("---\ntitle: ヌル\x00文字\ndate: 2025-01-02\n---\n本文です。\n".encode())
    started = time.perf_counter()
    loaded = load_corpus(tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert time.perf_counter() - started < 2
    assert loaded.articles == []
    reasons = {error.path: error.reason for error in loaded.malformed}
    assert reasons["2025-01-01-bomb.md"] == "missing title"  # a list of lists is no title
    assert reasons["2025-01-02-nul.md"].startswith("broken YAML front matter: unacceptable character #x0000")


def test_symbolic_links_out_of_the_corpus_are_named_and_skipped(tmp_path):
    posts, elsewhere = tmp_path / "posts", tmp_path / "elsewhere"
    posts.mkdir()
    elsewhere.mkdir()
    write_post(posts, "2025-01-01-real.md", "title: 本物\ndate: 2025-01-01")
    secret = write_post(elsewhere, "secret.md", "title: 秘密\ndate: 2025-01-02", "外部の秘密です。\n")
    (posts / "2025-01-02-leak.md").symlink_to(secret)
    (posts / "2025-01-03-alias.md").symlink_to(posts / "2025-01-01-real.md")  # inside: an article like any
    (posts / "2025-01-04-dangling.md").symlink_to(posts / "gone.md")
    (posts / "linked-folder").symlink_to(elsewhere, target_is_directory=True)  # never walked into
    loaded = load_corpus(posts, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert [a.article_id for a in loaded.articles] == ["2025-01-01-real", "2025-01-03-alias"]
    assert {error.path: error.reason for error in loaded.malformed} == {
        "2025-01-02-leak.md": "symbolic link to a file outside the corpus folder",
        "2025-01-04-dangling.md": "symbolic link to nothing"}
    assert all("外部の秘密" not in a.body for a in loaded.articles)


@pytest.mark.parametrize("run", ["<!--", "{%", "{% raw %}", "`", "[cite:", "<script>", "<h1>", "{:", "<br"])
def test_cleaning_takes_linear_time_on_unclosed_markup(run):
    """100 kB of one unclosed opener: a lazy `.*?` rescanned the rest of the text from each (a minute or more)."""
    body = "本文です。" + run * (100_000 // len(run))
    started = time.perf_counter()
    clean_body(body, rules=RULES)
    assert time.perf_counter() - started < 1.5


def test_missing_or_empty_corpus_raises(tmp_path):
    with pytest.raises(CorpusNotFound, match="does not exist"):
        load_corpus(tmp_path / "nowhere", site_url=SITE, permalink=PERMALINK, rules=RULES)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(CorpusNotFound, match=r"holds no \.md files"):
        load_corpus(tmp_path, site_url=SITE, permalink=PERMALINK, rules=RULES)


# --- real articles from the shared corpus (skipped when it is absent) ---------------------------


def load_real(posts: Path, name: str) -> Article:
    article = load_article(posts / name, posts, site_url=SITE, permalink=PERMALINK, rules=RULES)
    assert_well_formed(article.body, article.headings)
    assert repeated_paragraphs(article) == []
    return article


def test_real_article_metadata_and_related_list(shared_posts):
    article = load_real(shared_posts, "2025-12-28-2-amazon-bedrockllm15.md")
    assert article.title == "2026年Amazon Bedrock、LLM15種追加：何が変わるのか？がもたらす産業構造の転換"
    assert article.date == datetime(2025, 12, 28, 8, 41, 23, tzinfo=timezone.utc)
    assert article.url == "https://ai-media.co.jp/2025/12/28/2-amazon-bedrockllm15/"
    assert article.categories == ("AI技術ガイド",)
    assert article.tags == ("Meta", "Amazon", "Anthropic", "LLM", "画像生成", "セキュリティ")
    assert (article.author, article.excerpt) == ("ALLFORCES編集部", "Amazon Bedrock、LLM15種追加：何が変わるのか？")
    assert "関連記事" not in article.body and "/2026/01/26/1-amazon-bedrock/" not in article.body
    assert article.body.endswith("君は、この変化を、どう捉えている？そして、これから何が起こるか、どんな未来が見えている？")


def test_real_article_with_jst_date_and_unquoted_category(shared_posts):
    article = load_real(shared_posts, "2026-02-13-2-eu-ai-law-enterprise-strategy-.md")
    assert article.date == datetime(2026, 2, 13, 18, 4, 39, tzinfo=JST)
    assert article.categories == ("AI導入戦略",)
    assert article.author == "ALLFORCES戦略コンサルタント"
    # The post repeats itself flattened onto one line, boilerplate included.
    assert "あわせて読みたい" not in article.body and "お問い合わせはこちら" not in article.body
    assert " ### " not in article.body and "](" not in article.body


def test_real_article_with_japanese_file_name(shared_posts):
    article = load_real(shared_posts, "2025-08-29-08-aiエーシェント本格普及.md")
    assert article.article_id == "2025-08-29-08-aiエーシェント本格普及"
    assert article.url == "https://ai-media.co.jp/2025/08/30/08-aiエーシェント本格普及/"  # as its canonical_url
    assert article.title.startswith("2026年AIエージェント本格普及")  # the file name lost its voiced marks
    assert [h.text for h in article.headings][:2] == ["概要と背景", "詳細な技術・ビジネス内容"]


def test_real_article_boilerplate_blocks(shared_posts):
    article = load_real(shared_posts, "2026-02-17-1-manufacturing-ai-agent-dx.md")
    for boilerplate in ("あわせて読みたい", "お問い合わせはこちら", "おすすめ書籍", "Amazonで詳しく見る", "アフィリエイト", "[cite"):
        assert boilerplate not in article.body
    # The citation marker goes, the sentence around it stays.
    assert "2030年には8270億ドルに達すると予測）とも連動しており" in article.body
    assert article.headings[-1].text == "製造業DXの未来は、AIエージェントと共に"


def test_real_article_with_end_markers_and_restarts(shared_posts):
    article = load_real(shared_posts, "2026-02-12-1-amazonai25.md")
    for boilerplate in ("---END---", "AI導入戦略の策定を支援します", "無料相談", "アソシエイト", "関連記事"):
        assert boilerplate not in article.body
    assert article.body.count("既存の記事でも触れましたが、AIとロボットが効率を上げれば上げるほど") == 1
    assert "...現場のマネジメント層にも新たな役割を求めるはずです。" not in article.body


def test_real_article_with_leaked_prompt(shared_posts):
    article = load_real(shared_posts, "2026-02-21-3-manufacturing-dx-ai-agents-eu-.md")
    for leaked in ("【既存の記事の最後の部分】", "【要求事項】", "【文体の指示】", "フロントマターは追加しない", "---END---"):
        assert leaked not in article.body


def test_real_article_with_merge_conflict(shared_posts):
    article = load_real(shared_posts, "2026-02-24-3-eu-ai-law-enterprise-strategy.md")
    assert not re.search(r"^(<<<<<<<|=======|>>>>>>>)", article.body, re.M)
    assert "【既存の記事の最後の部分から続く部分】" not in article.body


def test_real_article_with_english_quota_error(shared_posts):
    article = load_real(shared_posts, "2025-11-20-1-i-apologize-but-i-am-unable-to-perform.md")
    assert article.title == "I apologize, but I am unable to perform ？"  # the title is the artefact itself: kept
    assert "apologize" not in article.body and "quota" not in article.body
    assert article.body.startswith("最新の決算データや市場の動向をリアルタイムで確認できないのは残念ですが")


def test_real_article_with_japanese_refusal(shared_posts):
    article = load_real(shared_posts, "2025-11-25-1-ai-article-update.md")
    assert "申し訳ありません" not in article.body and "承知いたしました" not in article.body
    assert "Gemini" in article.body


def test_real_article_repeating_its_opening(shared_posts):
    raw = (shared_posts / "2026-02-17-2-openai-100b-funding-gpt5-codex.md").read_text(encoding="utf-8")
    opening = raw.split("---\n", 2)[2].strip().split("\n\n")[0]
    assert raw.count(opening) >= 5
    article = load_real(shared_posts, "2026-02-17-2-openai-100b-funding-gpt5-codex.md")
    assert article.body.startswith(opening) and article.body.count(opening) == 1


def test_real_article_with_tables_and_code(shared_posts):
    article = load_real(shared_posts, "2026-04-19-1700-claude-api-guide.md")
    assert "import anthropic" in article.body  # fenced code kept literally
    assert "```" not in article.body and "|---" not in article.body


@pytest.mark.slow
def test_whole_shared_corpus(shared_posts):
    started = time.perf_counter()
    loaded = load_corpus(shared_posts, site_url=SITE, permalink=PERMALINK, rules=RULES)
    elapsed = time.perf_counter() - started

    assert [error.message for error in loaded.malformed] == []
    assert len(loaded.articles) == 2513
    assert len({a.article_id for a in loaded.articles}) == 2513
    leftovers = re.compile(
        r"^関連記事$|^あわせて読みたい$|おすすめ書籍|---END---|【既存の記事の最後の部分|\[cite|\[参照データ|utm_medium|\{:|^<<<<<<<",
        re.M,
    )
    for article in loaded.articles:
        assert article.body and article.title and article.date.tzinfo is not None
        assert article.url.startswith(f"{SITE}/") and article.url.endswith("/")
        assert not leftovers.search(article.body), (article.path, leftovers.search(article.body))
        assert repeated_paragraphs(article) == [], article.path
        assert_well_formed(article.body, article.headings)
    assert elapsed < 60, f"loading the shared corpus took {elapsed:.1f} s"
