//! Where backups are kept: a directory or an S3-compatible bucket, behind one interface
//! (`object_store`). A backup is two objects under the location's prefix: the snapshot image
//! `NAME` and its manifest `NAME.manifest.json` (`raft_api::backup::BackupManifest`). The image
//! is written first and the manifest last, so a backup exists once its manifest does; an image
//! without one is an interrupted upload and is never listed.
//!
//! Used by `raft-sidecar ctl backup` and the operator's scheduled backups (upload, retention),
//! and by `raft-sidecar restore` (the newest backup or a named one). S3 credentials, region and endpoint come from the standard `AWS_*`
//! variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, ...); an `http://` endpoint is allowed as given.

use std::sync::Arc;
use std::time::SystemTime;

use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use raft_api::backup::{BackupManifest, MANIFEST_SUFFIX};
use raft_api::client::SidecarClient;

/// File name suffix of the images this crate names.
pub const IMAGE_SUFFIX: &str = ".rsnp";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("{location}: cannot {action} {key}: {source}")]
    Store {
        location: String,
        action: &'static str,
        key: String,
        source: Box<object_store::Error>,
    },
    #[error("{location}: manifest {key} is not valid: {reason}")]
    Manifest {
        location: String,
        key: String,
        reason: String,
    },
    #[error("backing up to {name} in {location} failed: {reason}")]
    Upload {
        location: String,
        name: String,
        reason: String,
    },
    #[error("{location} holds no backup (no *{MANIFEST_SUFFIX})")]
    NoBackup { location: String },
}

/// An S3 location given explicitly (the operator, from a RaftCluster and a Secret) rather
/// than through the `AWS_*` variables.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// `s3://bucket/prefix`.
    pub fn location(&self) -> String {
        let prefix = self.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{prefix}", self.bucket)
        }
    }
}

/// A backup as listed: its name (the image's object name) and manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub name: String,
    pub manifest: BackupManifest,
}

/// What a location holds ([`BackupStore::survey`]).
#[derive(Debug)]
pub struct Listing {
    /// Backups whose manifest reads, oldest first.
    pub backups: Vec<Stored>,
    /// Backups whose manifest does not, by name.
    pub damaged: Vec<Damaged>,
}

/// A backup whose manifest cannot be read, and why.
#[derive(Debug)]
pub struct Damaged {
    pub name: String,
    pub error: BackupError,
}

/// One location holding backups.
#[derive(Debug, Clone)]
pub struct BackupStore {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    location: String,
}

impl BackupStore {
    /// `s3://bucket[/prefix]`, or a directory (created when missing).
    pub fn open(location: &str) -> Result<BackupStore, BackupError> {
        let bad = |reason: String| BackupError::Location {
            location: location.to_owned(),
            reason,
        };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("names no bucket (s3://BUCKET/PREFIX)".into()));
            }
            let mut builder = AmazonS3Builder::from_env().with_url(format!("s3://{bucket}"));
            if std::env::var("AWS_ENDPOINT_URL").is_ok_and(|e| e.starts_with("http://")) {
                builder = builder.with_allow_http(true);
            }
            let store = builder.build().map_err(|e| bad(e.to_string()))?;
            let prefix = prefix.trim_matches('/');
            return Ok(BackupStore {
                store: Arc::new(store),
                prefix: (!prefix.is_empty()).then(|| Path::from(prefix)),
                location: location.to_owned(),
            });
        }
        if location.contains("://") {
            return Err(bad("only s3:// URLs and directories are supported".into()));
        }
        std::fs::create_dir_all(location).map_err(|e| bad(format!("cannot create it: {e}")))?;
        let store = LocalFileSystem::new_with_prefix(location).map_err(|e| bad(e.to_string()))?;
        Ok(BackupStore {
            store: Arc::new(store),
            prefix: None,
            location: location.to_owned(),
        })
    }

    /// The bucket of `config`, its credentials given, not read from the environment.
    pub fn s3(config: &S3Config) -> Result<BackupStore, BackupError> {
        let location = config.location();
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"));
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        let store = builder.build().map_err(|e| BackupError::Location {
            location: location.clone(),
            reason: e.to_string(),
        })?;
        let prefix = config.prefix.trim_matches('/');
        Ok(BackupStore {
            store: Arc::new(store),
            prefix: (!prefix.is_empty()).then(|| Path::from(prefix)),
            location,
        })
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn key(&self, name: &str) -> Path {
        match &self.prefix {
            Some(p) => p.child(name),
            None => Path::from(name),
        }
    }

    fn failed<'a>(
        &'a self,
        action: &'static str,
        key: &'a Path,
    ) -> impl FnOnce(object_store::Error) -> BackupError + 'a {
        move |source| BackupError::Store {
            location: self.location.clone(),
            action,
            key: key.to_string(),
            source: Box::new(source),
        }
    }

    /// A writer for the image `name`: a multipart upload (parts of 10 MiB) completed by
    /// `shutdown`, or dropped unfinished by `abort`.
    pub fn image_writer(&self, name: &str) -> BufWriter {
        BufWriter::with_capacity(self.store.clone(), self.key(name), 10 << 20)
    }

    /// Back up the node `client` talks to: stream its current snapshot into the image `name`,
    /// then store the manifest (which makes the backup exist). An upload that fails is aborted.
    pub async fn upload(
        &self,
        client: &SidecarClient,
        name: &str,
    ) -> Result<BackupManifest, BackupError> {
        self.upload_within(client, name, None).await
    }

    /// [`Self::upload`], given up (and its multipart upload aborted, so no parts are left in
    /// the bucket) once `deadline` has passed.
    pub async fn upload_within(
        &self,
        client: &SidecarClient,
        name: &str,
        deadline: Option<std::time::Duration>,
    ) -> Result<BackupManifest, BackupError> {
        use tokio::io::AsyncWriteExt;
        // Never over an existing backup: the new image would replace the old one before the
        // new manifest does, and a failure in between would leave neither.
        if self.exists(name).await? {
            return Err(BackupError::Upload {
                location: self.location.clone(),
                name: name.to_owned(),
                reason: "a backup of that name is there already; choose another name".into(),
            });
        }
        let mut image = self.image_writer(name);
        let failed = |reason: String| BackupError::Upload {
            location: self.location.clone(),
            name: name.to_owned(),
            reason,
        };
        let download = async {
            match deadline {
                Some(d) => tokio::time::timeout(d, client.download_backup(&mut image))
                    .await
                    .unwrap_or_else(|_| {
                        Err(raft_api::client::ClientError::Backup {
                            url: name.to_owned(),
                            reason: format!("not done within {d:?}"),
                        })
                    }),
                None => client.download_backup(&mut image).await,
            }
        };
        let written = match download.await {
            Ok(manifest) => image
                .shutdown()
                .await
                .map(|()| manifest)
                .map_err(|e| failed(e.to_string())),
            Err(e) => Err(failed(e.to_string())),
        };
        let manifest = match written {
            Ok(m) => m,
            Err(e) => {
                let _ = image.abort().await;
                return Err(e);
            }
        };
        self.put_manifest(name, &manifest).await?;
        Ok(manifest)
    }

    /// Whether an image or a manifest named `name` is there already.
    pub async fn exists(&self, name: &str) -> Result<bool, BackupError> {
        for key in [
            self.key(name),
            self.key(&format!("{name}{MANIFEST_SUFFIX}")),
        ] {
            match self.store.head(&key).await {
                Ok(_) => return Ok(true),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("read", &key)(e)),
            }
        }
        Ok(false)
    }

    /// Store `manifest` for the image `name`: what makes the backup exist.
    pub async fn put_manifest(
        &self,
        name: &str,
        manifest: &BackupManifest,
    ) -> Result<(), BackupError> {
        let key = self.key(&format!("{name}{MANIFEST_SUFFIX}"));
        let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| BackupError::Manifest {
            location: self.location.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(self.failed("write", &key))
    }

    pub async fn manifest(&self, name: &str) -> Result<BackupManifest, BackupError> {
        let key = self.key(&format!("{name}{MANIFEST_SUFFIX}"));
        let bytes = async { self.store.get(&key).await?.bytes().await }
            .await
            .map_err(self.failed("read", &key))?;
        serde_json::from_slice(&bytes).map_err(|e| BackupError::Manifest {
            location: self.location.clone(),
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    /// Every backup directly under the prefix, oldest first (by `createdAt`, then name); the
    /// first backup whose manifest cannot be read is an error.
    pub async fn list(&self) -> Result<Vec<Stored>, BackupError> {
        let listing = self.survey().await?;
        match listing.damaged.into_iter().next() {
            Some(damaged) => Err(damaged.error),
            None => Ok(listing.backups),
        }
    }

    /// Every backup directly under the prefix: those whose manifest reads, oldest first (by
    /// `createdAt`, then name), and apart those whose manifest does not, by name. Only a
    /// failure to list or read the store is an error.
    pub async fn survey(&self) -> Result<Listing, BackupError> {
        let listed = self
            .store
            .list(self.prefix.as_ref())
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| BackupError::Store {
                location: self.location.clone(),
                action: "list",
                key: self
                    .prefix
                    .as_ref()
                    .map_or_else(String::new, Path::to_string),
                source: Box::new(source),
            })?;
        // Manifests directly under the prefix whose image is there too.
        let mut names: Vec<String> = listed
            .iter()
            .filter_map(|o| {
                let file = o.location.filename()?;
                let name = file.strip_suffix(MANIFEST_SUFFIX)?;
                (!name.is_empty() && o.location == self.key(file)).then_some(name)
            })
            .filter(|n| listed.iter().any(|o| o.location == self.key(n)))
            .map(str::to_owned)
            .collect();
        names.sort();
        names.dedup();
        let mut listing = Listing {
            backups: Vec::with_capacity(names.len()),
            damaged: Vec::new(),
        };
        for name in names {
            match self.manifest(&name).await {
                Ok(manifest) => listing.backups.push(Stored { name, manifest }),
                Err(error @ BackupError::Manifest { .. }) => {
                    listing.damaged.push(Damaged { name, error });
                }
                Err(other) => return Err(other),
            }
        }
        listing.backups.sort_by(|a, b| {
            (&a.manifest.created_at, &a.name).cmp(&(&b.manifest.created_at, &b.name))
        });
        Ok(listing)
    }

    /// The newest backup. A damaged manifest named after it (names sort by time) is an error:
    /// "the newest" would otherwise silently be an older backup than the one taken last.
    pub async fn latest(&self) -> Result<Stored, BackupError> {
        let mut listing = self.survey().await?;
        let newest = listing.backups.pop();
        let newer_damaged = listing
            .damaged
            .into_iter()
            .rfind(|d| newest.as_ref().is_none_or(|n| d.name > n.name));
        match (newest, newer_damaged) {
            (_, Some(damaged)) => Err(damaged.error),
            (Some(newest), None) => Ok(newest),
            (None, None) => Err(BackupError::NoBackup {
                location: self.location.clone(),
            }),
        }
    }

    /// The image `name`, streamed.
    pub async fn open_image(
        &self,
        name: &str,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + use<>, BackupError> {
        let key = self.key(name);
        let got = self
            .store
            .get(&key)
            .await
            .map_err(self.failed("read", &key))?;
        let location = self.location.clone();
        let stream = got
            .into_stream()
            .map(move |chunk| chunk.map_err(|e| std::io::Error::other(format!("{location}: {e}"))));
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// Delete a backup: its manifest first (it stops being listed), then its image.
    pub async fn delete(&self, name: &str) -> Result<(), BackupError> {
        for key in [
            self.key(&format!("{name}{MANIFEST_SUFFIX}")),
            self.key(name),
        ] {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.failed("delete", &key)(e)),
            }
        }
        Ok(())
    }

    /// Keep the newest `keep` backups, delete the others; the names deleted. A backup whose
    /// manifest cannot be read is neither counted nor deleted: what it holds is unknown.
    pub async fn prune(&self, keep: usize) -> Result<Vec<String>, BackupError> {
        let all = self.survey().await?.backups;
        let excess = all.len().saturating_sub(keep);
        let mut deleted = Vec::with_capacity(excess);
        for stored in all.into_iter().take(excess) {
            self.delete(&stored.name).await?;
            deleted.push(stored.name);
        }
        Ok(deleted)
    }
}

/// The name of a backup taken at `at`: `YYYYMMDDTHHMMSS.mmmZ.rsnp` (UTC), which sorts by time.
pub fn new_name(at: SystemTime) -> String {
    let stamp: String = humantime::format_rfc3339_millis(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    format!("{stamp}{IMAGE_SUFFIX}")
}

/// What `--from` (and `ctl backup TARGET`) names: a backup file (`prod.rsnp`), a directory
/// (existing, or named with a trailing `/`) or `s3://bucket/prefix` (its newest backup, or
/// where a new one goes), or `s3://bucket/prefix/NAME.rsnp` (that one). The store and the
/// name, `None` for "the newest".
pub fn source(from: &str) -> Result<(BackupStore, Option<String>), BackupError> {
    let split = |s: &str| -> Option<(String, String)> {
        let (dir, name) = s.rsplit_once('/')?;
        Some((dir.to_owned(), name.to_owned()))
    };
    if from.starts_with("s3://") {
        if from.ends_with(IMAGE_SUFFIX)
            && let Some((dir, name)) = split(from)
            && dir.len() > "s3://".len()
        {
            return Ok((BackupStore::open(&dir)?, Some(name)));
        }
        return Ok((BackupStore::open(from)?, None));
    }
    let path = std::path::Path::new(from);
    // A directory that exists, or one named with a trailing `/` (created).
    if path.is_dir() || from.ends_with('/') {
        return Ok((BackupStore::open(from)?, None));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| BackupError::Location {
            location: from.to_owned(),
            reason: "names no file".into(),
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let dir = dir.to_str().ok_or_else(|| BackupError::Location {
        location: from.to_owned(),
        reason: "is not UTF-8".into(),
    })?;
    Ok((BackupStore::open(dir)?, Some(name.to_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn manifest(created_at: &str) -> BackupManifest {
        BackupManifest {
            format: raft_api::backup::MANIFEST_FORMAT.into(),
            cluster_id: "c".into(),
            snapshot_id: "1-2-3".into(),
            last_log_index: 2,
            last_log_term: 1,
            journal_first_index: 1,
            journal_last_index: 1,
            size_bytes: 5,
            sha256: "00".into(),
            created_at: created_at.into(),
            sidecar_version: "0".into(),
            image_format: 3,
        }
    }

    async fn put(store: &BackupStore, name: &str, created_at: &str) {
        let mut w = store.image_writer(name);
        w.write_all(b"image").await.unwrap();
        w.shutdown().await.unwrap();
        store
            .put_manifest(name, &manifest(created_at))
            .await
            .unwrap();
    }

    /// An admin API whose snapshot download sends 11 MiB (past the first 10 MiB part, so a
    /// multipart upload is under way) and then stalls.
    async fn stalling_node() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n\
                x-raft-snapshot-id: 1-2-3\r\nx-raft-cluster-id: c\r\n\
                x-raft-last-log-index: 2\r\nx-raft-last-log-term: 1\r\n\
                x-raft-journal-first-index: 1\r\nx-raft-journal-last-index: 1\r\n\
                x-raft-image-format: 3\r\nx-raft-sidecar-version: 0\r\n\
                content-length: 20000000\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(&vec![7u8; 11 << 20]).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        });
        addr
    }

    #[tokio::test]
    async fn an_upload_past_its_deadline_fails_naming_it_and_leaves_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::open(dir.path().to_str().unwrap()).unwrap();
        let node = stalling_node().await;
        let client = SidecarClient::new(
            None,
            Some(&node.to_string()),
            None,
            std::time::Duration::from_secs(10),
        );
        let e = store
            .upload_within(
                &client,
                "late.rsnp",
                Some(std::time::Duration::from_secs(2)),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not done within"), "{e}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!store.exists("late.rsnp").await.unwrap());
    }

    #[tokio::test]
    async fn a_directory_lists_backups_oldest_first_and_prunes_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::open(dir.path().to_str().unwrap()).unwrap();
        assert!(matches!(
            store.latest().await,
            Err(BackupError::NoBackup { .. })
        ));
        put(&store, "b.rsnp", "2026-12-06T02:00:00.000Z").await;
        put(&store, "a.rsnp", "2026-12-06T03:00:00.000Z").await;
        put(&store, "c.rsnp", "2026-12-06T01:00:00.000Z").await;
        // An image whose upload never got its manifest is not a backup.
        let mut w = store.image_writer("torn.rsnp");
        w.write_all(b"half").await.unwrap();
        w.shutdown().await.unwrap();
        let names: Vec<String> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["c.rsnp", "b.rsnp", "a.rsnp"]);
        assert_eq!(store.latest().await.unwrap().name, "a.rsnp");
        let mut image = Vec::new();
        store
            .open_image("a.rsnp")
            .await
            .unwrap()
            .read_to_end(&mut image)
            .await
            .unwrap();
        assert_eq!(image, b"image");
        assert_eq!(store.prune(1).await.unwrap(), ["c.rsnp", "b.rsnp"]);
        assert!(!dir.path().join("b.rsnp").exists());
        assert!(!dir.path().join("b.rsnp.manifest.json").exists());
        assert_eq!(store.latest().await.unwrap().name, "a.rsnp");
    }

    #[tokio::test]
    async fn a_damaged_manifest_is_never_pruned_and_never_silently_skipped_as_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BackupStore::open(dir.path().to_str().unwrap()).unwrap();
        let damage = |name: &str| {
            std::fs::write(dir.path().join(name), b"image").unwrap();
            let manifest = format!("{name}{MANIFEST_SUFFIX}");
            std::fs::write(dir.path().join(manifest), b"{ not json").unwrap();
        };
        put(
            &store,
            "20261206T010000.000Z.rsnp",
            "2026-12-06T01:00:00.000Z",
        )
        .await;
        damage("20261206T020000.000Z.rsnp");
        put(
            &store,
            "20261206T030000.000Z.rsnp",
            "2026-12-06T03:00:00.000Z",
        )
        .await;
        put(
            &store,
            "20261206T040000.000Z.rsnp",
            "2026-12-06T04:00:00.000Z",
        )
        .await;

        // Listed apart; the strict list names it.
        let listing = store.survey().await.unwrap();
        assert_eq!(listing.backups.len(), 3);
        assert_eq!(listing.damaged[0].name, "20261206T020000.000Z.rsnp");
        let e = store.list().await.unwrap_err();
        assert!(e.to_string().contains("20261206T020000.000Z.rsnp"), "{e}");
        // Older than the newest good one: the newest is that one.
        assert_eq!(
            store.latest().await.unwrap().name,
            "20261206T040000.000Z.rsnp"
        );
        // Retention counts and deletes readable backups only.
        assert_eq!(store.prune(1).await.unwrap().len(), 2);
        assert!(dir.path().join("20261206T020000.000Z.rsnp").exists());

        // Newer than every good one: "the newest" is refused rather than an older backup.
        damage("20261206T050000.000Z.rsnp");
        let e = store.latest().await.unwrap_err();
        assert!(e.to_string().contains("20261206T050000.000Z.rsnp"), "{e}");
    }

    #[test]
    fn names_sort_by_time_and_sources_name_what_they_point_at() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_526_000_123);
        assert_eq!(new_name(t), "20261206T030000.123Z.rsnp");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("prod.snapshot");
        std::fs::write(&file, b"x").unwrap();
        let (store, name) = source(file.to_str().unwrap()).unwrap();
        assert_eq!(name.as_deref(), Some("prod.snapshot"));
        assert_eq!(store.location(), dir.path().to_str().unwrap());
        let (_, name) = source(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(name, None);
        let new_dir = format!("{}/new/", dir.path().display());
        let (store, name) = source(&new_dir).unwrap();
        assert_eq!(name, None, "a trailing / names a directory");
        assert!(dir.path().join("new").is_dir(), "{}", store.location());
        let (store, name) = source("s3://bucket/prod/x/20261206T032000.123Z.rsnp").unwrap();
        assert_eq!(
            (store.location(), name.as_deref()),
            ("s3://bucket/prod/x", Some("20261206T032000.123Z.rsnp"))
        );
        let (store, name) = source("s3://bucket/prod").unwrap();
        assert_eq!((store.location(), name), ("s3://bucket/prod", None));
        assert!(source("s3:///x").is_err());
        assert!(BackupStore::open("gs://bucket").is_err());
    }
}
