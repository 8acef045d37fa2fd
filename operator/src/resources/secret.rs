//! The cluster Secret: the shared auth token (peer and admin traffic) and the cluster id the
//! sidecars are started with. Both are generated once and then read back, never regenerated:
//! a new token would lock the running members out, a new cluster id would make every data dir
//! refuse to open. It has no owner reference: like the volumes (retained when the
//! `RaftCluster` is deleted), it outlives the `RaftCluster`, so one re-created under the same
//! name adopts both.

use k8s_openapi::api::core::v1::Secret;
use rand::RngCore;

use super::meta::{retained_meta, secret_with};
use super::names::{CLUSTER_ID_KEY, ClusterNames, TOKEN_KEY};

/// The contents of the cluster Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    pub token: String,
    pub cluster_id: String,
}

// Never print the token: it is generated once and never logged.
impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("token", &"<redacted>")
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {name} has no usable key {key:?} (expected non-empty UTF-8)")]
    MissingKey { name: String, key: &'static str },
}

impl ClusterSecret {
    /// Fresh random token (256 bits) and cluster id.
    pub fn generate() -> Self {
        let mut rng = rand::rng();
        let mut token = [0u8; 32];
        rng.fill_bytes(&mut token);
        let mut id = [0u8; 8];
        rng.fill_bytes(&mut id);
        Self {
            token: hex(&token),
            cluster_id: format!("rc-{}", hex(&id)),
        }
    }

    /// Read back an existing Secret. A Secret without the keys is an error, not a reason to
    /// generate new ones: the members' data dirs already carry the old cluster id.
    pub fn from_secret(s: &Secret) -> Result<Self, SecretError> {
        let name = s.metadata.name.clone().unwrap_or_default();
        let get = |key: &'static str| {
            s.data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| SecretError::MissingKey {
                    name: name.clone(),
                    key,
                })
        };
        Ok(Self {
            token: get(TOKEN_KEY)?,
            cluster_id: get(CLUSTER_ID_KEY)?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn secret(names: &ClusterNames, contents: &ClusterSecret) -> Secret {
    secret_with(
        retained_meta(names, &names.secret()),
        [
            (TOKEN_KEY.to_owned(), contents.token.clone()),
            (CLUSTER_ID_KEY.to_owned(), contents.cluster_id.clone()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_reads_back_unchanged_and_never_prints_its_token() {
        let names = ClusterNames::new("prod", "ns", "cluster.local");
        let contents = ClusterSecret::generate();
        assert_eq!(contents.token.len(), 64);
        let built = secret(&names, &contents);
        assert!(
            built.metadata.owner_references.is_none(),
            "the identity outlives its RaftCluster"
        );
        assert_eq!(built.metadata.labels, Some(names.labels()));
        let read = ClusterSecret::from_secret(&built).unwrap();
        assert_eq!(read, contents);
        assert!(!format!("{read:?}").contains(&contents.token));
        assert_ne!(ClusterSecret::generate(), contents);
    }

    #[test]
    fn a_secret_missing_a_key_is_an_error_not_a_new_identity() {
        let s = Secret {
            metadata: ObjectMeta {
                name: Some("prod-token".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = ClusterSecret::from_secret(&s).unwrap_err().to_string();
        assert!(err.contains("prod-token") && err.contains("token"), "{err}");
    }

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}
