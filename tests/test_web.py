"""The chat page in headless Chromium (Debian's /usr/bin/chromium driven by Playwright) against the real
service: streaming answers, citation cards, feedback, follow-ups, abstention, escaping, small screens, keyboard."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

CHROMIUM = Path(os.environ.get("RAG_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
AXE = PROJECT_ROOT / ".cache/axe/node_modules/axe-core/axe.min.js"  # `make axe` (npm), a dependency of make test
ABSTAIN_TEXT = "記事の中に、この質問に答える情報は見つかりませんでした。"
TIMEOUT_MS = 30_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: `make browser` installs Debian's chromium (make test does it)")
    from playwright.sync_api import sync_playwright

    # Playwright gives every launch a fresh temporary profile (its own --user-data-dir).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def open_page(browser, live_service):
    """open_page(width, height) -> a page on the chat page; any JavaScript dialog or page error fails the test."""
    contexts, problems = [], []

    def open_(width: int = 1280, height: int = 860, url: str | None = None, bypass_csp: bool = False):
        context = browser.new_context(viewport={"width": width, "height": height}, locale="ja-JP", bypass_csp=bypass_csp)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.goto((url or live_service.url) + "/")
        page.wait_for_selector("#f-category option >> nth=1", state="attached")  # facets loaded
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def ask(page, question: str, nth: int):
    """Type the question, press Enter, wait for answer number `nth` (1-based) to finish streaming."""
    page.fill("#question", question)
    page.press("#question", "Enter")
    return finished_answer(page, nth)


@pytest.fixture(scope="module")
def default_llm_down(sample_index, embedder):
    """A service whose default generator is an LLM that cannot be reached."""
    from rag.engine import Engine
    from rag.service import create_app
    from tests.conftest import LiveServer, service_settings

    settings = service_settings(sample_index[0], generator="openai", llm_base_url="http://127.0.0.1:9/v1")
    engine = Engine(settings, embedder)
    with LiveServer(create_app(settings, engine=engine)) as server:
        yield server
    engine.close()


def axe_problems(frame, include_frames: bool = True) -> list[str]:
    """axe-core's serious and critical violations in `frame` (a page or a frame; open shadow roots included), one
    line each. The page's context must bypass its Content-Security-Policy, since axe is injected as a script."""
    if not AXE.is_file():
        pytest.skip(f"{AXE.relative_to(PROJECT_ROOT)} is absent: `make axe` installs axe-core with npm (make test does it)")
    frame.add_script_tag(path=str(AXE))
    results = frame.evaluate("options => axe.run(document, options)",
                             {"resultTypes": ["violations"], "iframes": include_frames})
    return [f"{v['id']} ({v['impact']}): {v['help']}: {[n['target'] for n in v['nodes']][:5]}"
            for v in results["violations"] if v["impact"] in ("serious", "critical")]


def finished_answer(page, nth: int):
    answer = page.locator("article.msg.assistant").nth(nth - 1)
    answer.wait_for()
    page.wait_for_function(
        "n => { const a = document.querySelectorAll('article.msg.assistant')[n - 1];"
        " return a && !a.hasAttribute('aria-busy'); }", arg=nth)
    return answer


def test_question_streams_an_answer_with_citation_cards(open_page, live_service):
    page = open_page()
    seen = []
    page.on("request", lambda r: seen.append(r) if r.url.endswith("/ask") else None)
    answer = ask(page, "東京スカイツリーの高さは？", 1)
    assert seen[0].headers["accept"] == "text/event-stream"
    assert "634メートル" in answer.locator(".answer-text").inner_text()
    short = answer.locator(".short-answer")  # the short answer first, with the citation it is quoted from
    assert short.locator("strong").inner_text() == "634メートル" and short.locator("button.short-cite").is_visible()
    assert answer.locator(".loading").is_hidden() and answer.locator(".error-box").count() == 0
    cards = answer.locator("details.card")  # one card per cited article
    cited = answer.evaluate("a => new Set([...a.querySelectorAll('button.cite')].map(b => b.getAttribute('aria-controls'))).size")
    assert cards.count() >= 1 and cards.count() == cited
    first = cards.first
    assert first.get_attribute("open") is None and first.locator(".passage").first.is_hidden()
    assert "東京スカイツリー" in first.locator("summary").inner_text()
    thumb = first.locator("summary img.thumb")  # the post's image, through the service
    thumb.wait_for()
    assert thumb.get_attribute("src") == "/api/articles/2025-07-18-tokyo-skytree/image" and thumb.get_attribute("alt") == ""
    assert thumb.evaluate("img => img.complete && img.naturalWidth") == 600 and thumb.bounding_box()["width"] == 72

    answer.locator("button.cite", has_text="[1]").click()
    assert first.get_attribute("open") == "" and "flash" in (first.get_attribute("class") or "")
    marks = first.locator(".passage mark")  # every quote from this article, marked in its passage
    assert marks.first.is_visible()
    assert all(mark.inner_text() in answer.locator(".answer-text").inner_text() for mark in marks.all())
    assert "科学技術" in first.locator(".meta").inner_text() and "2025年7月18日" in first.locator("summary").inner_text()
    links = first.locator(".links a")
    assert links.nth(0).get_attribute("href") == "https://example.com/2025/07/18/tokyo-skytree/"
    assert re.fullmatch(r"/articles/2025-07-18-tokyo-skytree\?q=.+#quote", links.nth(1).get_attribute("href"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat.png"), full_page=True)

    rated = []  # 👎 posts the answer's id to /feedback, and the query log stores the rating
    page.on("request", lambda r: rated.append(r.post_data_json) if r.url.endswith("/feedback") else None)
    down = answer.locator("button.rate[data-rating=down]")
    assert down.get_attribute("aria-label") == "役に立たなかった" and down.bounding_box()["height"] >= 24
    down.click()
    assert answer.locator(".feedback [role=status]").inner_text() == "評価ありがとうございました。"
    answer.locator(".feedback textarea").fill("開業日も知りたかった")  # an optional comment after 👎
    answer.locator(".feedback-comment button").click()
    answer.locator(".feedback [role=status]").wait_for()
    page.wait_for_function("() => !document.querySelector('.feedback textarea')")
    with sqlite3.connect(live_service.app.state.answers.config.path) as db:
        assert db.execute("SELECT q.question, f.rating, f.comment FROM feedback f JOIN questions q USING (answer_id) "
                          "WHERE answer_id = ?", (rated[0]["answer_id"],)).fetchone() == (
            "東京スカイツリーの高さは？", "down", "開業日も知りたかった")

    with page.context.expect_page() as article_tab:  # the offline article page, quote highlighted
        links.nth(1).click()
    article = article_tab.value
    article.wait_for_load_state()
    assert article.locator("mark").first.inner_text() == marks.first.inner_text()  # the card's first quote
    assert article.locator("h1").inner_text().startswith("東京スカイツリー")


def test_a_card_without_an_image_looks_as_before(open_page):
    page = open_page()
    seen = []
    page.on("request", lambda r: seen.append(r.url) if "/image" in r.url else None)
    answer = ask(page, "富士山の標高は？", 1)
    assert answer.locator("details.card").count() >= 1 and answer.locator("img").count() == 0
    assert seen == []  # no article of this answer has an image: nothing is requested


def test_the_chat_page_passes_axe(open_page):
    page = open_page(bypass_csp=True)
    assert axe_problems(page) == []  # the empty page, with its suggestions
    answer = ask(page, "東京スカイツリーの高さは？", 1)
    answer.locator("button.cite").first.click()  # an open card, its quote marked
    answer.locator("button.rate[data-rating=down]").click()  # the comment box after 👎
    answer.locator(".feedback textarea").wait_for()
    assert axe_problems(page) == []
    page.emulate_media(color_scheme="dark")
    assert axe_problems(page) == []


def test_follow_up_question_uses_the_conversation(open_page):
    page = open_page()
    bodies = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/ask") else None)
    ask(page, "東京スカイツリーについて教えて", 1)
    answer = ask(page, "それはいつ開業した？", 2)
    assert bodies[0]["history"] == []
    assert [t["role"] for t in bodies[1]["history"]] == ["user", "assistant"]
    assert bodies[1]["history"][0]["content"] == "東京スカイツリーについて教えて"
    assert "2012年5月22日" in answer.locator(".answer-text").inner_text()
    assert "東京スカイツリー" in answer.locator("details.card summary").first.inner_text()

    page.click("#new-chat")  # a new conversation forgets the history
    assert page.locator("article.msg").count() == 0
    ask(page, "富士山の標高は？", 1)
    assert bodies[2]["history"] == []


def test_corpus_text_is_escaped_never_run(open_page):
    page = open_page()
    answer = ask(page, "コメント欄に書き込まれる文字列の例は？", 1)
    assert "<script>alert(1)</script>" in answer.locator(".answer-text").inner_text()
    card = answer.locator("details.card").first
    assert "ウェブセキュリティ入門" in card.locator("summary").inner_text()
    answer.locator("button.cite").first.click()
    assert card.locator(".passage mark").inner_text().startswith("例えば、コメント欄に <script>alert(1)</script>")
    second = ask(page, "画像の読み込みに失敗したときに動くイベントを悪用する例は？", 2)
    assert "<img src=x onerror=alert(1)>" in second.locator(".answer-text").inner_text()
    second.locator("button.cite").first.click()
    assert "<img src=x onerror=alert(1)>" in second.locator("details.card .passage mark").first.inner_text()
    assert page.locator("#log script, #log img").count() == 0

    article = card.locator(".links a").nth(1).get_attribute("href")
    page.goto(page.url.rstrip("/") + article)
    assert "<script>alert(1)</script>" in page.locator("mark").inner_text()
    assert "<img src=x onerror=alert(1)>" in page.locator(".article-body").inner_text()
    assert page.locator("main script, main img").count() == 0
    page.wait_for_timeout(300)  # give an injected handler time to fire: open_page fails on any dialog


def test_abstention_is_clearly_marked(open_page):
    page = open_page()
    page.click("#filters summary")
    page.fill("#f-from", "2030-01-01")  # later than every article: nothing can answer
    assert page.locator("#filter-count").inner_text() == "（1件）"
    answer = ask(page, "富士山の標高は？", 1)
    assert "abstained" in answer.get_attribute("class")
    assert answer.locator(".abstain-label").inner_text() == "回答なし"
    assert ABSTAIN_TEXT in answer.locator(".answer-text").inner_text()
    assert answer.locator(".notice").inner_text() == "注: 絞り込みの条件に合う記事がありません。"
    assert answer.locator("details.card").count() == 0
    assert page.locator(".abstained .bubble").evaluate("e => getComputedStyle(e).borderLeftWidth") == "6px"
    # an off-topic question (as in test_answer.py): abstains and lists the closest articles
    page.click("#f-clear")
    off_topic = ask(page, "火星の首都の人口は何人ですか？", 2)
    assert "abstained" in off_topic.get_attribute("class")
    assert off_topic.locator(".related h3").inner_text() == "近い内容の記事"
    assert off_topic.locator(".related li a").first.get_attribute("href").startswith("https://example.com/")


def test_filters_come_from_the_facets(open_page):
    page = open_page()
    options = page.locator("#f-category option").all_text_contents()
    assert options[0] == "すべて" and {"文化", "科学技術", "自然と地理"} <= set(options)
    assert page.get_attribute("#f-from", "min") == "2025-01-15" and page.get_attribute("#f-to", "max") == "2026-03-10"
    bodies = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/ask") else None)
    page.click("#filters summary")
    page.select_option("#f-category", "文化")
    answer = ask(page, "日本の歴史について教えて", 1)
    assert bodies[0]["filters"] == {"category": "文化"}
    for card in answer.locator("details.card").all():
        card.locator("summary").click()
        assert "文化" in card.locator(".meta").inner_text()


def test_errors_and_loading_are_visible(open_page):
    page = open_page()
    page.click("#send")  # nothing typed
    assert page.locator("#form-error").inner_text() == "質問を入力してください。"
    assert page.locator("article.msg").count() == 0
    # the textarea stops at 1000 characters; setting the value directly reaches the server's check
    page.locator("#question").evaluate("(e) => { e.value = 'あ'.repeat(1001); }")
    page.press("#question", "Enter")
    error = page.locator("article.msg.assistant .error-box")
    error.wait_for()
    assert error.inner_text().startswith("エラー: この質問は受け付けられませんでした")
    assert "characters" not in error.inner_text() and error.get_attribute("role") == "alert"  # Japanese only
    assert page.locator("article.msg.assistant .bubble").is_hidden()  # no empty answer bubble
    assert page.input_value("#question") == "あ" * 1001  # the question is kept, to fix or send again
    assert error.locator("button.retry").is_visible()
    page.fill("#question", "")
    # the loading state, held open by a delayed response
    page.route("**/ask", lambda route: (page.wait_for_timeout(600), route.continue_()))
    page.fill("#question", "将棋盤のマスの数は？")
    page.press("#question", "Enter")
    loading = page.locator("article.msg.assistant").nth(1).locator(".loading")
    assert loading.is_visible() and "回答を作成中…" in loading.inner_text()
    assert page.locator("#send").is_disabled()
    finished_answer(page, 2)
    assert loading.is_hidden() and page.locator("#send").is_enabled()


def test_small_screen_has_no_horizontal_scroll(open_page):
    page = open_page(375, 740)
    assert page.locator("#question").is_visible() and page.locator("#send").is_visible()
    box = page.locator("#send").bounding_box()
    assert box["x"] + box["width"] <= 375
    ask(page, "コメント欄に書き込まれる文字列の例は？", 1)
    page.locator("button.cite").first.click()
    answer = ask(page, "東海道新幹線が開業したのはいつ？", 2)
    answer.locator("button.cite").first.click()
    widths = page.evaluate("""() => [document.documentElement.scrollWidth, document.body.scrollWidth,
                                      document.getElementById('main').scrollWidth]""")
    assert max(widths) <= 375, widths
    assert page.locator("#question").is_visible()
    for button in page.locator("button.cite").all():  # WCAG 2.2 target size
        box = button.bounding_box()
        assert box["width"] >= 24 and box["height"] >= 24, box
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-375.png"))


def test_keyboard_only(open_page):
    page = open_page()
    assert page.evaluate("document.activeElement.id") == "question"  # focused on load
    page.keyboard.type("将棋盤の")
    page.keyboard.press("Shift+Enter")  # a newline, not a send
    page.keyboard.type("マスの数は？")
    assert page.input_value("#question") == "将棋盤の\nマスの数は？"
    # Enter that confirms an IME conversion does not send
    page.locator("#question").evaluate("""e => e.dispatchEvent(new KeyboardEvent('keydown',
        {key: 'Enter', keyCode: 229, isComposing: true, bubbles: true, cancelable: true}))""")
    assert page.locator("article.msg").count() == 0
    page.keyboard.press("Enter")
    answer = finished_answer(page, 1)
    assert "81マス" in answer.locator(".answer-text").inner_text()
    assert page.evaluate("document.activeElement.id") == "question"  # ready for the next question

    # the citation buttons follow the top bar in the tab order; Enter on [1] opens its card
    page.focus("#new-chat")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "[1]"
    page.keyboard.press("Enter")
    card = answer.locator("details.card").first
    assert card.get_attribute("open") == "" and card.locator(".passage").is_visible()
    assert page.evaluate("document.activeElement.tagName") == "SUMMARY"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible


def test_the_page_switches_to_the_llm_backend(open_page, llm_service):
    """One LLM answer through the protocol-faithful test server: streamed, then checked citations."""
    page = open_page(url=llm_service.url)
    choice = page.locator("#generator-choice")
    choice.wait_for()
    assert choice.is_visible()
    assert page.locator("#generator option").all_inner_texts() == ["記事の文を引用（抜粋）", "LLMで文章にする"]
    bodies = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/ask") else None)
    page.select_option("#generator", "openai")
    answer = ask(page, "富士山の標高は何メートル？", 1)
    assert bodies[0]["generator"] == "openai"
    text = answer.locator(".answer-text").inner_text()
    assert text.startswith("資料によると") and "[1]" in text
    cards = answer.locator("details.card")  # only the cited passages remain after the check
    assert 1 <= cards.count() == answer.locator("button.cite").count() < 5
    answer.locator("button.cite", has_text="[1]").click()
    assert cards.first.locator(".passage mark").is_visible()


def test_an_llm_fallback_is_explained_on_the_page(open_page, default_llm_down):
    page = open_page(url=default_llm_down.url)
    answer = ask(page, "富士山の標高は何メートル？", 1)
    assert "3,776" in answer.locator(".answer-text").inner_text()
    assert "LLMが応答できなかったため" in answer.locator(".notice").inner_text()


def test_the_api_docs_render_offline_under_their_policy(browser, live_service):
    """Every request the docs make goes to this server, and the Content-Security-Policy blocks none of them."""
    rendered = ".swagger-ui .info .title"
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    elsewhere, blocked = [], []
    page.on("request", lambda r: elsewhere.append(r.url) if not r.url.startswith(live_service.url) and
            not r.url.startswith("data:") else None)
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(live_service.url + "/docs")
    page.wait_for_selector(rendered)
    assert "jrag" in page.locator(rendered).first.inner_text()
    context.close()
    assert elsewhere == [] and blocked == []


def test_dark_mode_follows_the_system(open_page):
    page = open_page()
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 21, 27)", background
    assert page.locator("link[rel=icon]").get_attribute("href") == "/static/favicon.svg"



def test_the_conversation_is_kept_across_a_reload_until_cleared(open_page):
    page = open_page()
    bodies = []
    page.on("request", lambda r: bodies.append(r.post_data_json) if r.url.endswith("/ask") else None)
    first = ask(page, "東京スカイツリーについて教えて", 1).locator(".answer-text").inner_text()
    page.reload()
    restored = finished_answer(page, 1)
    assert restored.locator(".answer-text").inner_text() == first and restored.locator("details.card").count() >= 1
    assert page.locator("article.msg.user").inner_text() == "東京スカイツリーについて教えて"
    ask(page, "それはいつ開業した？", 2)
    assert [t["role"] for t in bodies[-1]["history"]] == ["user", "assistant"]  # the restored turn is history
    assert bodies[-1]["history"][1]["articles"]  # with the articles its answer cited
    page.click("#new-chat")
    page.reload()
    page.locator("#question").wait_for()
    assert page.locator("article.msg").count() == 0


def test_the_empty_page_suggests_questions_about_the_newest_articles(open_page):
    page = open_page()
    suggestion = page.locator("#welcome button.suggestion").first
    suggestion.wait_for()
    question = suggestion.inner_text()
    assert question.startswith("「") and question.endswith("」について教えて")
    suggestion.click()
    answer = finished_answer(page, 1)
    assert page.locator("article.msg.user").inner_text() == question
    assert not answer.get_attribute("class").endswith("abstained") and answer.locator("details.card").count() >= 1


def test_an_answer_can_be_copied_and_a_stream_stopped(open_page):
    page = open_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    answer = ask(page, "将棋盤のマスの数は？", 1)
    answer.locator("button.copy").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith(answer.locator(".answer-text").inner_text()) and "出典:\n[1] " in copied
    # a slow answer, stopped while it is awaited
    page.route("**/ask", lambda route: (page.wait_for_timeout(1500), route.continue_()))
    page.fill("#question", "東京スカイツリーの高さは？")
    page.press("#question", "Enter")
    page.locator("#stop").click()
    stopped = page.locator("article.msg.assistant").nth(1)
    stopped.locator(".notice").wait_for()
    assert "停止しました" in stopped.inner_text() and stopped.locator(".error-box").count() == 0
    assert page.locator("#send").is_enabled() and page.locator("#stop").is_hidden()
    page.unroute_all(behavior="wait")  # the held request's handler finishes before the page closes



# ---------------------------------------------------------------- the widget on a blog page of another origin

BLOG_PAGE = """<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>ブログの記事</title>
<style>button {{ background: red !important; font-size: 40px !important; }}</style></head>
<body><h1>ブログの記事</h1><p>本文です。</p>
<script src="{service}/widget.js" data-article="2025-07-18-tokyo-skytree" async></script></body></html>"""


@pytest.fixture(scope="module")
def blog_with_widget(sample_index, engine, tmp_path_factory):
    """A static blog page served on another port (another origin) carrying the widget's script tag, and the
    service with that origin in RAG_ALLOWED_ORIGINS; yields (blog URL, service URL)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from rag.service import create_app
    from tests.conftest import LiveServer, service_settings

    site = tmp_path_factory.mktemp("blog")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(site))
    blog = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=blog.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{blog.server_port}"
    settings = service_settings(sample_index[0], allowed_origins=origin)
    with LiveServer(create_app(settings, engine=engine), settings) as service:
        (site / "index.html").write_text(BLOG_PAGE.format(service=service.url), encoding="utf-8")
        yield origin + "/", service.url
    blog.shutdown()


def test_the_widget_opens_on_a_blog_page_and_answers_there(browser, blog_with_widget):
    import httpx

    blog_url, service_url = blog_with_widget
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="ja-JP")
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(blog_url)
        launcher = page.locator("#jrag-widget button.launcher")  # inside its shadow root
        launcher.wait_for()
        # the blog's `button { background: red !important }` does not reach into the shadow root
        assert launcher.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(31, 95, 191)"
        assert launcher.get_attribute("aria-expanded") == "false"
        launcher.click()
        assert launcher.get_attribute("aria-expanded") == "true"
        chat = page.frame_locator("#jrag-widget iframe")
        # on this post (data-article), the first suggestion is about it, and its questions prefer it
        assert chat.locator("button.suggestion").first.inner_text().startswith("「東京スカイツリー")
        chat.locator("#question").fill("それはいつ開業した？")
        chat.locator("#question").press("Enter")
        answer = chat.locator("article.msg.assistant").first
        answer.locator(".short-answer").wait_for()
        assert "2012年5月22日" in answer.locator(".answer-text").inner_text()
        assert answer.locator("details.card").count() >= 1
        thumb = answer.locator("details.card img.thumb").first  # the post's image, from the service, not the blog
        thumb.wait_for()
        assert thumb.evaluate("img => img.currentSrc").startswith(service_url + "/api/articles/")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "widget.png"))
        page.set_viewport_size({"width": 375, "height": 740})  # full screen on a phone
        box = page.locator("#jrag-widget .panel").bounding_box()
        assert (box["x"], box["y"], box["width"], box["height"]) == (0, 0, 375, 740)
        page.screenshot(path=str(ARTIFACTS / "widget-375.png"))
        page.locator("#jrag-widget button.close").click()
        assert page.locator("#jrag-widget .panel").is_hidden() and launcher.get_attribute("aria-expanded") == "false"
    finally:
        context.close()
    # only the listed origin may frame the chat page
    policy = httpx.get(service_url + "/?embed=1").headers["content-security-policy"]
    assert f"frame-ancestors {blog_url.rstrip('/')}" in policy


def test_the_widget_passes_axe_open_inside_its_shadow_root(browser, blog_with_widget):
    blog_url, _ = blog_with_widget
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="ja-JP", bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(blog_url)
        launcher = page.locator("#jrag-widget button.launcher")
        launcher.wait_for()
        assert axe_problems(page, include_frames=False) == []  # the launcher, closed
        launcher.click()
        chat = page.locator("#jrag-widget iframe").element_handle().content_frame()
        chat.locator("button.suggestion").first.wait_for()
        chat.locator("#question").fill("東京スカイツリーの高さは？")
        chat.locator("#question").press("Enter")
        chat.locator("article.msg.assistant:not([aria-busy]) details.card").first.wait_for()
        chat.locator("button.cite").first.click()
        # the blog page with the open panel (its shadow root), then the chat page the panel frames
        assert axe_problems(page, include_frames=False) == []
        assert axe_problems(chat) == []
        page.set_viewport_size({"width": 375, "height": 740})  # the panel full screen on a phone
        assert axe_problems(page, include_frames=False) == [] and axe_problems(chat) == []
    finally:
        context.close()
