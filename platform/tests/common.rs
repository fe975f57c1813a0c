#![allow(dead_code)] // each test binary uses a different subset
//! Addresses of the real services the tests talk to (started by scripts/services.sh).

pub fn admin_database_url() -> String {
    std::env::var("ABSA_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://absa:absa@127.0.0.1:5432/absa".into())
}

pub fn amqp_url() -> String {
    std::env::var("ABSA_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
