// jrag widget: a launcher and a chat panel on every page of the blog, in a shadow root so no style leaks
// either way. The panel frames the service's own chat page (?embed=1): the same streaming answers and
// citation cards, nothing rendered twice. Put in a Jekyll layout:
//   <script src="https://QA-HOST/widget.js" async></script>
// On a post, data-article="{{ page.slug }}"-style ids make its questions prefer that article.
// The service must list the blog's origin in RAG_ALLOWED_ORIGINS (its pages refuse other framers).
"use strict";

(() => {
  const script = document.currentScript;
  if (!script || document.getElementById("jrag-widget")) return;
  const chatUrl = new URL("/?embed=1", script.src);
  // a post page may say which article it is: <script src=".../widget.js" data-article="2025-11-15-…" async>
  if (script.dataset.article) chatUrl.searchParams.set("article", script.dataset.article);

  const host = document.createElement("div");
  host.id = "jrag-widget";
  const root = host.attachShadow({ mode: "open" });
  // static markup only: nothing from the blog or the corpus goes in here
  root.innerHTML = `
    <style>
      :host { all: initial; }
      .launcher { position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; min-height: 48px; padding: 0 18px;
        border: 0; border-radius: 24px; background: #1f5fbf; color: #fff; font: 600 16px/1 sans-serif;
        box-shadow: 0 4px 14px rgba(0, 0, 0, .25); cursor: pointer; }
      .launcher:focus-visible, .close:focus-visible { outline: 3px solid #f0a500; outline-offset: 2px; }
      .panel { position: fixed; right: 20px; bottom: 80px; z-index: 2147483000; width: min(420px, calc(100vw - 40px));
        height: min(640px, calc(100vh - 110px)); display: flex; flex-direction: column; background: #fff;
        border-radius: 12px; box-shadow: 0 8px 30px rgba(0, 0, 0, .3); overflow: hidden; }
      .panel[hidden] { display: none; }
      .bar { display: flex; align-items: center; justify-content: space-between; padding: 4px 8px 4px 14px;
        background: #1f5fbf; color: #fff; font: 600 15px/1.4 sans-serif; }
      .close { min-width: 44px; min-height: 44px; border: 0; background: transparent; color: #fff; font-size: 22px;
        cursor: pointer; }
      iframe { flex: 1; width: 100%; border: 0; }
      @media (max-width: 480px) {
        .panel { inset: 0; width: 100vw; height: 100vh; border-radius: 0; }
      }
    </style>
    <button type="button" class="launcher" aria-expanded="false" aria-controls="jrag-panel">記事に質問する</button>
    <div class="panel" id="jrag-panel" role="dialog" aria-label="記事Q&amp;A" hidden>
      <div class="bar"><span>記事Q&amp;A</span><button type="button" class="close" aria-label="閉じる">×</button></div>
    </div>`;
  const launcher = root.querySelector(".launcher");
  const panel = root.querySelector(".panel");
  let frame = null;

  function open() {
    if (!frame) { // loaded on first open, so the blog's pages pay nothing until a reader asks
      frame = document.createElement("iframe");
      frame.title = "記事Q&A";
      frame.src = chatUrl.href;
      panel.append(frame);
    }
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    frame.focus();
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  launcher.addEventListener("click", () => (panel.hidden ? open() : close()));
  root.querySelector(".close").addEventListener("click", close);
  root.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !panel.hidden) close();
  });
  (document.body || document.documentElement).append(host);
})();
