//! API keys and roles. A key is `absa_` + 32 random bytes in hex; only its SHA-256 is
//! stored. Every `/v1` handler takes a [`Caller`] (the key's team and role) and asks
//! it for the role it needs.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};

/// Roles in increasing power: each can do what the ones before it can.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads its team's everything; uploads corpora; scores.
    Analyst,
    /// Also uploads datasets, trains, moves aliases, schedules retrains.
    Mlops,
    /// Also manages keys, teams and BI logins.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Analyst => "analyst",
            Self::Mlops => "mlops",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "analyst" => Some(Self::Analyst),
            "mlops" => Some(Self::Mlops),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who is calling: resolved from the `Authorization: Bearer` key.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: Uuid,
    pub team_id: Uuid,
    pub role: Role,
}

impl Caller {
    /// Ok when the caller's role is at least `needed`, else 403.
    pub fn require(&self, needed: Role) -> ApiResult<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(ApiError::Forbidden { needed: needed.as_str(), has: self.role.as_str() })
        }
    }
}

/// A new random key (shown once) and the hash to store.
pub fn new_key() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("absa_{}", hex(&bytes));
    let hash = hash_key(&key);
    (key, hash)
}

pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores a new key for `team` and returns (id, key).
pub async fn create_key(pool: &PgPool, team: Uuid, name: &str, role: Role) -> ApiResult<(Uuid, String)> {
    let (key, hash) = new_key();
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO api_keys (id, team_id, name, role, key_hash) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(team)
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .execute(pool)
        .await?;
    Ok((id, key))
}

/// The team named `name`, created if it does not exist.
pub async fn ensure_team(pool: &PgPool, name: &str) -> ApiResult<Uuid> {
    let id: Uuid = sqlx::query_scalar("INSERT INTO teams (id, name) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id")
        .bind(Uuid::new_v4())
        .bind(name)
        .fetch_one(pool)
        .await?;
    Ok(id)
}

/// State the extractor needs: the pool.
pub trait HasPool {
    fn pool(&self) -> &PgPool;
}

/// The `Authorization: Bearer` token, if any.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let header = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok())?;
    header.strip_prefix("Bearer ").map(str::trim).filter(|k| !k.is_empty())
}

impl Caller {
    /// The caller whose key the request carries; 401 without a live key.
    pub async fn of(pool: &PgPool, headers: &axum::http::HeaderMap) -> ApiResult<Self> {
        let key = bearer(headers).ok_or(ApiError::Unauthorized)?;
        let row: Option<(Uuid, Uuid, String)> = sqlx::query_as("SELECT id, team_id, role FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(hash_key(key))
            .fetch_optional(pool)
            .await?;
        let (key_id, team_id, role) = row.ok_or(ApiError::Unauthorized)?;
        let role = Role::parse(&role).ok_or_else(|| ApiError::Internal(format!("key {key_id} has unknown role {role}")))?;
        Ok(Self { key_id, team_id, role })
    }
}

impl<S: HasPool + Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Self::of(state.pool(), &parts.headers).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let (a, ha) = new_key();
        let (b, _) = new_key();
        assert_ne!(a, b);
        assert!(a.starts_with("absa_") && a.len() == 5 + 64);
        assert_eq!(ha, hash_key(&a));
        assert_eq!(ha.len(), 64);
    }

    #[test]
    fn roles_are_ordered() {
        let caller = |role| Caller { key_id: Uuid::nil(), team_id: Uuid::nil(), role };
        assert!(caller(Role::Admin).require(Role::Mlops).is_ok());
        assert!(caller(Role::Mlops).require(Role::Analyst).is_ok());
        assert!(caller(Role::Analyst).require(Role::Mlops).is_err());
        assert!(caller(Role::Mlops).require(Role::Admin).is_err());
    }
}
