# Common commands. `make help` lists them.
.PHONY: help run test bench bench-peers bench-scale bench-sql bench-compaction lint

help: ## This list
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

run: ## Build and start the server on ./data (127.0.0.1:9201)
	cargo run --release -- serve

test: ## Run the whole test suite
	cargo nextest run --no-fail-fast --test-threads 2

bench: ## Criterion micro-benchmarks and the storage report
	cargo bench --bench ingest

bench-peers: ## Quiver vs Prometheus and VictoriaMetrics, end to end (benches/peer/README.md; flags via ARGS="...")
	python3 benches/peer/harness.py $(ARGS)

bench-scale: ## Quiver vs Prometheus and VictoriaMetrics on 1M series: restart, RSS, fan-out and label queries (benches/scale/million.py; flags via ARGS="...")
	python3 benches/scale/million.py $(ARGS)

bench-sql: ## Quiver SQL vs DuckDB on the same block Parquet files (benches/sql/duckdb_compare.py; flags via ARGS="...")
	python3 benches/sql/duckdb_compare.py $(ARGS)

bench-compaction: ## Peak RSS of Quiver compacting a day of 10k series (benches/compaction/day.py; flags via ARGS="...")
	python3 benches/compaction/day.py $(ARGS)

lint: ## rustfmt and clippy as CI runs them
	cargo fmt --check && cargo clippy --all-targets -- -D warnings
