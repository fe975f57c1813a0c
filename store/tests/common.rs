#![allow(dead_code)] // each test binary uses a different subset
//! Addresses of the real services the tests talk to (started by scripts/services.sh).

pub fn admin_database_url() -> String {
    absa_platform::config::test_database_url()
}

pub fn amqp_url() -> String {
    absa_platform::config::test_amqp_url()
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}
