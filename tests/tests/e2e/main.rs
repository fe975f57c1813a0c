//! The end-to-end tests: the real binaries, Postgres and RabbitMQ, one module per
//! area, in one test binary (one link instead of eighteen). The slow tier (ignored tests,
//! model training end to end) runs one test at a time: see `scripts/test.sh`.

mod api;
mod api_probes;
mod bi_views;
mod cli;
mod dashboard;
mod faults;
mod generated_client;
mod helm_chart;
mod hostile_input;
mod hostile_limits;
mod job_system;
mod load;
mod process_metrics;
mod quickstarts;
mod smoke;
mod stance;
mod sweep;
mod webhooks;
