//! A container's environment, as a kubelet builds it: `envFrom` (Secret/ConfigMap with prefix),
//! then `env` in order (literal values with `$(VAR)` expansion, `fieldRef`, `resourceFieldRef`,
//! `secretKeyRef`, `configMapKeyRef`), plus `KUBERNETES_SERVICE_HOST/PORT` pointing at the real
//! apiserver (no kube-proxy) and `HOSTNAME`. Secrets and ConfigMaps are read at container start.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectFieldSelector, Pod, Secret};
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{kind} {namespace}/{name} not found for env of container {container}")]
    MissingSource {
        kind: &'static str,
        namespace: String,
        name: String,
        container: String,
    },
    #[error("key {key} not found in {kind} {name} for env {var}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
        var: String,
    },
    #[error("unsupported fieldRef {0}")]
    FieldPath(String),
    #[error("failed to read {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Facts of the running pod that env vars can refer to.
#[derive(Debug, Clone)]
pub struct PodFacts {
    pub pod_ip: Ipv4Addr,
    pub host_ip: Ipv4Addr,
    pub hostname: String,
    pub apiserver: Option<(String, u16)>,
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Expands `$(NAME)` with earlier variables; `$$(NAME)` escapes to `$(NAME)`; unknown names
/// stay as written (kubelet semantics).
pub fn expand(value: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Value of a downward-API `fieldRef`.
pub fn field_value(
    pod: &Pod,
    facts: &PodFacts,
    sel: &ObjectFieldSelector,
) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let path = sel.field_path.as_str();
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default(),
        )
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        _ => from_map(&meta.labels, "metadata.labels['")
            .or_else(|| from_map(&meta.annotations, "metadata.annotations['"))
            .ok_or_else(|| EnvError::FieldPath(path.to_owned()))?,
    };
    Ok(value)
}

/// Reads Secrets and ConfigMaps of one namespace, once each per container start.
pub struct Sources {
    client: Client,
    namespace: String,
    secrets: BTreeMap<String, Option<Secret>>,
    config_maps: BTreeMap<String, Option<ConfigMap>>,
}

impl Sources {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            secrets: BTreeMap::new(),
            config_maps: BTreeMap::new(),
        }
    }

    /// The Secret's data as text, None if it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let s = api.get_opt(name).await.map_err(|source| EnvError::Read {
                kind: "Secret",
                name: name.to_owned(),
                source,
            })?;
            self.secrets.insert(name.to_owned(), s);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref).map(|s| {
            let mut out: BTreeMap<String, Vec<u8>> = s
                .data
                .as_ref()
                .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
                .unwrap_or_default();
            if let Some(sd) = &s.string_data {
                out.extend(sd.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())));
            }
            out
        }))
    }

    /// The ConfigMap's data (text and binary), None if it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, EnvError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let c = api.get_opt(name).await.map_err(|source| EnvError::Read {
                kind: "ConfigMap",
                name: name.to_owned(),
                source,
            })?;
            self.config_maps.insert(name.to_owned(), c);
        }
        Ok(self
            .config_maps
            .get(name)
            .and_then(Option::as_ref)
            .map(|c| {
                let mut out: BTreeMap<String, Vec<u8>> = c
                    .data
                    .as_ref()
                    .map(|d| d.iter().map(|(k, v)| (k.clone(), v.as_bytes().to_vec())))
                    .into_iter()
                    .flatten()
                    .collect();
                if let Some(b) = &c.binary_data {
                    out.extend(b.iter().map(|(k, v)| (k.clone(), v.0.clone())));
                }
                out
            }))
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// The full environment of `container`, in kubelet order (later entries win).
pub async fn container_env(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, EnvError> {
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), facts.hostname.clone()),
    ];
    if let Some((host, port)) = &facts.apiserver {
        vars.push(("KUBERNETES_SERVICE_HOST".to_owned(), host.clone()));
        vars.push(("KUBERNETES_SERVICE_PORT".to_owned(), port.to_string()));
        vars.push(("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), port.to_string()));
    }
    let missing = |kind: &'static str, name: &str| EnvError::MissingSource {
        kind,
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
        container: container.name.clone(),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(s) = &from.secret_ref {
            let d = sources.secret(&s.name).await?;
            if d.is_none() && !s.optional.unwrap_or(false) {
                return Err(missing("Secret", &s.name));
            }
            d
        } else if let Some(c) = &from.config_map_ref {
            let d = sources.config_map(&c.name).await?;
            if d.is_none() && !c.optional.unwrap_or(false) {
                return Err(missing("ConfigMap", &c.name));
            }
            d
        } else {
            None
        };
        for (k, v) in data.into_iter().flatten() {
            vars.push((format!("{prefix}{k}"), text(&v)));
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &vars)
        } else if let Some(src) = &e.value_from {
            if let Some(f) = &src.field_ref {
                field_value(pod, facts, f)?
            } else if let Some(r) = &src.resource_field_ref {
                // no resource accounting: report "0" for requests/limits
                tracing::debug!(resource = %r.resource, "resourceFieldRef reported as 0");
                "0".to_owned()
            } else if let Some(s) = &src.secret_key_ref {
                let data = sources.secret(&s.name).await?;
                match data.as_ref().and_then(|d| d.get(&s.key)) {
                    Some(v) => text(v),
                    None if s.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(EnvError::MissingKey {
                            kind: "Secret",
                            name: s.name.clone(),
                            key: s.key.clone(),
                            var: e.name.clone(),
                        });
                    }
                }
            } else if let Some(c) = &src.config_map_key_ref {
                let data = sources.config_map(&c.name).await?;
                match data.as_ref().and_then(|d| d.get(&c.key)) {
                    Some(v) => text(v),
                    None if c.optional.unwrap_or(false) => continue,
                    None => {
                        return Err(EnvError::MissingKey {
                            kind: "ConfigMap",
                            name: c.name.clone(),
                            key: c.key.clone(),
                            var: e.name.clone(),
                        });
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        vars.push((e.name.clone(), value));
    }
    // later entries win, keep one of each
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(String, String)> = vars
        .into_iter()
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn vars() -> Vec<(String, String)> {
        vec![("A".into(), "1".into()), ("B".into(), "two".into())]
    }

    #[test]
    fn references_to_earlier_variables_are_expanded() {
        assert_eq!(expand("x-$(A)-$(B)", &vars()), "x-1-two");
    }

    #[test]
    fn unknown_references_and_escapes_stay_literal() {
        assert_eq!(expand("$(C) $$(A) $x $(", &vars()), "$(C) $(A) $x $(");
    }

    #[test]
    fn field_refs_cover_name_namespace_ip_and_labels() {
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("raft-0".into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), "raft".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let facts = PodFacts {
            pod_ip: Ipv4Addr::new(10, 245, 0, 2),
            host_ip: Ipv4Addr::new(10, 245, 0, 1),
            hostname: "raft-0".into(),
            apiserver: None,
        };
        let sel = |p: &str| ObjectFieldSelector {
            field_path: p.into(),
            ..ObjectFieldSelector::default()
        };
        assert_eq!(
            field_value(&pod, &facts, &sel("metadata.name")).unwrap(),
            "raft-0"
        );
        assert_eq!(
            field_value(&pod, &facts, &sel("metadata.namespace")).unwrap(),
            "ns"
        );
        assert_eq!(
            field_value(&pod, &facts, &sel("status.podIP")).unwrap(),
            "10.245.0.2"
        );
        assert_eq!(
            field_value(&pod, &facts, &sel("metadata.labels['app']")).unwrap(),
            "raft"
        );
        assert!(field_value(&pod, &facts, &sel("spec.bogus")).is_err());
    }
}
