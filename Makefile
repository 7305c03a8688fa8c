# flexguard: `make serve` starts the service on the shipped model; `make test` runs every test.
# Both create .venv and install what they need; nothing is installed by hand.

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
FLEXGUARD := $(BIN)/flexguard
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Training data for `make model` and `make crossval`: both flexdata batches and every gathered batch
# (their photos are kept outside git: datasets/README.md). Runs go to git-ignored folders.
DATA ?= ../shared/flexdata $(sort $(wildcard datasets/batches/*/manifest.csv))
RUN ?= runs/model
CV ?= runs/cv
FOLDS ?= 0 1 2 3 4
# Each model file's scores by photo (`flexguard evaluate --score-cache`): crossval-int8 compares against
# the fp32 fold models that crossval already scored, and reads their scores instead of running them again.
SCORE_CACHE ?= .cache/flexguard/scores
# Validation by unseen source (datasets/README.md): each fold holds whole sources. Two sources are
# collections of separate makes or brands, split by group as the holdout guard splits them.
SPLIT ?= --by source --keep-subgroups StuartWaller/watch-classifier-all-content --keep-subgroups fmejbah/car_dataset1

.PHONY: serve test system-deps model crossval crossval-int8 clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamp files record which extras are installed, and re-install when pyproject.toml changes.
$(VENV)/.installed-serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@ $(VENV)/.installed-serve

serve: $(VENV)/.installed-serve
	$(FLEXGUARD) serve

# The review tests run on SQLite and on a throwaway PostgreSQL that .ci/test-postgres.sh makes in a
# temporary folder (free port, random password) and stops when the tests end, pass, fail or are
# interrupted: no server is left running.
test: system-deps $(VENV)/.installed-test
	@cluster=$$(mktemp -d -t flexguard-postgres.XXXXXX); \
	trap 'sh .ci/test-postgres.sh stop "$$cluster"' EXIT; trap 'exit 130' INT TERM; \
	FLEXGUARD_TEST_POSTGRES_URL="$$(sh .ci/test-postgres.sh start "$$cluster")" $(BIN)/python -m pytest

# Debian's packages for the tests: chromium for the browser tests (tests/test_page.py,
# tests/test_review_page.py), which Playwright drives at /usr/bin/chromium (never `playwright install`:
# it downloads a browser), postgresql for the review database tests, and curl for the README walkthrough
# (tests/test_readme_walkthrough.py). Without them those tests skip.
SYSTEM_PACKAGES := chromium:/usr/bin/chromium postgresql:/usr/bin/pg_ctlcluster curl:/usr/bin/curl
system-deps:
	@missing=""; for entry in $(SYSTEM_PACKAGES); do \
		package=$${entry%%:*}; path=$${entry#*:}; \
		if [ -x "$$path" ]; then echo "system-deps: $$package is installed"; else missing="$$missing $$package"; fi; \
	done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
		echo "system-deps: skipped, not root; 'sudo apt-get install$$missing' enables the tests that need them"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "system-deps: skipped, no apt-get; install$$missing to enable the tests that need them"; \
	else \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

# Cross-validation by unseen source: one model per fold, trained without that fold's sources, and
# `flexguard evaluate --split folds` over the pooled out-of-fold scores, against the linear probe and the
# zero-training baseline ($(CV)/eval/report.html; the figures for the model card). STAMP_INTO names a
# model to receive the pooled thresholds and figures. The ensemble: about 20 minutes on 2 CPU cores for
# 21,926 photos with the feature cache warm (finetune: about 30 minutes a fold for 13,000 photos).
STAMP_INTO ?=
# The recipe (`flexguard train --recipe`): ensemble (frozen Lite0 at 384 px and Lite2 at 260, heads over their pooled features;
# what ships) or finetune (Lite2's last blocks, and its linear probe as a second model to compare).
RECIPE ?= ensemble
# The ensemble's heads (`flexguard train --heads`): mlp (one two-layer network; what ships) or linear.
HEADS ?= mlp
# How many two-layer heads are fitted from successive seeds, their logits averaged (`flexguard train --head-seeds`;
# empty: its default, 3).
HEAD_SEEDS ?=
crossval: $(VENV)/.installed-test
	@for fold in $(FOLDS); do \
		$(FLEXGUARD) train $(DATA) --recipe $(RECIPE) --heads $(HEADS) $(if $(HEAD_SEEDS),--head-seeds $(HEAD_SEEDS)) --out $(CV)/fold-$$fold --val-fold $$fold $(SPLIT) && \
		$(FLEXGUARD) export --checkpoint $(CV)/fold-$$fold/checkpoint.pt --out $(CV)/fold-$$fold/flexguard.onnx && \
		if [ -f $(CV)/fold-$$fold/probe.pt ]; then $(FLEXGUARD) export --checkpoint $(CV)/fold-$$fold/probe.pt \
			--name linear-probe --out $(CV)/fold-$$fold/linear-probe.onnx; fi || exit 1; \
	done
	$(FLEXGUARD) export --baseline --out $(CV)/imagenet-zero-training.onnx
	$(FLEXGUARD) evaluate --split folds $(SPLIT) --manifest $(DATA) --out $(CV)/eval --score-cache $(SCORE_CACHE) \
		--model 'flexguard=$(CV)/fold-{fold}/flexguard.onnx' \
		$(if $(filter finetune,$(RECIPE)),--compare 'linear-probe=$(CV)/fold-{fold}/linear-probe.onnx') \
		--compare imagenet-zero-training=$(CV)/imagenet-zero-training.onnx \
		$(if $(STAMP_INTO),--stamp-into $(STAMP_INTO))

# The INT8 copy's own thresholds and figures: each fold's model from `make crossval`, quantised as the
# shipped one is (calibrated on its own training side), scores its held-out fold; the pooled scores give
# the thresholds stamped into STAMP_INTO, and fail the run if INT8 loses more than $(MAX_INT8_AUC_DROP)
# ROC-AUC against the same folds in fp32. Why its own: INT8 scores run a little hotter. On fold 0, fp32's
# 5% threshold flagged 5.5% of ordinary photos and 10.0% of look-alikes through the INT8 copy, against
# 5.0% and 8.8% through fp32 (models/MODEL_CARD.md, INT8). The fp32 reference comes from crossval's scores in
# $(SCORE_CACHE); the INT8 pass over 32,852 photos took about 7 minutes on 2 cores (78 photos/s).
MAX_INT8_AUC_DROP ?= 0.005
crossval-int8: $(VENV)/.installed-test
	@for fold in $(FOLDS); do \
		$(FLEXGUARD) quantize --model $(CV)/fold-$$fold/flexguard.onnx --manifest $(DATA) \
			--out $(CV)/fold-$$fold/flexguard-int8.onnx --val-fold $$fold $(SPLIT) || exit 1; \
	done
	$(FLEXGUARD) evaluate --split folds $(SPLIT) --manifest $(DATA) --out $(CV)/eval-int8 --score-cache $(SCORE_CACHE) \
		--model 'flexguard-int8=$(CV)/fold-{fold}/flexguard-int8.onnx' --compare 'flexguard=$(CV)/fold-{fold}/flexguard.onnx' \
		--max-auc-drop $(MAX_INT8_AUC_DROP) $(if $(STAMP_INTO),--stamp-into $(STAMP_INTO))

# The model that ships: trained on every photo of $(DATA), with the thresholds and figures of the
# cross-validation above stamped into it, quantised to INT8 with its own cross-validated thresholds
# (shipped only if INT8 loses at most $(MAX_INT8_AUC_DROP) ROC-AUC out of fold), and copied over the
# shipped models. 34 minutes on 2 quiet CPU cores for 29,597 photos with the feature cache warm (models/MODEL_CARD.md).
# Not part of `make test`.
model: $(VENV)/.installed-test
	$(FLEXGUARD) train $(DATA) --recipe $(RECIPE) --heads $(HEADS) $(if $(HEAD_SEEDS),--head-seeds $(HEAD_SEEDS)) --all --out $(RUN)
	$(FLEXGUARD) export --checkpoint $(RUN)/checkpoint.pt --out $(RUN)/flexguard.onnx
	$(MAKE) crossval STAMP_INTO=$(RUN)/flexguard.onnx
	$(FLEXGUARD) quantize --model $(RUN)/flexguard.onnx --manifest $(DATA) --out $(RUN)/flexguard-int8.onnx $(SPLIT)
	$(MAKE) crossval-int8 STAMP_INTO=$(RUN)/flexguard-int8.onnx
	cp $(RUN)/flexguard.onnx $(RUN)/flexguard-int8.onnx models/

# A fresh checkout has the gathered batches' manifests but not their photos (kept out of git): this makes
# them again from the sources' snapshots under MIRROR (what the search tool's `fetch` brings), each checked
# against its recorded hash, and lists the sources still to fetch in $(RESTORE_TODO) (datasets/README.md).
MIRROR ?= /work/.mirror
RESTORE_TODO ?= runs/to-fetch.tsv
.PHONY: restore
restore: $(VENV)/.installed-serve
	$(FLEXGUARD) data restore --mirror $(MIRROR) --missing-sources $(RESTORE_TODO)

# Known advisories in the installed packages (pip-audit against PyPI's advisory data; needs the
# network, so it is not part of `make test`; see SECURITY.md).
.PHONY: audit
audit: $(VENV)/.installed-test
	FLEXGUARD_AUDIT=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_hardening_deps.py

clean:
	rm -rf $(VENV) .pytest_cache

# The benchmark suite (benchmarks/, docs/performance.md): model only, decode + preprocess, end to end
# over HTTP against the naive peer, the RSS soak, the scan, and a 30 s 1080p video. Prints tables, writes
# JSON and runs/bench/summary.md. ~8 min on 2 cores once the generated photos and clip are cached under
# runs/bench/ (the first run also generates them: ~6 min more). Numbers depend on what else the machine is doing:
# run it on a quiet machine. Never part of `make test`.
.PHONY: bench
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_model.py
	$(BIN)/python benchmarks/bench_decode.py
	$(BIN)/python benchmarks/bench_http.py
	$(BIN)/python benchmarks/soak_rss.py
	$(BIN)/python benchmarks/bench_scan.py --photos runs/bench/scan-photos --json runs/bench/scan.json
	$(BIN)/python benchmarks/bench_video.py
	$(BIN)/python benchmarks/report.py
