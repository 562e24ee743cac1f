"""The `openai` generator: fluent answers from any server speaking the OpenAI Chat Completions protocol.

Ollama, llama.cpp's server, llama-cpp-python, vLLM and hosted APIs all do. The model sees the retrieved
passages numbered `[1]`…`[n]` with title and date (prompts/grounded.ja.j2) and must cite them. Its answer
is then checked, because small models cite loosely:
- markers that point to no passage are removed, the rest renumbered in order of first use;
- each cited passage is quoted by its sentence that shares the most words with the claim citing it;
- an answer that cites nothing, or that says the passages lack the answer, abstains.
Any fault of the backend (down, refusing, slow, malformed) yields the extractive answer with a notice,
logged once per incident and never with the API key.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import httpx
import jinja2
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from rag.chunking import split_sentences
from rag.errors import GeneratorNotConfigured
from rag.generators.base import ABSTAIN_TEXT, Draft, DraftStream, Evidence, GeneratorDeps, GeneratorSettings, Quote
from rag.generators.extractive import ExtractiveGenerator, excerpts
from rag.generators.registry import create_generator, register
from rag.japanese import tokenize
from rag.question import Question
from rag.types import Hit, Notice, NoticeCode

log = logging.getLogger(__name__)

DEFAULT_PROMPT = Path(__file__).parent / "prompts" / "grounded.ja.j2"
# [1], [1][2], [1, 3], ［１］, 【1】: what models write when asked for [n]
MARKER = re.compile(r"[\[［【]\s*([0-9０-９]+(?:\s*[,，、・]\s*[0-9０-９]+)*)\s*[\]］】]")
# The answer says the passages lack what was asked (the prompt's abstain sentence and its variants).
MISSING = re.compile(r"見つかりません|含まれていません|含まれておらず|記載されていません|記載がありません|記載はありません"
                     r"|情報はありません|情報がありません|わかりません|分かりません|答えられません|お答えできません")


class BackendFailure(Exception):
    """The backend gave no usable answer; the message is a short reason safe to show and log."""


class LLMSettings(GeneratorSettings):
    """The server and how to ask it; unset `base_url` leaves the generator unconfigured (not offered)."""

    model_config = SettingsConfigDict(env_prefix="RAG_LLM_", extra="forbid")

    base_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:11434/v1 (Ollama); "
        "unset leaves the openai generator unconfigured.")
    model: str = Field("qwen2.5", description="Model name sent to the LLM server.")
    api_key: SecretStr | None = Field(None, description="API key sent as a Bearer token; never logged or returned.")
    timeout: float = Field(60.0, gt=0, description="Seconds an LLM answer may take before the extractive fallback.")
    max_tokens: int = Field(400, ge=1, description="Most tokens an LLM answer may have.")
    temperature: float = Field(0.0, ge=0, le=2, description="LLM sampling temperature.")
    prompt: Path | None = Field(
        None, description="Jinja2 prompt template replacing rag/generators/prompts/grounded.ja.j2.")
    context: Literal["excerpts", "passages"] = Field(
        "excerpts", description="What the model reads of each passage: its best sentences with their neighbours "
        "(excerpts: a shorter prompt, a sooner first token) or the whole passage.")
    excerpt_sentences: int = Field(4, ge=1, description="How many best sentences (of all passages) the excerpts "
                                   "hold, each with its neighbours.")


@dataclass(frozen=True)
class LLMConfig:
    """The settings resolved for one generator: a base URL is set, the key is plain text (kept out of repr)."""

    base_url: str
    model: str
    api_key: str | None = field(repr=False)
    timeout: float
    max_tokens: int
    temperature: float
    prompt: Path
    excerpt_sentences: int | None  # None: the model reads whole passages

    @classmethod
    def of(cls, settings: LLMSettings) -> "LLMConfig":
        if not settings.base_url:
            raise GeneratorNotConfigured("set RAG_LLM_BASE_URL to an OpenAI-compatible server")
        return cls(settings.base_url, settings.model,
                   settings.api_key.get_secret_value() if settings.api_key else None, settings.timeout,
                   settings.max_tokens, settings.temperature, settings.prompt or DEFAULT_PROMPT,
                   settings.excerpt_sentences if settings.context == "excerpts" else None)


def load_prompt(path: Path) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    try:
        template = env.from_string(path.read_text(encoding="utf-8"))
    except (OSError, jinja2.TemplateError) as exc:
        raise GeneratorNotConfigured(f"prompt template {path} cannot be read: {exc}") from None
    missing = {"system", "user"} - set(template.blocks)
    if missing:
        raise GeneratorNotConfigured(f"prompt template {path} lacks the block(s) {', '.join(sorted(missing))}")
    return template


@dataclass(frozen=True)
class Shown:
    """The passages the model reads, as `order` (indices into `hits`) with the text shown of each."""

    hits: list[Hit]
    order: list[int]
    texts: list[str]

    @property
    def passages(self) -> list[Hit]:
        return [self.hits[i] for i in self.order]

    def check(self, text: str) -> Draft:
        """`check_answer` against the passages shown, its quotes pointing back into `hits`."""
        draft = check_answer(text, self.passages)
        draft.quotes = [replace(q, hit=self.order[q.hit]) for q in draft.quotes]
        return draft


def render_messages(template: jinja2.Template, question: str, hits: list[Hit], texts: list[str],
                    abstain_text: str) -> list[dict]:
    """The chat messages: the passages numbered [1]…[n], each with its title, date and the text shown."""
    passages = [{"n": n, "title": h.article.title, "date": h.article.published_on, "text": text}
                for n, (h, text) in enumerate(zip(hits, texts), 1)]
    context = template.new_context({"question": question, "passages": passages, "abstain_text": abstain_text})
    return [{"role": role, "content": "".join(template.blocks[role](context)).strip()}
            for role in ("system", "user")]


def check_answer(text: str, hits: list[Hit]) -> Draft:
    """Keep the markers that point to a passage, renumbered by first use; quote each cited passage."""
    repairs: list[str] = []
    cited: list[int] = []  # hit indices in order of first citation
    claims: dict[int, list[str]] = {}
    pieces: list[str] = []
    last, claim = 0, ""
    for match in MARKER.finditer(text):
        before = text[last : match.start()]
        pieces.append(before)
        claim = before if before.strip(" 。．、") else claim  # [1][2] share the sentence before them
        kept = []
        for number in re.split(r"[,，、・\s]+", unicodedata.normalize("NFKC", match.group(1))):
            n = int(number)
            if not 1 <= n <= len(hits):
                repairs.append(f"removed [{n}]: " + ("there is 1 passage" if len(hits) == 1 else
                                                     f"there are {len(hits)} passages"))
                continue
            if n - 1 not in cited:
                cited.append(n - 1)
            claims.setdefault(n - 1, []).append(claim)
            kept.append(cited.index(n - 1) + 1)
        pieces.append("".join(f"[{k}]" for k in dict.fromkeys(kept)))
        last = match.end()
    pieces.append(text[last:])
    checked = re.sub(r"\s+([。、])", r"\1", "".join(pieces)).strip()
    first_sentence = checked[: next((end for _, end in split_sentences(checked)), len(checked))]
    if not cited:
        return Draft(checked, abstained=True, repairs=repairs + ["the answer cites no passage"])
    if not re.sub(r"\[\d+\]|[\s。、]", "", checked):
        return Draft(checked, abstained=True, repairs=repairs + ["the answer is only markers"])
    if MISSING.search(first_sentence):
        return Draft(checked, abstained=True, repairs=repairs + ["the answer says the passages do not contain it"])
    quotes = [Quote(hit, *best_sentence(hits[hit].chunk.text, " ".join(claims[hit]))) for hit in cited]
    return Draft(checked, quotes, repairs=repairs)


def best_sentence(passage: str, claim: str) -> tuple[int, int]:
    """The passage sentence sharing the most words with the claim; the whole passage when none does."""
    wanted = set(tokenize(claim))
    best, span = 0, (0, len(passage))
    for start, end in split_sentences(passage):
        shared = len(wanted & set(tokenize(passage[start:end])))
        if shared > best:
            best, span = shared, (start, end)
    return span


class OpenAIGenerator:
    name = "openai"

    def __init__(self, config: LLMConfig, fallback: ExtractiveGenerator):
        self.config = config
        self.template = load_prompt(config.prompt)
        self.fallback = fallback
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self.client = httpx.Client(base_url=config.base_url.rstrip("/"), headers=headers,
                                   timeout=httpx.Timeout(config.timeout, connect=min(5.0, config.timeout)))
        self._failing = False  # inside an incident: log its start once, and its end
        self._state_lock = threading.Lock()
        self._health: tuple[float, dict] | None = None

    # -- answering

    def generate(self, evidence: Evidence) -> Draft:
        shown = self.shown(evidence)
        try:
            text = self._complete(self._request(evidence.question, shown, stream=False))
        except BackendFailure as failure:
            return self._fall_back(evidence, failure)
        self._recovered()
        return shown.check(text)

    def stream(self, evidence: Evidence) -> DraftStream:
        return DraftStream(self._stream(evidence))

    def _stream(self, evidence: Evidence):
        shown = self.shown(evidence)
        pieces: list[str] = []
        try:
            for piece in self._stream_completion(self._request(evidence.question, shown, stream=True)):
                pieces.append(piece)
                yield piece
        except BackendFailure as failure:
            return self._fall_back(evidence, failure)
        self._recovered()
        return shown.check("".join(pieces))

    def shown(self, evidence: Evidence) -> Shown:
        """What the model reads: every passage whole, or (excerpts) only the passages holding one of the best
        sentences, cut to them and their neighbours, scored as the extractive answer scores sentences."""
        sentences = self.config.excerpt_sentences
        cut = excerpts(evidence, self.fallback.config, sentences) if sentences else {}
        if not cut:
            return Shown(evidence.hits, list(range(len(evidence.hits))), [h.chunk.text for h in evidence.hits])
        return Shown(evidence.hits, list(cut), list(cut.values()))

    def _request(self, question: Question, shown: Shown, stream: bool) -> dict:
        cfg = self.config
        return {"model": cfg.model, "stream": stream, "max_tokens": cfg.max_tokens, "temperature": cfg.temperature,
                "messages": render_messages(self.template, question.text, shown.passages, shown.texts, ABSTAIN_TEXT)}

    def _complete(self, request: dict) -> str:
        try:
            response = self.client.post("/chat/completions", json=request)
        except httpx.TimeoutException:
            raise BackendFailure(f"no answer within {self.config.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise BackendFailure(f"cannot reach {self.config.base_url} ({exc.__class__.__name__})") from None
        self._raise_for_status(response)
        try:
            message = response.json()["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendFailure("malformed response (no choices[0].message)") from None
        return self._content(message)

    def _stream_completion(self, request: dict) -> Iterator[str]:
        deadline = time.monotonic() + self.config.timeout
        try:
            with self.client.stream("POST", "/chat/completions", json=request) as response:
                if response.status_code >= 400:
                    response.read()
                self._raise_for_status(response)
                for line in response.iter_lines():
                    if time.monotonic() > deadline:  # a server trickling tokens never trips the read timeout
                        raise BackendFailure(f"no complete answer within {self.config.timeout:g} s")
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        delta = json.loads(data)["choices"][0].get("delta") or {}
                    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                        raise BackendFailure("malformed stream chunk") from None
                    if delta.get("refusal"):
                        raise BackendFailure("the model refused to answer")
                    piece = delta.get("content")
                    if piece:
                        yield piece
        except httpx.TimeoutException:
            raise BackendFailure(f"no answer within {self.config.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise BackendFailure(f"cannot reach {self.config.base_url} ({exc.__class__.__name__})") from None
        raise BackendFailure("the stream ended before [DONE]")

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        try:
            detail = str(response.json().get("error", {}).get("message", ""))[:120]
        except (ValueError, AttributeError):
            detail = ""
        if self.config.api_key:
            detail = detail.replace(self.config.api_key, "***")
        raise BackendFailure(f"HTTP {response.status_code}" + (f": {detail}" if detail else ""))

    @staticmethod
    def _content(message: dict) -> str:
        if not isinstance(message, dict):
            raise BackendFailure("malformed response (message is not an object)")
        if message.get("refusal"):
            raise BackendFailure("the model refused to answer")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise BackendFailure("empty or malformed answer text")
        return content

    # -- faults

    def _fall_back(self, evidence: Evidence, failure: BackendFailure) -> Draft:
        with self._state_lock:
            if not self._failing:
                log.warning("openai generator (%s, model %s): %s; answering extractively until it recovers",
                            self.config.base_url, self.config.model, failure)
            self._failing = True
        draft = self.fallback.generate(evidence)
        draft.generator = self.fallback.name
        draft.notice = Notice(NoticeCode.LLM_FALLBACK, f"llm fallback: {failure}")
        return draft

    def _recovered(self) -> None:
        with self._state_lock:
            if self._failing:
                log.info("openai generator (%s): answering again", self.config.base_url)
            self._failing = False

    def health(self, ttl: float = 10.0) -> dict:
        """Whether the server answers `GET /models` (cached for `ttl` seconds; /readyz calls this)."""
        now = time.monotonic()
        if self._health and now - self._health[0] < ttl:
            return self._health[1]
        try:
            response = self.client.get("/models", timeout=2.0)
            self._raise_for_status(response)
            state = {"reachable": True, "model": self.config.model}
        except (BackendFailure, httpx.HTTPError) as exc:
            reason = str(exc) if isinstance(exc, BackendFailure) else exc.__class__.__name__
            state = {"reachable": False, "model": self.config.model, "error": reason}
        self._health = (now, state)
        return state


@register("openai", settings=LLMSettings)
def _create(deps: GeneratorDeps) -> OpenAIGenerator:
    # the fallback is the extractive generator, configured as it would be on its own
    return OpenAIGenerator(LLMConfig.of(deps.settings), create_generator("extractive", deps.embedder, deps.overrides))
