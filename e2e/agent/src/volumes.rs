//! Pod volumes as host directories, materialised once when the pod starts:
//! `emptyDir` (a fresh directory under the pod's scratch dir, removed with the pod), `secret`,
//! `configMap`, `downwardAPI` and `projected` (files written from the API objects; projected
//! service-account tokens through the TokenRequest API), `persistentVolumeClaim` (the bound PV's
//! `hostPath`/`local` directory, see [`crate::provisioner`]) and `hostPath`. The containers see
//! them through bind mounts at their `mountPath` (see [`crate::process`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, ServiceAccount,
    Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::env::{self, EnvError, PodFacts, Sources};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume {volume}: {source}")]
    Source {
        volume: String,
        #[source]
        source: EnvError,
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
    #[error("volume {volume}: path {path} escapes the volume")]
    BadPath { volume: String, path: String },
    #[error("volume {volume}: API request failed: {source}")]
    Api {
        volume: String,
        #[source]
        source: kube::Error,
    },
    #[error("volume {volume}: failed to write {path}: {source}")]
    Io {
        volume: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Materialises every volume of `pod` under `dir` and returns each volume's host directory.
pub async fn materialise(
    client: &Client,
    pod: &Pod,
    facts: &PodFacts,
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut sources = Sources::new(client.clone(), &namespace);
    let mut out = BTreeMap::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = materialise_one(client, &mut sources, pod, facts, dir, volume).await?;
        out.insert(volume.name.clone(), path);
    }
    Ok(out)
}

async fn materialise_one(
    client: &Client,
    sources: &mut Sources,
    pod: &Pod,
    facts: &PodFacts,
    dir: &Path,
    volume: &Volume,
) -> Result<PathBuf, VolumeError> {
    let name = volume.name.as_str();
    let vdir = dir.join(name);
    let writer = Writer { volume: name };
    if let Some(claim) = &volume.persistent_volume_claim {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        return claim_path(client, &namespace, name, &claim.claim_name).await;
    }
    if let Some(hp) = &volume.host_path {
        let path = PathBuf::from(&hp.path);
        if matches!(hp.type_.as_deref(), Some("DirectoryOrCreate")) {
            writer.mkdir(&path).await?;
        }
        return Ok(path);
    }
    writer.mkdir(&vdir).await?;
    if volume.empty_dir.is_some() {
        return Ok(vdir);
    }
    if let Some(s) = &volume.secret {
        let secret_name = s.secret_name.clone().unwrap_or_default();
        let data = sources
            .secret(&secret_name)
            .await
            .map_err(|source| writer.source(source))?;
        let optional = s.optional.unwrap_or(false);
        writer
            .key_files(
                &vdir,
                "Secret",
                &secret_name,
                data,
                &s.items,
                s.default_mode,
                optional,
            )
            .await?;
        return Ok(vdir);
    }
    if let Some(c) = &volume.config_map {
        let data = sources
            .config_map(&c.name)
            .await
            .map_err(|source| writer.source(source))?;
        let optional = c.optional.unwrap_or(false);
        writer
            .key_files(
                &vdir,
                "ConfigMap",
                &c.name,
                data,
                &c.items,
                c.default_mode,
                optional,
            )
            .await?;
        return Ok(vdir);
    }
    if let Some(d) = &volume.downward_api {
        writer
            .downward_files(&vdir, pod, facts, d.items.iter().flatten(), d.default_mode)
            .await?;
        return Ok(vdir);
    }
    if let Some(p) = &volume.projected {
        for src in p.sources.iter().flatten() {
            if let Some(s) = &src.secret {
                let data = sources
                    .secret(&s.name)
                    .await
                    .map_err(|source| writer.source(source))?;
                let optional = s.optional.unwrap_or(false);
                writer
                    .key_files(
                        &vdir,
                        "Secret",
                        &s.name,
                        data,
                        &s.items,
                        p.default_mode,
                        optional,
                    )
                    .await?;
            }
            if let Some(c) = &src.config_map {
                let data = sources
                    .config_map(&c.name)
                    .await
                    .map_err(|source| writer.source(source))?;
                let optional = c.optional.unwrap_or(false);
                writer
                    .key_files(
                        &vdir,
                        "ConfigMap",
                        &c.name,
                        data,
                        &c.items,
                        p.default_mode,
                        optional,
                    )
                    .await?;
            }
            if let Some(d) = &src.downward_api {
                writer
                    .downward_files(&vdir, pod, facts, d.items.iter().flatten(), p.default_mode)
                    .await?;
            }
            if let Some(t) = &src.service_account_token {
                let token =
                    service_account_token(client, pod, t.audience.clone(), t.expiration_seconds)
                        .await
                        .map_err(|source| VolumeError::Api {
                            volume: name.to_owned(),
                            source,
                        })?;
                writer
                    .file(
                        &vdir,
                        &t.path,
                        token.as_bytes(),
                        p.default_mode.unwrap_or(0o644),
                    )
                    .await?;
            }
        }
        return Ok(vdir);
    }
    Err(VolumeError::Unsupported {
        volume: name.to_owned(),
    })
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
    Writer { volume }.mkdir(&path).await?;
    Ok(path)
}

/// A bound service-account token for the pod (TokenRequest API).
async fn service_account_token(
    client: &Client,
    pod: &Pod,
    audience: Option<String>,
    expiration: Option<i64>,
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
            expiration_seconds: Some(expiration.unwrap_or(3607)),
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

/// File writing with the volume's name in every error.
struct Writer<'a> {
    volume: &'a str,
}

impl Writer<'_> {
    fn source(&self, source: EnvError) -> VolumeError {
        VolumeError::Source {
            volume: self.volume.to_owned(),
            source,
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> VolumeError {
        VolumeError::Io {
            volume: self.volume.to_owned(),
            path: path.to_owned(),
            source,
        }
    }

    async fn mkdir(&self, path: &Path) -> Result<(), VolumeError> {
        tokio::fs::create_dir_all(path)
            .await
            .map_err(|e| self.io(path, e))
    }

    /// Writes `dir/rel` (relative, no `..`) with `mode`.
    async fn file(
        &self,
        dir: &Path,
        rel: &str,
        content: &[u8],
        mode: i32,
    ) -> Result<(), VolumeError> {
        let rel_path = Path::new(rel);
        if rel_path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(VolumeError::BadPath {
                volume: self.volume.to_owned(),
                path: rel.to_owned(),
            });
        }
        let path = dir.join(rel_path);
        if let Some(parent) = path.parent() {
            self.mkdir(parent).await?;
        }
        tokio::fs::write(&path, content)
            .await
            .map_err(|e| self.io(&path, e))?;
        let perms = std::fs::Permissions::from_mode(u32::try_from(mode).unwrap_or(0o644) & 0o7777);
        tokio::fs::set_permissions(&path, perms)
            .await
            .map_err(|e| self.io(&path, e))
    }

    /// Secret/ConfigMap keys as files: every key, or only `items` (key → path, mode).
    #[expect(
        clippy::too_many_arguments,
        reason = "the fields of one KeyToPath projection"
    )]
    async fn key_files(
        &self,
        dir: &Path,
        kind: &'static str,
        name: &str,
        data: Option<BTreeMap<String, Vec<u8>>>,
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
                    self.file(dir, &item.path, content, item.mode.unwrap_or(mode))
                        .await?;
                }
            }
            None => {
                for (key, content) in &data {
                    self.file(dir, key, content, mode).await?;
                }
            }
        }
        Ok(())
    }

    async fn downward_files(
        &self,
        dir: &Path,
        pod: &Pod,
        facts: &PodFacts,
        items: impl Iterator<Item = &DownwardAPIVolumeFile>,
        default_mode: Option<i32>,
    ) -> Result<(), VolumeError> {
        for item in items {
            let value = match &item.field_ref {
                Some(f) => env::field_value(pod, facts, f).map_err(|e| self.source(e))?,
                None => "0".to_owned(),
            };
            let mode = item.mode.or(default_mode).unwrap_or(0o644);
            self.file(dir, &item.path, value.as_bytes(), mode).await?;
        }
        Ok(())
    }
}
