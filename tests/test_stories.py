"""What a reader saw, on a small index of real shared articles: a follow-up keeps its topic, a
question about one subject is not answered from another's article, and an unknown product abstains."""

from __future__ import annotations

import shutil

import pytest

from rag.engine import AskOptions, Engine, Turn
from rag.settings import Settings
from tests.conftest import PROJECT_ROOT, build_sample_index

pytestmark = pytest.mark.slow  # indexes 22 real articles

STORY_ARTICLES = [
    "2025-11-15-2-moonshot-aikimi-k2-thinking.md", "2025-11-18-1-nuragridkimi-k2-thinking-zdr.md",
    "2026-02-06-1-deepmindalphafold-4.md",  # 「DeepMindが「AlphaFold」を発表したのが2018年」: the follow-up's old wrong answer
    "2025-11-05-2-msuaeaiai.md", "2025-09-21-1-ms10ai.md",  # Microsoft in the UAE, and in Wisconsin
    "2025-11-28-2-alibabaquarkai.md", "2025-11-07-2-alibabaai.md",  # Quark glasses on sale
    "2025-12-06-2-gpt-52openai.md", "2025-11-10-2-gpt-5.md",  # GPT-5.x, never GPT-6
    "2025-10-27-1-nttugoaipf.md",  # robots with tsuzumi: not ALSOK's
]
# Articles on other subjects, every 150th file of the corpus: the noise a real index has.
FILLER = ["2025-09-13-3-oracleopenai.md", "2025-09-25-2-aiasicgpu.md", "2025-10-06-2-aieu.md",
          "2025-10-27-3-nexcomai.md", "2025-11-09-2-kabilioai400.md", "2025-11-23-1-google-gemini-3-pro.md",
          "2025-12-16-2-ai-article-update.md", "2025-12-28-2-amazon-bedrockllm15.md", "2026-01-11-1-xrai.md",
          "2026-01-25-3-deepmindai.md", "2026-02-08-3-ai95.md", "2026-03-21-2-hyperscaler-ai-investment-stra.md"]


@pytest.fixture(scope="module")
def stories(shared_posts, embedder, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("stories") / "_posts"
    corpus.mkdir()
    for name in STORY_ARTICLES + FILLER:
        shutil.copy(shared_posts / name, corpus / name)
    index = corpus.parent / "index"
    build_sample_index(corpus, index, embedder)
    engine = Engine(Settings(index=index, model=str(PROJECT_ROOT / "models/multilingual-e5-small")), embedder)
    yield engine
    engine.close()


def test_a_follow_up_keeps_its_topic(stories):
    first = stories.ask("Kimi K2 ThinkingはBrowseCompで何%を記録した？")
    assert not first.abstained and "kimi" in first.citations[0].article_id
    history = (Turn("user", first.question), Turn("assistant", first.answer))
    follow_up = stories.ask("それはいつ発表された？", AskOptions(history=history))
    assert "AlphaFold" not in follow_up.answer
    assert follow_up.abstained or all("kimi" in c.article_id for c in follow_up.citations), follow_up.answer


def test_an_answer_about_another_subject_is_not_given(stories):
    answer = stories.ask("MicrosoftのUAE投資額は？")
    assert not answer.abstained and answer.citations[0].article_id == "2025-11-05-2-msuaeaiai"
    assert "33億ドル" not in answer.answer


def test_a_product_the_articles_never_name_abstains(stories):
    answer = stories.ask("GPT-6はいつ発売される？")
    assert answer.abstained and answer.related, answer.answer
    assert stories.ask("ALSOKが警備ロボットに導入した生成AIの名前は何ですか？").abstained
