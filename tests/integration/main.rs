//! End-to-end tests: real `quiver` processes, real HTTP, real files, real S3 API (moto).

mod api;
mod bad_input;
mod catalog_lifecycle;
mod compaction;
mod crash;
mod deploy_kit;
mod differential;
mod durability;
mod grafana;
mod hostile;
mod lifecycle;
mod prometheus_peer;
mod promql_conformance;
mod promql_fuzz;
mod promql_plan;
mod remote_write;
mod results_cache;
mod s3;
mod s3_outage;
mod schema;
mod security;
mod self_metrics;
mod sql_bounded;
mod sql_examples;
mod support;
mod tls;
