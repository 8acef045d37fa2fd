//! Pod volumes as host directories: `emptyDir` (a fresh directory under the pod's scratch dir,
//! removed with the pod), `secret`, `configMap`, `downwardAPI` and `projected` (files projected
//! from the API objects; projected service-account tokens through the TokenRequest API),
//! `persistentVolumeClaim` (the bound PV's `hostPath`/`local` directory, see
//! [`crate::provisioner`]) and `hostPath`. The containers see them through bind mounts at their
//! `mountPath` (see [`crate::process`]).
//!
//! Projected volumes (secret, configMap, downwardAPI, projected) are written in the kubelet's
//! atomic layout ([`crate::atomic`]) and refreshed while the pod runs, as a kubelet does:
//! [`PodVolumes::refresh_every`] reads the objects again and swaps a changed set in at once.
//! A non-optional object that is missing or unreadable keeps the previous contents; a missing
//! optional one contributes nothing. Each volume is first fetched ([`PodVolumes::fetch`], the
//! only API access) and then projected from plain data ([`project`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::time::Instant;

use crate::atomic::{AtomicDir, AtomicError, Payload};
use crate::env::{self, EnvError, PodFacts, Sources};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {source}")]
    Source {
        volume: String,
        // Boxed: an EnvError is large and this error is returned on every projection step.
        #[source]
        source: Box<EnvError>,
    },
    #[error("volume {volume}: {kind} {name} not found")]
    Missing {
        volume: String,
        kind: &'static str,
        name: String,
    },
    #[error("volume {volume}: key {key} not found in {name}")]
    MissingKey {
        volume: String,
        name: String,
        key: String,
    },
    #[error("volume {volume}: claim {claim} is not bound yet")]
    Unbound { volume: String, claim: String },
    #[error("volume {volume}: PV {pv} has no hostPath or local path")]
    NoPath { volume: String, pv: String },
    #[error("volume {volume}: unsupported volume type")]
    Unsupported { volume: String },
    #[error("volume {volume}: {source}")]
    Files {
        volume: String,
        #[source]
        source: AtomicError,
    },
    #[error("volume {volume}: the file writer task failed: {source}")]
    Task {
        volume: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("volume {volume}: API request failed: {source}")]
    Api {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("volume {volume}: failed to create {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The API data one projected volume is made from, read before projecting.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// Secret name → its data, None when it does not exist.
    pub secrets: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// ConfigMap name → its data (text and binary), None when it does not exist.
    pub config_maps: BTreeMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// Projected service-account token path → token.
    pub tokens: BTreeMap<String, String>,
}

/// What one refresh of a volume did.
#[derive(Debug)]
pub enum Refreshed {
    Unchanged,
    Swapped,
    /// The new contents could not be made; the previous ones stay.
    Kept(VolumeError),
}

/// Whether the volume is projected from API data (and so written atomically and refreshed).
fn is_projected(volume: &Volume) -> bool {
    volume.secret.is_some()
        || volume.config_map.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// The files of a projected volume from already fetched data; None for other volume types.
pub fn project(
    volume: &Volume,
    objects: &Objects,
    pod: &Pod,
    facts: &PodFacts,
) -> Result<Option<Payload>, VolumeError> {
    let mut p = Projector {
        volume: &volume.name,
        payload: Payload::default(),
    };
    if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = objects.secrets.get(&name).and_then(Option::as_ref);
        let optional = s.optional.unwrap_or(false);
        p.key_files("Secret", &name, data, &s.items, s.default_mode, optional)?;
    } else if let Some(c) = &volume.config_map {
        let data = objects.config_maps.get(&c.name).and_then(Option::as_ref);
        let optional = c.optional.unwrap_or(false);
        p.key_files(
            "ConfigMap",
            &c.name,
            data,
            &c.items,
            c.default_mode,
            optional,
        )?;
    } else if let Some(d) = &volume.downward_api {
        p.downward_files(pod, facts, d.items.iter().flatten(), d.default_mode)?;
    } else if let Some(proj) = &volume.projected {
        let mode = proj.default_mode;
        for src in proj.sources.iter().flatten() {
            if let Some(s) = &src.secret {
                let data = objects.secrets.get(&s.name).and_then(Option::as_ref);
                let optional = s.optional.unwrap_or(false);
                p.key_files("Secret", &s.name, data, &s.items, mode, optional)?;
            }
            if let Some(c) = &src.config_map {
                let data = objects.config_maps.get(&c.name).and_then(Option::as_ref);
                let optional = c.optional.unwrap_or(false);
                p.key_files("ConfigMap", &c.name, data, &c.items, mode, optional)?;
            }
            if let Some(d) = &src.downward_api {
                p.downward_files(pod, facts, d.items.iter().flatten(), mode)?;
            }
            if let Some(t) = &src.service_account_token {
                let token = objects.tokens.get(&t.path).cloned().unwrap_or_default();
                p.file(&t.path, token.into_bytes(), mode.unwrap_or(0o644))?;
            }
        }
    } else {
        return Ok(None);
    }
    Ok(Some(p.payload))
}

/// Writes `projected` into `dir` unless it is an error, in which case `dir` keeps what it has.
pub async fn refresh_dir(
    volume: &str,
    dir: &Path,
    projected: Result<Payload, VolumeError>,
) -> Refreshed {
    let payload = match projected {
        Ok(p) => p,
        Err(e) => return Refreshed::Kept(e),
    };
    match write(volume, dir, payload).await {
        Ok(true) => Refreshed::Swapped,
        Ok(false) => Refreshed::Unchanged,
        Err(e) => Refreshed::Kept(e),
    }
}

/// [`AtomicDir::write`] off the async threads (it is plain blocking file I/O).
async fn write(volume: &str, dir: &Path, payload: Payload) -> Result<bool, VolumeError> {
    let atomic = AtomicDir::new(dir);
    tokio::task::spawn_blocking(move || atomic.write(&payload))
        .await
        .map_err(|source| VolumeError::Task {
            volume: volume.to_owned(),
            source,
        })?
        .map_err(|source| VolumeError::Files {
            volume: volume.to_owned(),
            source,
        })
}

/// A token from the TokenRequest API and when to ask for the next one.
#[derive(Debug, Clone)]
struct CachedToken {
    token: String,
    renew_at: Instant,
}

/// The volumes of one pod: written when it starts, refreshed while it runs.
pub struct PodVolumes {
    client: Client,
    pod: Pod,
    facts: PodFacts,
    dir: PathBuf,
    /// (volume, path) → token; renewed at 80 % of its lifetime, as the kubelet does.
    tokens: BTreeMap<(String, String), CachedToken>,
    /// The last refresh error per volume, so a lasting one is logged once.
    last_error: BTreeMap<String, String>,
}

impl PodVolumes {
    pub fn new(client: Client, pod: Pod, facts: PodFacts, dir: PathBuf) -> Self {
        Self {
            client,
            pod,
            facts,
            dir,
            tokens: BTreeMap::new(),
            last_error: BTreeMap::new(),
        }
    }

    fn volumes(&self) -> Vec<Volume> {
        self.pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
            .cloned()
            .collect()
    }

    /// Materialises every volume and returns each volume's host directory.
    pub async fn materialise(&mut self) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let mut sources = Sources::new(self.client.clone(), &namespace);
        let mut out = BTreeMap::new();
        for volume in self.volumes() {
            let path = self.materialise_one(&mut sources, &volume).await?;
            out.insert(volume.name.clone(), path);
        }
        Ok(out)
    }

    async fn materialise_one(
        &mut self,
        sources: &mut Sources,
        volume: &Volume,
    ) -> Result<PathBuf, VolumeError> {
        let name = volume.name.as_str();
        let vdir = self.dir.join(name);
        if let Some(claim) = &volume.persistent_volume_claim {
            let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
            return claim_path(&self.client, &namespace, name, &claim.claim_name).await;
        }
        if let Some(hp) = &volume.host_path {
            let path = PathBuf::from(&hp.path);
            if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
                mkdir(name, &path).await?;
            }
            return Ok(path);
        }
        if volume.empty_dir.is_some() {
            mkdir(name, &vdir).await?;
            return Ok(vdir);
        }
        if !is_projected(volume) {
            return Err(VolumeError::Unsupported {
                volume: name.to_owned(),
            });
        }
        let objects = self.fetch(sources, volume).await?;
        let payload = project(volume, &objects, &self.pod, &self.facts)?.unwrap_or_default();
        write(name, &vdir, payload).await?;
        Ok(vdir)
    }

    /// Reads what a projected volume is made of from the API.
    pub async fn fetch(
        &mut self,
        sources: &mut Sources,
        volume: &Volume,
    ) -> Result<Objects, VolumeError> {
        let name = volume.name.as_str();
        let source_err = |source| VolumeError::Source {
            volume: name.to_owned(),
            source: Box::new(source),
        };
        let mut objects = Objects::default();
        let mut secrets = Vec::new();
        let mut config_maps = Vec::new();
        if let Some(s) = &volume.secret {
            secrets.push(s.secret_name.clone().unwrap_or_default());
        }
        if let Some(c) = &volume.config_map {
            config_maps.push(c.name.clone());
        }
        for src in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(s) = &src.secret {
                secrets.push(s.name.clone());
            }
            if let Some(c) = &src.config_map {
                config_maps.push(c.name.clone());
            }
            if let Some(t) = &src.service_account_token {
                let token = self
                    .token(name, &t.path, t.audience.clone(), t.expiration_seconds)
                    .await?;
                objects.tokens.insert(t.path.clone(), token);
            }
        }
        for s in secrets {
            let data = sources.secret(&s).await.map_err(source_err)?;
            objects.secrets.insert(s, data);
        }
        for c in config_maps {
            let data = sources.config_map(&c).await.map_err(source_err)?;
            objects.config_maps.insert(c, data);
        }
        Ok(objects)
    }

    /// The cached token for `(volume, path)`, or a new one once 80 % of its lifetime is over.
    async fn token(
        &mut self,
        volume: &str,
        path: &str,
        audience: Option<String>,
        expiration: Option<i64>,
    ) -> Result<String, VolumeError> {
        let key = (volume.to_owned(), path.to_owned());
        if let Some(cached) = self.tokens.get(&key)
            && Instant::now() < cached.renew_at
        {
            return Ok(cached.token.clone());
        }
        let lifetime = expiration.unwrap_or(DEFAULT_TOKEN_SECONDS);
        let token = service_account_token(&self.client, &self.pod, audience, lifetime)
            .await
            .map_err(|source| VolumeError::Api {
                volume: volume.to_owned(),
                source,
            })?;
        let lifetime = Duration::from_secs(u64::try_from(lifetime).unwrap_or(0));
        let renew_at = Instant::now() + lifetime.mul_f64(0.8);
        self.tokens.insert(
            key,
            CachedToken {
                token: token.clone(),
                renew_at,
            },
        );
        Ok(token)
    }

    /// One pass over the projected volumes; returns how many were swapped.
    pub async fn refresh(&mut self) -> usize {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let pod = self.pod.metadata.name.clone().unwrap_or_default();
        // One read of each object per pass, shared by the volumes that use it.
        let mut sources = Sources::new(self.client.clone(), &namespace);
        let mut swapped = 0;
        for volume in self.volumes().iter().filter(|v| is_projected(v)) {
            let name = volume.name.as_str();
            let projected = match self.fetch(&mut sources, volume).await {
                Ok(objects) => {
                    project(volume, &objects, &self.pod, &self.facts).map(Option::unwrap_or_default)
                }
                Err(e) => Err(e),
            };
            match refresh_dir(name, &self.dir.join(name), projected).await {
                Refreshed::Unchanged => {
                    self.last_error.remove(name);
                }
                Refreshed::Swapped => {
                    self.last_error.remove(name);
                    swapped += 1;
                    tracing::info!(%pod, %namespace, volume = %name, "volume contents changed; swapped in");
                }
                Refreshed::Kept(e) => {
                    let message = e.to_string();
                    if self.last_error.get(name) != Some(&message) {
                        tracing::warn!(%pod, %namespace, volume = %name, error = %message, "volume not refreshed; the previous contents stay");
                        self.last_error.insert(name.to_owned(), message);
                    }
                }
            }
        }
        swapped
    }

    /// Refreshes every `period` until the task is aborted (when the pod stops).
    pub async fn refresh_every(mut self, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the volumes were just written.
        tick.tick().await;
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }
}

/// Lifetime of a projected token without `expirationSeconds` (the API's default, 1 h + 7 s).
const DEFAULT_TOKEN_SECONDS: i64 = 3607;

async fn mkdir(volume: &str, path: &Path) -> Result<(), VolumeError> {
    tokio::fs::create_dir_all(path)
        .await
        .map_err(|source| VolumeError::Io {
            volume: volume.to_owned(),
            path: path.to_owned(),
            source,
        })
}

/// Builds one volume's files, with the volume's name in every error.
struct Projector<'a> {
    volume: &'a str,
    payload: Payload,
}

impl Projector<'_> {
    fn file(&mut self, rel: &str, content: Vec<u8>, mode: i32) -> Result<(), VolumeError> {
        self.payload
            .insert(rel, content, mode)
            .map_err(|source| VolumeError::Files {
                volume: self.volume.to_owned(),
                source,
            })
    }

    /// Secret/ConfigMap keys as files: every key, or only `items` (key → path, mode). A missing
    /// object or key is an error unless `optional`, which leaves it out.
    fn key_files(
        &mut self,
        kind: &'static str,
        name: &str,
        data: Option<&BTreeMap<String, Vec<u8>>>,
        items: &Option<Vec<KeyToPath>>,
        default_mode: Option<i32>,
        optional: bool,
    ) -> Result<(), VolumeError> {
        let Some(data) = data else {
            if optional {
                return Ok(());
            }
            return Err(VolumeError::Missing {
                volume: self.volume.to_owned(),
                kind,
                name: name.to_owned(),
            });
        };
        let mode = default_mode.unwrap_or(0o644);
        match items {
            Some(items) => {
                for item in items {
                    let Some(content) = data.get(&item.key) else {
                        if optional {
                            continue;
                        }
                        return Err(VolumeError::MissingKey {
                            volume: self.volume.to_owned(),
                            name: name.to_owned(),
                            key: item.key.clone(),
                        });
                    };
                    self.file(&item.path, content.clone(), item.mode.unwrap_or(mode))?;
                }
            }
            None => {
                for (key, content) in data {
                    self.file(key, content.clone(), mode)?;
                }
            }
        }
        Ok(())
    }

    fn downward_files<'f>(
        &mut self,
        pod: &Pod,
        facts: &PodFacts,
        items: impl Iterator<Item = &'f DownwardAPIVolumeFile>,
        default_mode: Option<i32>,
    ) -> Result<(), VolumeError> {
        for item in items {
            let value = match &item.field_ref {
                Some(f) => {
                    env::field_value(pod, facts, f).map_err(|source| VolumeError::Source {
                        volume: self.volume.to_owned(),
                        source: Box::new(source),
                    })?
                }
                None => "0".to_owned(),
            };
            let mode = item.mode.or(default_mode).unwrap_or(0o644);
            self.file(&item.path, value.into_bytes(), mode)?;
        }
        Ok(())
    }
}

/// The host directory of the PV bound to `claim`.
async fn claim_path(
    client: &Client,
    namespace: &str,
    volume: &str,
    claim: &str,
) -> Result<PathBuf, VolumeError> {
    let api_err = |source| VolumeError::Api {
        volume: volume.to_owned(),
        source,
    };
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let pvc = claims
        .get_opt(claim)
        .await
        .map_err(api_err)?
        .ok_or_else(|| VolumeError::Missing {
            volume: volume.to_owned(),
            kind: "PersistentVolumeClaim",
            name: claim.to_owned(),
        })?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv_name = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    let (true, Some(pv_name)) = (bound, pv_name) else {
        return Err(VolumeError::Unbound {
            volume: volume.to_owned(),
            claim: claim.to_owned(),
        });
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs.get(&pv_name).await.map_err(api_err)?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| VolumeError::NoPath {
            volume: volume.to_owned(),
            pv: pv_name.clone(),
        })?;
    let path = PathBuf::from(path);
    mkdir(volume, &path).await?;
    Ok(path)
}

/// A bound service-account token for the pod (TokenRequest API).
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: i64,
) -> Result<String, kube::Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_owned());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audience.into_iter().collect(),
            expiration_seconds: Some(expiration),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let answer = api
        .create_token_request(&sa, &PostParams::default(), &request)
        .await?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::os::unix::fs::PermissionsExt;

    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ProjectedVolumeSource, SecretVolumeSource, VolumeProjection,
    };

    use super::*;

    fn facts() -> PodFacts {
        PodFacts {
            pod_ip: Ipv4Addr::new(10, 245, 0, 2),
            host_ip: Ipv4Addr::new(10, 245, 0, 1),
            hostname: "c-0".into(),
            apiserver: None,
        }
    }

    fn secret_volume(optional: bool) -> Volume {
        Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("c-tls".into()),
                optional: Some(optional),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        }
    }

    fn secret(data: Option<&[(&str, &str)]>) -> Objects {
        let data = data.map(|d| {
            d.iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect()
        });
        Objects {
            secrets: [("c-tls".to_owned(), data)].into(),
            ..Objects::default()
        }
    }

    async fn refresh(dir: &Path, volume: &Volume, objects: &Objects) -> Refreshed {
        let projected =
            project(volume, objects, &Pod::default(), &facts()).map(Option::unwrap_or_default);
        refresh_dir(&volume.name, dir, projected).await
    }

    fn read(dir: &Path, key: &str) -> Option<String> {
        std::fs::read_to_string(dir.join(key)).ok()
    }

    #[tokio::test]
    async fn a_changed_secret_is_swapped_in_with_all_its_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = secret_volume(false);
        let old = secret(Some(&[("c-0.crt", "old"), ("c-0.key", "old")]));
        let new = secret(Some(&[("c-0.crt", "new"), ("c-0.key", "new")]));
        assert!(matches!(
            refresh(tmp.path(), &volume, &old).await,
            Refreshed::Swapped
        ));
        assert!(matches!(
            refresh(tmp.path(), &volume, &old).await,
            Refreshed::Unchanged
        ));
        assert!(matches!(
            refresh(tmp.path(), &volume, &new).await,
            Refreshed::Swapped
        ));
        assert_eq!(read(tmp.path(), "c-0.crt").as_deref(), Some("new"));
        assert_eq!(read(tmp.path(), "c-0.key").as_deref(), Some("new"));
    }

    #[tokio::test]
    async fn a_deleted_secret_keeps_the_previous_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = secret_volume(false);
        refresh(tmp.path(), &volume, &secret(Some(&[("c-0.crt", "old")]))).await;
        let outcome = refresh(tmp.path(), &volume, &secret(None)).await;
        assert!(
            matches!(outcome, Refreshed::Kept(VolumeError::Missing { .. })),
            "{outcome:?}"
        );
        assert_eq!(read(tmp.path(), "c-0.crt").as_deref(), Some("old"));
    }

    #[tokio::test]
    async fn a_deleted_optional_secret_empties_the_volume() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = secret_volume(true);
        refresh(tmp.path(), &volume, &secret(Some(&[("c-0.crt", "old")]))).await;
        let outcome = refresh(tmp.path(), &volume, &secret(None)).await;
        assert!(matches!(outcome, Refreshed::Swapped), "{outcome:?}");
        assert_eq!(read(tmp.path(), "c-0.crt"), None);
    }

    #[tokio::test]
    async fn a_key_missing_from_items_keeps_the_previous_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let mut volume = secret_volume(false);
        if let Some(s) = volume.secret.as_mut() {
            s.items = Some(vec![KeyToPath {
                key: "c-0.crt".into(),
                path: "tls.crt".into(),
                mode: None,
            }]);
        }
        refresh(tmp.path(), &volume, &secret(Some(&[("c-0.crt", "old")]))).await;
        let outcome = refresh(tmp.path(), &volume, &secret(Some(&[("other", "x")]))).await;
        assert!(
            matches!(outcome, Refreshed::Kept(VolumeError::MissingKey { .. })),
            "{outcome:?}"
        );
        assert_eq!(read(tmp.path(), "tls.crt").as_deref(), Some("old"));
    }

    #[tokio::test]
    async fn items_default_mode_and_projected_sources_are_respected() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = Volume {
            name: "all".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(vec![
                    VolumeProjection {
                        secret: Some(k8s_openapi::api::core::v1::SecretProjection {
                            name: "c-tls".into(),
                            items: Some(vec![KeyToPath {
                                key: "c-0.key".into(),
                                path: "keys/member.key".into(),
                                mode: Some(0o400),
                            }]),
                            optional: None,
                        }),
                        ..VolumeProjection::default()
                    },
                    VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "settings".into(),
                            items: None,
                            optional: None,
                        }),
                        ..VolumeProjection::default()
                    },
                ]),
            }),
            ..Volume::default()
        };
        let mut objects = secret(Some(&[("c-0.key", "k"), ("c-0.crt", "c")]));
        objects.config_maps.insert(
            "settings".into(),
            Some([("level".to_owned(), b"info".to_vec())].into()),
        );
        refresh(tmp.path(), &volume, &objects).await;
        let mode = |rel: &str| {
            std::fs::metadata(tmp.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(read(tmp.path(), "keys/member.key").as_deref(), Some("k"));
        assert_eq!(mode("keys/member.key"), 0o400);
        assert_eq!(read(tmp.path(), "level").as_deref(), Some("info"));
        assert_eq!(mode("level"), 0o440);
        assert_eq!(read(tmp.path(), "c-0.crt"), None, "only the listed items");
    }
}
