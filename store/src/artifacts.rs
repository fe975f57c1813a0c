//! Artifacts (checkpoints, ONNX files, tokenizers) behind one small interface.
//!
//! Metadata always lives in the `artifacts` table; content lives either in Postgres
//! (`artifact_chunks`, 1 MiB rows: no extra service, the default) or in a folder (a
//! mounted volume or object-store gateway, for xl/xxl checkpoints too big for the
//! database). Writes stream, are hashed on the way, and flip `complete` only at the
//! end, so no reader ever sees half an artifact. Reads check the hash.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use crate::{PlatformError, Result};

/// Size of one stored chunk (and of the streaming buffer).
pub const CHUNK_BYTES: usize = 1 << 20;

/// Where content goes.
#[derive(Clone, Debug)]
pub enum Backend {
    Postgres,
    /// Files under this root, one per artifact, named by id.
    Filesystem(PathBuf),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Filesystem(_) => "filesystem",
        }
    }
}

/// A stored artifact's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub id: Uuid,
    pub kind: String,
    pub size_bytes: i64,
    pub sha256: String,
}

#[derive(Clone)]
pub struct ArtifactStore {
    pool: PgPool,
    backend: Backend,
}

fn corrupt(id: Uuid, why: String) -> PlatformError {
    PlatformError::Artifact(format!("artifact {id}: {why}"))
}

impl ArtifactStore {
    pub fn new(pool: PgPool, backend: Backend) -> Self {
        Self { pool, backend }
    }

    /// Streams `content` into the store and returns the complete artifact.
    pub async fn put(&self, team_id: Uuid, kind: &str, job_id: Option<Uuid>, mut content: impl AsyncRead + Unpin) -> Result<Artifact> {
        let id = Uuid::new_v4();
        let location = match &self.backend {
            Backend::Filesystem(root) => Some(root.join(id.to_string())),
            Backend::Postgres => None,
        };
        sqlx::query("INSERT INTO artifacts (id, team_id, kind, backend, location, job_id) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(id)
            .bind(team_id)
            .bind(kind)
            .bind(self.backend.name())
            .bind(location.as_ref().map(|p| p.display().to_string()))
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        let mut hasher = Sha256::new();
        let mut size = 0i64;
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut file = match &location {
            Some(path) => {
                let parent = path.parent().expect("a root folder");
                tokio::fs::create_dir_all(parent).await.map_err(|e| corrupt(id, format!("{}: {e}", parent.display())))?;
                Some(tokio::fs::File::create(path.with_extension("partial")).await.map_err(|e| corrupt(id, format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        let mut idx = 0i32;
        loop {
            let n = read_full(&mut content, &mut buf).await.map_err(|e| corrupt(id, format!("reading content: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as i64;
            match &mut file {
                Some(f) => f.write_all(&buf[..n]).await.map_err(|e| corrupt(id, e.to_string()))?,
                None => {
                    sqlx::query("INSERT INTO artifact_chunks (artifact_id, idx, data) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(idx)
                        .bind(&buf[..n])
                        .execute(&self.pool)
                        .await?;
                }
            }
            idx += 1;
        }
        if let (Some(mut f), Some(path)) = (file, &location) {
            f.flush().await.map_err(|e| corrupt(id, e.to_string()))?;
            f.sync_all().await.map_err(|e| corrupt(id, e.to_string()))?;
            tokio::fs::rename(path.with_extension("partial"), path).await.map_err(|e| corrupt(id, e.to_string()))?;
        }
        let sha256 = format!("{:x}", hasher.finalize());
        sqlx::query("UPDATE artifacts SET size_bytes = $2, sha256 = $3, complete = true WHERE id = $1")
            .bind(id)
            .bind(size)
            .bind(&sha256)
            .execute(&self.pool)
            .await?;
        Ok(Artifact { id, kind: kind.into(), size_bytes: size, sha256 })
    }

    /// Metadata of a complete artifact; `None` for unknown or unfinished ones.
    pub async fn get(&self, id: Uuid) -> Result<Option<Artifact>> {
        let row: Option<(String, i64, String)> =
            sqlx::query_as("SELECT kind, size_bytes, sha256 FROM artifacts WHERE id = $1 AND complete").bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(|(kind, size_bytes, sha256)| Artifact { id, kind, size_bytes, sha256 }))
    }

    /// Streams a complete artifact's content into `out`, checking size and hash.
    pub async fn read_into(&self, id: Uuid, out: &mut (impl AsyncWrite + Unpin)) -> Result<Artifact> {
        let row: Option<(String, i64, String, String, Option<String>)> =
            sqlx::query_as("SELECT kind, size_bytes, sha256, backend, location FROM artifacts WHERE id = $1 AND complete")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        let (kind, size_bytes, sha256, backend, location) = row.ok_or_else(|| corrupt(id, "not found or not complete".into()))?;
        let mut hasher = Sha256::new();
        let mut size = 0i64;
        if backend == "postgres" {
            let chunks: i32 = sqlx::query_scalar("SELECT count(*)::int FROM artifact_chunks WHERE artifact_id = $1").bind(id).fetch_one(&self.pool).await?;
            for idx in 0..chunks {
                // One chunk at a time keeps memory flat for multi-GB checkpoints.
                let data: Vec<u8> =
                    sqlx::query_scalar("SELECT data FROM artifact_chunks WHERE artifact_id = $1 AND idx = $2").bind(id).bind(idx).fetch_one(&self.pool).await?;
                hasher.update(&data);
                size += data.len() as i64;
                out.write_all(&data).await.map_err(|e| corrupt(id, e.to_string()))?;
            }
        } else {
            let path = location.ok_or_else(|| corrupt(id, "no location".into()))?;
            let mut f = tokio::fs::File::open(&path).await.map_err(|e| corrupt(id, format!("{path}: {e}")))?;
            let mut buf = vec![0u8; CHUNK_BYTES];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| corrupt(id, e.to_string()))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as i64;
                out.write_all(&buf[..n]).await.map_err(|e| corrupt(id, e.to_string()))?;
            }
        }
        out.flush().await.map_err(|e| corrupt(id, e.to_string()))?;
        let found = format!("{:x}", hasher.finalize());
        if size != size_bytes || found != sha256 {
            return Err(corrupt(id, format!("content does not match its record ({size} bytes, sha256 {found}; expected {size_bytes}, {sha256})")));
        }
        Ok(Artifact { id, kind, size_bytes, sha256 })
    }

    /// The artifact as a local file under `cache`, named by its hash: fetched once,
    /// then reused by every job on this worker that needs the same content.
    pub async fn cached_file(&self, id: Uuid, cache: &Path) -> Result<PathBuf> {
        let artifact = self.get(id).await?.ok_or_else(|| corrupt(id, "not found or not complete".into()))?;
        let path = cache.join(&artifact.sha256);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(path);
        }
        tokio::fs::create_dir_all(cache).await.map_err(|e| corrupt(id, format!("{}: {e}", cache.display())))?;
        let partial = cache.join(format!("{}.{}.partial", artifact.sha256, Uuid::new_v4().simple()));
        let mut f = tokio::fs::File::create(&partial).await.map_err(|e| corrupt(id, e.to_string()))?;
        let read = self.read_into(id, &mut f).await;
        if read.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        read?;
        tokio::fs::rename(&partial, &path).await.map_err(|e| corrupt(id, e.to_string()))?;
        Ok(path)
    }
}

impl ArtifactStore {
    /// Removes an artifact (a superseded checkpoint): the row first, so no reader
    /// finds it, then the file of a filesystem artifact.
    pub async fn delete(&self, id: Uuid) -> Result<()> {
        let location: Option<Option<String>> =
            sqlx::query_scalar("DELETE FROM artifacts WHERE id = $1 RETURNING location").bind(id).fetch_optional(&self.pool).await?;
        if let Some(Some(path)) = location {
            let _ = tokio::fs::remove_file(path).await;
        }
        Ok(())
    }

    /// Stores directory `dir` (a checkpoint, an exported model) as one tar artifact.
    pub async fn put_dir(&self, team_id: Uuid, kind: &str, job_id: Option<Uuid>, dir: &Path) -> Result<Artifact> {
        let tar_path = dir.with_extension(format!("{}.tar", Uuid::new_v4().simple()));
        let (d, t) = (dir.to_path_buf(), tar_path.clone());
        tokio::task::spawn_blocking(move || pack_dir(&d, &t))
            .await
            .map_err(|e| PlatformError::Artifact(format!("packing {}: {e}", dir.display())))?
            .map_err(|e| PlatformError::Artifact(format!("packing {}: {e}", dir.display())))?;
        let stored = match tokio::fs::File::open(&tar_path).await {
            Ok(f) => self.put(team_id, kind, job_id, f).await,
            Err(e) => Err(PlatformError::Artifact(format!("{}: {e}", tar_path.display()))),
        };
        let _ = tokio::fs::remove_file(&tar_path).await;
        stored
    }

    /// A directory artifact unpacked under `cache/<sha256>.d`: fetched and unpacked
    /// once per content, then shared by every job that needs it. The tar is not kept.
    pub async fn cached_dir(&self, id: Uuid, cache: &Path) -> Result<PathBuf> {
        let artifact = self.get(id).await?.ok_or_else(|| corrupt(id, "not found or not complete".into()))?;
        let dir = cache.join(format!("{}.d", artifact.sha256));
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Ok(dir);
        }
        let tar = self.cached_file(id, cache).await?;
        let partial = cache.join(format!("{}.{}.partial.d", artifact.sha256, Uuid::new_v4().simple()));
        let (t, p) = (tar.clone(), partial.clone());
        let unpacked =
            tokio::task::spawn_blocking(move || tar::Archive::new(std::fs::File::open(&t)?).unpack(&p)).await.map_err(|e| corrupt(id, e.to_string()))?;
        let _ = tokio::fs::remove_file(&tar).await;
        if let Err(e) = unpacked {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            return Err(corrupt(id, format!("unpacking: {e}")));
        }
        // Renaming the finished folder into place: a reader never sees half of it.
        if let Err(e) = tokio::fs::rename(&partial, &dir).await {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
                return Err(corrupt(id, e.to_string()));
            }
        }
        Ok(dir)
    }
}

/// Writes `dir`'s files (recursively, paths relative to `dir`) into the tar `out`.
fn pack_dir(dir: &Path, out: &Path) -> std::io::Result<()> {
    let mut builder = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    builder.follow_symlinks(true);
    builder.append_dir_all(".", dir)?;
    builder.into_inner()?.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Fills `buf` unless the stream ends first; returns the bytes read.
async fn read_full(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}
