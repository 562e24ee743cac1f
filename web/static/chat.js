// jrag chat page: streams answers from POST /ask (Server-Sent Events), renders [n] citations as buttons.
// Corpus text only ever goes into the page through textContent / text nodes, never innerHTML.
"use strict";

(() => {
  const MAX_HISTORY = 20; // turns sent with each question (the server accepts up to 40)
  const ABSTAIN_LABEL = "回答なし";
  // What the reader is told for each notice code of an answer (answer.notice is English, for logs).
  const NOTICES = {
    no_article_matches_filters: () => "絞り込みの条件に合う記事がありません。",
    // the LLM failed and the server answered extractively; the notice's detail names the reason
    llm_fallback: (notice) =>
      `LLMが応答できなかったため、記事の文を引用して答えています（${(notice || "").replace(/^llm fallback: /, "")}）。`,
  };
  const UNKNOWN_NOTICE = "この回答には補足事項があります。";
  const GENERATOR_NAMES = { extractive: "記事の文を引用（抜粋）", openai: "LLMで文章にする" };
  const STATUS_TEXT = {
    400: "リクエストの形式が正しくありません",
    413: "質問と会話の履歴が長すぎます",
    422: "この質問は受け付けられませんでした",
    503: "準備中です。しばらくしてからもう一度送信してください",
  };

  const log = document.getElementById("log");
  const logWrap = document.getElementById("main");
  const form = document.getElementById("ask-form");
  const input = document.getElementById("question");
  const send = document.getElementById("send");
  const stop = document.getElementById("stop");
  let streaming = null; // the AbortController of the answer being received
  const formError = document.getElementById("form-error");
  const category = document.getElementById("f-category");
  const dateFrom = document.getElementById("f-from");
  const dateTo = document.getElementById("f-to");
  const filterCount = document.getElementById("filter-count");
  const generator = document.getElementById("generator");
  const onArticle = logWrap.dataset.articleId || null; // the post the widget is on: questions prefer it
  const history = []; // {role: "user" | "assistant", content, articles (the answer's cited article ids)}
  const STORAGE_KEY = "jrag.conversation"; // the answered questions, kept across a reload until 新しい会話
  const KEPT_EXCHANGES = 10;
  let messageCount = 0;
  let busy = false;

  // ------------------------------------------------------------ DOM helpers (text only)

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // 2025-11-15 -> 2025年11月15日 (the server gives the date in the site's time zone, as its permalinks do)
  function japaneseDate(iso) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(iso || "");
    return m ? `${Number(m[1])}年${Number(m[2])}月${Number(m[3])}日` : iso || "";
  }

  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function scrollToBottom() {
    logWrap.scrollTop = logWrap.scrollHeight;
  }

  // ------------------------------------------------------------ a first build in progress

  const indexStatus = document.getElementById("index-status");
  const BUILD_PHASES = { chunking: "記事を読み込んでいます", embedding: "意味検索を準備しています", writing: "索引を書き出しています" };
  const INDEX_POLL_MS = 15000;

  // While the first build runs: nothing to ask yet (503), then keyword search only ("bm25") until the vectors are in.
  function showIndexStatus(search, build) {
    const share = build && build.passages ? `${Math.floor(build.fraction * 100)}%` : null;
    const step = build ? BUILD_PHASES[build.phase] || "索引を作成しています" : null;
    let text = null;
    if (search === null) {
      text = `索引を作成しています${step ? `（${step}${share && build.phase === "embedding" ? ` ${share}` : ""}）` : ""}。まもなく質問できます。`;
    } else if (search === "bm25") {
      text = `索引を作成中のため、いまはキーワード検索だけで答えています${share ? `（意味検索の準備 ${share}）` : ""}。`;
    }
    indexStatus.hidden = text === null;
    indexStatus.textContent = text || "";
  }

  async function watchIndex() {
    try {
      const response = await fetch("/api/facets", { headers: { Accept: "application/json" } });
      if (response.ok) {
        const facets = await response.json();
        showIndexStatus(facets.search === "bm25" ? "bm25" : "ready", facets.build);
        if (facets.search !== "bm25") return;
      }
    } catch {
      // try again at the next poll
    }
    setTimeout(watchIndex, INDEX_POLL_MS);
  }

  async function buildProgress() {
    try {
      const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
      return (await response.json()).build || null;
    } catch {
      return null;
    }
  }

  // ------------------------------------------------------------ filters

  async function loadFacets(attempt = 0) {
    try {
      const response = await fetch("/api/facets", { headers: { Accept: "application/json" } });
      if (response.status === 503) {
        const build = await buildProgress();
        if (build) showIndexStatus(null, build);
        if (build || attempt < 60) setTimeout(() => loadFacets(attempt + 1), 2000); // a build takes minutes
        return;
      }
      if (!response.ok) return;
      const facets = await response.json();
      showIndexStatus(facets.search === "bm25" ? "bm25" : "ready", facets.build);
      if (facets.search === "bm25") setTimeout(watchIndex, INDEX_POLL_MS);
      for (const name of facets.categories || []) {
        category.append(el("option", { value: name, text: name }));
      }
      for (const field of [dateFrom, dateTo]) {
        if (facets.date_from) field.min = facets.date_from;
        if (facets.date_to) field.max = facets.date_to;
      }
      suggest(facets.newest || []);
      const generators = facets.generators || [];
      for (const name of generators) {
        const option = el("option", { value: name, text: GENERATOR_NAMES[name] || name });
        if (name === facets.default_generator) option.selected = true;
        generator.append(option);
      }
      document.getElementById("generator-choice").hidden = generators.length < 2;
    } catch {
      // the filters stay at their defaults; asking still works
    }
  }

  function currentFilters() {
    const filters = {};
    if (category.value) filters.category = category.value;
    if (dateFrom.value) filters.date_from = dateFrom.value;
    if (dateTo.value) filters.date_to = dateTo.value;
    return filters;
  }

  function showFilterCount() {
    const n = Object.keys(currentFilters()).length;
    filterCount.textContent = n ? `（${n}件）` : "";
  }

  for (const field of [category, dateFrom, dateTo]) field.addEventListener("change", showFilterCount);
  document.getElementById("f-clear").addEventListener("click", () => {
    category.value = "";
    dateFrom.value = "";
    dateTo.value = "";
    showFilterCount();
  });

  // ------------------------------------------------------------ server-sent events

  async function* readEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      buffer = buffer.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
      if (done) return;
    }
  }

  // ------------------------------------------------------------ rendering an answer

  // The article's image, served by this service (never loaded from the blog by the reader's browser); shown once
  // it has loaded, and left out when the service has none to give (a card without an image looks as before).
  function thumbnail(articleId) {
    const img = el("img", { class: "thumb", src: `/api/articles/${encodeURIComponent(articleId)}/image`, alt: "",
      width: "72", height: "38", decoding: "async", hidden: true });
    img.addEventListener("load", () => { img.hidden = false; });
    img.addEventListener("error", () => img.remove());
    return img;
  }

  class AssistantMessage {
    constructor(id) {
      this.id = id;
      this.citations = new Map();
      this.cardOf = new Map(); // citation n -> the id of its article's card
      this.text = "";
      this.node = el("article", { class: "msg assistant", "aria-busy": "true", "aria-label": "回答" });
      this.bubble = el("div", { class: "bubble" });
      this.loading = el("p", { class: "loading", role: "status" }, el("span", { class: "spinner", "aria-hidden": "true" }),
        "回答を作成中…");
      this.answer = el("p", { class: "answer-text" });
      this.bubble.append(this.loading, this.answer);
      this.node.append(this.bubble);
    }

    // 👍 / 👎 for an answer the server logged (answer_id is null when its query log is off)
    askFeedback(answerId) {
      const row = el("p", { class: "feedback", role: "group", "aria-label": "この回答の評価" });
      const send = async (rating, comment) => {
        for (const control of row.querySelectorAll("button, textarea")) control.disabled = true;
        let thanked = false;
        try {
          const response = await fetch("/feedback", {
            method: "POST",
            headers: { "Content-Type": "application/json", Accept: "application/json" },
            body: JSON.stringify(comment ? { answer_id: answerId, rating, comment } : { answer_id: answerId, rating }),
          });
          thanked = response.ok;
        } catch {
          // shown below
        }
        row.replaceChildren(el("span", { role: "status",
          text: thanked ? "評価ありがとうございました。" : "評価を送信できませんでした。" }));
        // after a 👎, the reader may say what was missing (sent again, it replaces the rating with a comment)
        if (thanked && rating === "down" && !comment) row.append(commentForm());
      };
      const commentForm = () => {
        const label = "どこが役に立たなかったか（任意）";
        const box = el("textarea", { class: "feedback-text", rows: "2", maxlength: "1000", "aria-label": label,
          placeholder: label });
        const submit = el("button", { type: "button", class: "secondary", text: "コメントを送る" });
        submit.addEventListener("click", () => {
          if (box.value.trim()) send("down", box.value.trim());
        });
        return el("span", { class: "feedback-comment" }, box, submit);
      };
      for (const [rating, symbol, label] of [["up", "👍", "役に立った"], ["down", "👎", "役に立たなかった"]]) {
        const button = el("button", { type: "button", class: "rate", "data-rating": rating, "aria-label": label,
          title: label, text: symbol });
        button.addEventListener("click", () => send(rating));
        row.append(button);
      }
      this.bubble.append(row);
    }

    cardId(n) {
      return this.cardOf.get(String(n));
    }

    // One card per article, holding every quote from it: [1] and [3] from one article open the same card.
    setCitations(citations, related) {
      this.related = related || [];
      if (this.sources) this.sources.remove();
      this.sources = null;
      this.citations = new Map();
      this.cardOf = new Map();
      if (!citations.length) return;
      const byArticle = new Map();
      for (const c of citations) {
        this.citations.set(String(c.n), c);
        if (!byArticle.has(c.article_id)) byArticle.set(c.article_id, []);
        byArticle.get(c.article_id).push(c);
      }
      const section = el("section", { class: "sources", "aria-label": "出典" }, el("h3", { text: "出典" }));
      for (const group of byArticle.values()) section.append(this.card(group));
      this.sources = section;
      this.node.append(section);
    }

    // A passage with each of its quotes marked (offsets first, the quote's text as a fallback).
    markedPassage(passage, quotes) {
      const spans = [];
      for (const c of quotes) {
        const start = Number.isInteger(c.quote_start) ? c.quote_start : passage.indexOf(c.quote);
        const end = Number.isInteger(c.quote_end) ? c.quote_end : start + c.quote.length;
        if (start >= 0 && end > start && passage.slice(start, end) === c.quote) spans.push([start, end]);
      }
      spans.sort((x, y) => x[0] - y[0]);
      const node = el("blockquote", { class: "passage" });
      if (!spans.length) {
        node.append(...quotes.map((c) => el("mark", { text: c.quote })));
        return node;
      }
      let last = 0;
      for (const [start, end] of spans) {
        if (start < last) continue; // overlapping quotes: the first one is marked
        node.append(passage.slice(last, start), el("mark", { text: passage.slice(start, end) }));
        last = end;
      }
      node.append(passage.slice(last));
      return node;
    }

    card(group) {
      const first = group[0];
      const id = `m${this.id}-c${first.n}`;
      for (const c of group) this.cardOf.set(String(c.n), id);
      const byPassage = new Map();
      for (const c of group) {
        if (!byPassage.has(c.passage)) byPassage.set(c.passage, []);
        byPassage.get(c.passage).push(c);
      }
      const passages = [...byPassage].map(([passage, quotes]) => this.markedPassage(passage, quotes));
      const links = el("p", { class: "links" });
      const href = safeHref(first.url);
      if (href) links.append(el("a", { href, target: "_blank", rel: "noopener noreferrer", text: "元の記事を開く" }));
      const local = `/articles/${encodeURIComponent(first.article_id)}?q=${encodeURIComponent(first.quote)}#quote`;
      links.append(el("a", { href: local, target: "_blank", rel: "noopener", text: "引用箇所を全文で読む" }));
      const meta = el("p", { class: "meta" });
      for (const name of first.categories || []) meta.append(el("span", { class: "chip", text: name }));
      return el("details", { class: "card", id, "data-n": group.map((c) => c.n).join(" ") },
        el("summary", {},
          el("span", { class: "num", text: group.map((c) => `[${c.n}]`).join("") }),
          first.image ? thumbnail(first.article_id) : null,
          el("span", { class: "title", text: first.title }),
          el("time", { class: "date", datetime: first.date, text: japaneseDate(first.date) })),
        el("div", { class: "card-body" }, meta, ...passages, links));
    }

    appendText(piece) {
      this.loading.hidden = true;
      this.text += piece;
      this.renderText(this.text);
    }

    citeButton(n, kind = "cite") {
      const button = el("button", { type: "button", class: kind, "data-n": n,
        "aria-controls": this.cardId(n), "aria-label": `出典${n}を表示`, text: `[${n}]` });
      button.addEventListener("click", () => this.reveal(n));
      return button;
    }

    renderText(text) {
      const nodes = [];
      let last = 0;
      for (const match of text.matchAll(/\[(\d+)\]/g)) {
        nodes.push(text.slice(last, match.index));
        const n = match[1];
        nodes.push(this.citations.has(n) ? this.citeButton(n) : match[0]);
        last = match.index + match[0].length;
      }
      nodes.push(text.slice(last));
      this.answer.replaceChildren(...nodes.filter((n) => n !== ""));
    }

    reveal(n) {
      const card = document.getElementById(this.cardId(n));
      if (!card) return;
      card.open = true;
      card.classList.remove("flash");
      void card.offsetWidth; // restart the highlight
      card.classList.add("flash");
      setTimeout(() => card.classList.remove("flash"), 2500);
      card.scrollIntoView({ block: "nearest", behavior: "smooth" });
      card.querySelector("summary").focus({ preventScroll: true });
    }

    finish(answer) {
      this.loading.hidden = true;
      this.node.removeAttribute("aria-busy");
      // The final answer is authoritative: a generated one has checked, renumbered citations.
      this.setCitations(answer.citations || [], answer.related);
      this.renderText((this.text = answer.answer));
      if (answer.abstained) {
        this.node.classList.add("abstained");
        this.bubble.prepend(el("span", { class: "abstain-label", text: ABSTAIN_LABEL }));
      } else if (answer.short_answer) {
        // the short answer first, then the sentences it is quoted from
        const short = answer.short_answer;
        this.bubble.prepend(el("p", { class: "short-answer" },
          el("strong", { text: short.text }), " ", this.citeButton(String(short.n), "short-cite")));
      }
      if (answer.notice_code) {
        const code = answer.notice_code;
        const text = Object.hasOwn(NOTICES, code) ? NOTICES[code](answer.notice) : UNKNOWN_NOTICE;
        this.bubble.append(el("p", { class: "notice", text: `注: ${text}` }));
      }
      if (answer.answer_id) this.askFeedback(answer.answer_id);
      const related = answer.related || this.related || [];
      if (related.length) {
        const list = el("ul");
        for (const r of related) {
          const href = safeHref(r.url);
          const local = `/articles/${encodeURIComponent(r.article_id)}`;
          list.append(el("li", {},
            el("a", { href: href || local, target: "_blank", rel: "noopener noreferrer", text: r.title }),
            el("time", { class: "date", datetime: r.date, text: japaneseDate(r.date) }),
            " ",
            el("a", { href: local, target: "_blank", rel: "noopener", class: "local", text: "（全文）" })));
        }
        const title = answer.abstained ? "近い内容の記事" : "関連する記事";
        this.node.append(el("section", { class: "related", "aria-label": title }, el("h3", { text: title }), list));
      }
    }

    // Copy the answer with its sources as plain text.
    addCopyButton(answer) {
      const copy = el("button", { type: "button", class: "secondary copy", text: "コピー", "aria-label": "回答をコピー" });
      copy.addEventListener("click", async () => {
        const sources = (answer.citations || []).map((c) => `[${c.n}] ${c.title} ${c.url || ""}`.trim());
        const text = sources.length ? `${answer.answer}\n\n出典:\n${sources.join("\n")}` : answer.answer;
        try {
          await navigator.clipboard.writeText(text);
          copy.textContent = "コピーしました";
        } catch {
          copy.textContent = "コピーできませんでした";
        }
        setTimeout(() => { copy.textContent = "コピー"; }, 2000);
      });
      this.node.append(el("div", { class: "actions" }, copy));
    }

    stopped() {
      this.loading.hidden = true;
      this.node.removeAttribute("aria-busy");
      this.node.classList.add("stopped");
      this.node.append(el("p", { class: "notice", role: "status", text: "回答の受信を停止しました。" }));
    }

    fail(message, retry) {
      this.loading.hidden = true;
      if (!this.text) this.bubble.hidden = true;
      this.node.removeAttribute("aria-busy");
      const box = el("div", { class: "error-box", role: "alert" }, el("p", { text: `エラー: ${message}` }));
      if (retry) {
        const again = el("button", { type: "button", class: "secondary retry", text: "もう一度送信" });
        again.addEventListener("click", () => {
          this.node.remove();
          retry();
        });
        box.append(again);
      }
      this.node.append(box);
    }
  }

  // On the empty page: questions about the newest articles, one click to ask.
  function suggest(newest) {
    const welcome = document.getElementById("welcome");
    // on a post, the first suggestion is about it
    const here = onArticle ? [{ article_id: onArticle, title: logWrap.dataset.articleTitle }] : [];
    const articles = [...here, ...newest.filter((a) => a.article_id !== onArticle)].slice(0, 3);
    if (!welcome || !articles.length) return;
    const list = el("ul", { class: "suggestions" });
    for (const a of articles) {
      const question = `「${a.title}」について教えて`;
      const button = el("button", { type: "button", class: "secondary suggestion", text: question });
      button.addEventListener("click", () => {
        input.value = question;
        form.requestSubmit();
      });
      list.append(el("li", {}, button, " ",
        a.date ? el("time", { class: "date", datetime: a.date, text: japaneseDate(a.date) }) : null));
    }
    welcome.append(el("h3", { text: "最近の記事について聞いてみる" }), list);
  }

  // ------------------------------------------------------------ the conversation, kept across a reload

  function savedConversation() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "[]");
      return Array.isArray(saved) ? saved : [];
    } catch {
      return []; // storage off, or not ours
    }
  }

  function remember(question, answer) {
    history.push({ role: "user", content: question },
      { role: "assistant", content: answer.answer, articles: (answer.citations || []).map((c) => c.article_id) });
  }

  function keep(question, answer) {
    remember(question, answer);
    try {
      const saved = [...savedConversation(), { question, answer }].slice(-KEPT_EXCHANGES);
      localStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
    } catch {
      // storage full or off: the conversation still works, it is just not kept
    }
  }

  function restoreConversation() {
    for (const { question, answer } of savedConversation()) {
      if (typeof question !== "string" || !answer || typeof answer.answer !== "string") continue;
      showQuestion(question);
      const message = new AssistantMessage(++messageCount);
      log.append(message.node);
      message.finish(answer);
      message.addCopyButton(answer);
      remember(question, answer);
    }
  }

  // ------------------------------------------------------------ asking

  function showQuestion(question) {
    const welcome = document.getElementById("welcome");
    if (welcome) welcome.remove();
    log.append(el("article", { class: "msg user", "aria-label": "質問" }, el("p", { class: "bubble", text: question })));
  }

  async function ask(question) {
    showQuestion(question);
    const message = new AssistantMessage(++messageCount);
    log.append(message.node);
    scrollToBottom();

    const body = { question, history: history.slice(-MAX_HISTORY) };
    if (onArticle) body.article = onArticle;
    // a failed question is put back in the box and can be sent again as it was
    const retry = () => {
      input.value = question;
      form.requestSubmit();
    };
    const fail = (text) => {
      message.fail(text, retry);
      if (!input.value) input.value = question;
    };
    if (!document.getElementById("generator-choice").hidden) body.generator = generator.value;
    const filters = currentFilters();
    if (Object.keys(filters).length) body.filters = filters;

    streaming = new AbortController();
    const { signal } = streaming;
    let response;
    try {
      response = await fetch("/ask", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal,
      });
    } catch {
      if (signal.aborted) message.stopped();
      else fail("サーバーに接続できませんでした。");
      return;
    }
    if (!response.ok) {
      // The JSON error's message is English, for logs and API clients; the reader gets the Japanese lead.
      try {
        const error = await response.json();
        if (error && error.error) console.warn(`jrag: HTTP ${response.status}: ${error.error}`);
      } catch {
        // no JSON body
      }
      fail(STATUS_TEXT[response.status] || `サーバーでエラーが発生しました（${response.status}）`);
      return;
    }
    try {
      let finished = false;
      for await (const { event, data } of readEvents(response)) {
        if (event === "citations") message.setCitations(data.citations || [], data.related || []);
        else if (event === "delta") message.appendText(data.text || "");
        else if (event === "done") {
          message.finish(data);
          message.addCopyButton(data);
          keep(question, data);
          finished = true;
        } else if (event === "error") {
          if (data.error) console.warn(`jrag: ${data.error}`);
          fail("回答の作成中にエラーが発生しました。");
          finished = true;
        }
        scrollToBottom();
      }
      if (!finished) fail("回答の受信が途中で終わりました。");
    } catch {
      if (signal.aborted) message.stopped();
      else fail("回答の受信中に接続が切れました。");
    }
  }

  function showFormError(text) {
    formError.textContent = text;
    formError.hidden = !text;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    const question = input.value.trim();
    if (!question) {
      showFormError("質問を入力してください。");
      input.focus();
      return;
    }
    showFormError("");
    busy = true;
    send.disabled = true;
    stop.hidden = false;
    form.setAttribute("aria-busy", "true");
    input.value = "";
    try {
      await ask(question);
    } finally {
      busy = false;
      streaming = null;
      send.disabled = false;
      stop.hidden = true;
      form.removeAttribute("aria-busy");
      scrollToBottom();
      input.focus();
    }
  });

  input.addEventListener("keydown", (event) => {
    // Enter sends, Shift+Enter is a newline; Enter that confirms an IME conversion is neither.
    if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
    event.preventDefault();
    form.requestSubmit();
  });

  input.addEventListener("input", () => showFormError(""));

  stop.addEventListener("click", () => {
    if (streaming) streaming.abort();
  });

  document.getElementById("new-chat").addEventListener("click", () => {
    history.length = 0;
    try {
      localStorage.removeItem(STORAGE_KEY);
    } catch {
      // storage off: nothing was kept
    }
    log.replaceChildren();
    showFormError("");
    input.focus();
  });

  loadFacets();
  restoreConversation();
  scrollToBottom();
  input.focus();
})();
