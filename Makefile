# Developer shortcuts; CI runs .ci/run.
.PHONY: run test test-all lint acceptance dev-db dev-db-down start-backend cluster cluster-docker

# Run with no other service: SQLite at ./data/tollgate.db, port 3000.
run:
	cargo run --bin tollgate

test:
	cargo test

# The MariaDB/MySQL tests too (needs a server; `make dev-db` starts one on 3307).
test-all:
	TOLLGATE_TEST_MYSQL_URL=$${TOLLGATE_TEST_MYSQL_URL:-mysql://root:dev123456@127.0.0.1:3307/mysql} cargo test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	bash scripts/check-deps.sh

acceptance:
	cargo build --bin tollgate
	bash ../shared/acceptance/run-against-binary.sh target/debug/tollgate

# MySQL 8 on localhost:3307 (root / dev123456) and Redis on 6379, as the seed guide expects.
dev-db:
	docker compose -f deploy/docker-compose.yml up -d --wait

dev-db-down:
	docker compose -f deploy/docker-compose.yml down

# Tollgate against `make dev-db` on port 3000.
start-backend:
	TOLLGATE_DATABASE_URL=$${TOLLGATE_DATABASE_URL:-mysql://root:dev123456@127.0.0.1:3307/tollgate} \
	TOLLGATE_REDIS_URL=$${TOLLGATE_REDIS_URL:-redis://127.0.0.1:6379} \
	cargo run --bin tollgate

# N instances (default 2) on the local MariaDB and Redis behind nginx on :8080 (scripts/cluster.sh).
cluster:
	cargo build --bin tollgate
	bash scripts/cluster.sh $${N:-2}

# The same shape in Docker: two instances and nginx on :8080, on `make dev-db`'s MySQL and Redis.
cluster-docker:
	docker compose -f deploy/docker-compose.yml --profile cluster up -d --build --wait
