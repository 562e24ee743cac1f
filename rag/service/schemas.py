"""The request models of `POST /ask` and `POST /feedback` (strict: unknown fields and loose types are 422) and
their OpenAPI examples."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

from rag.engine import MAX_QUESTION_CHARS, AskOptions, Turn, text_problem
from rag.querylog import MAX_COMMENT_CHARS
from rag.types import Filters

MAX_HISTORY_TURNS = 40
MAX_TURN_CHARS = 10_000


def _iso_date(value: Any) -> Any:
    if value is None or isinstance(value, date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)")


IsoDate = Annotated[date | None, BeforeValidator(_iso_date)]


def _text(value: str) -> str:
    if problem := text_problem(value):
        raise ValueError(problem)
    return value


# Every string of a request: JSON may carry a lone surrogate (`"\ud800"`), which no later step can encode.
Text = Annotated[StrictStr, AfterValidator(_text)]


class FiltersIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    category: Text | None = Field(None, description="Only articles with this category.", examples=["自然と地理"])
    tag: Text | None = Field(None, description="Only articles with this tag.", examples=["将棋"])
    date_from: IsoDate = Field(None, description="Only articles dated on or after this day (YYYY-MM-DD).",
                               examples=["2025-01-01"])
    date_to: IsoDate = Field(None, description="Only articles dated on or before this day (YYYY-MM-DD).",
                             examples=["2025-12-31"])

    def to_filters(self) -> Filters:
        return Filters(self.category, self.tag, self.date_from, self.date_to)


class TurnIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["user", "assistant"]
    content: Text = Field(max_length=MAX_TURN_CHARS)
    articles: list[Annotated[Text, Field(max_length=200)]] = Field(
        default_factory=list, max_length=20,
        description="An assistant turn: the article ids its answer cited (a follow-up is about them).")


class AskRequest(BaseModel):
    """A question in Japanese, with optional retrieval depth, filters and the earlier conversation."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"question": "東京スカイツリーの高さは？"},
        {"question": "富士山の標高は？", "k": 5, "filters": {"category": "自然と地理", "date_from": "2025-01-01"}},
        {"question": "それはいつ開業した？", "history": [
            {"role": "user", "content": "東京スカイツリーについて教えて"},
            {"role": "assistant", "content": "東京スカイツリーは、東京都墨田区にある電波塔です。[1]",
             "articles": ["2025-01-10-tokyo-skytree"]}]},
    ]})

    question: Text = Field(
        description=f"The question (1 to {MAX_QUESTION_CHARS} characters after trimming).",
        examples=["東京スカイツリーの高さは？"])
    k: StrictInt | None = Field(None, ge=1, le=20, description="Passages to retrieve (default: the RAG_K setting).",
                                examples=[5])
    filters: FiltersIn | None = Field(None, description="Restrict the articles searched.")
    history: list[TurnIn] = Field(
        default_factory=list, max_length=MAX_HISTORY_TURNS,
        description="Earlier turns of the conversation, oldest first (user questions and assistant answers).")
    generator: Text | None = Field(None, description="Answer generator (default: the RAG_GENERATOR setting).",
                                        examples=["extractive"])
    article: Text | None = Field(None, max_length=200, description="The article id of the page the reader is on "
                                 "(the widget on a post): a question that names nothing new quotes it first.")

    def options(self) -> AskOptions:
        return AskOptions(k=self.k, filters=self.filters.to_filters() if self.filters else Filters(),
                          generator=self.generator, article=self.article,
                          history=tuple(Turn(t.role, t.content, tuple(t.articles)) for t in self.history))


ASK_EXAMPLES = {
    "simple": {"summary": "質問だけ", "value": {"question": "東京スカイツリーの高さは？"}},
    "filters": {"summary": "カテゴリと期間で絞り込む", "value": {
        "question": "富士山の標高は？", "k": 5,
        "filters": {"category": "自然と地理", "date_from": "2025-01-01", "date_to": "2025-12-31"}}},
    "follow-up": {"summary": "会話の続き（履歴つき）", "value": {
        "question": "それはいつ開業した？",
        "history": [{"role": "user", "content": "東京スカイツリーについて教えて"},
                    {"role": "assistant", "content": "東京スカイツリーは、東京都墨田区にある電波塔です。[1]"}]}},
}


class FeedbackRequest(BaseModel):
    """A reader's rating of an answer: the `answer_id` the answer carried, up or down, and a short comment."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [
        {"answer_id": "q8VxJb0tW2mZk3Lp", "rating": "up"},
        {"answer_id": "q8VxJb0tW2mZk3Lp", "rating": "down", "comment": "開業日ではなく着工日が答えになっていました"},
    ]})

    answer_id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = Field(
        description="The `answer_id` of the answer rated.")
    rating: Literal["up", "down"] = Field(description="`up` (👍) or `down` (👎).")
    comment: Annotated[StrictStr, Field(max_length=MAX_COMMENT_CHARS), AfterValidator(_text)] | None = Field(
        None, description=f"What was wrong or right (up to {MAX_COMMENT_CHARS} characters).")
