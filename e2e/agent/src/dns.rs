//! Headless-service DNS without a DNS server: every pod's `/etc/netns/<netns>/hosts` (which
//! `ip netns exec` bind-mounts over `/etc/hosts`) lists the names of the pods behind headless
//! services, with every short form a search domain would produce (the hosts file ignores search
//! domains). The files are rewritten in place (the bind mount pins the inode) whenever pods,
//! their readiness or services change. Rendering is a pure function; [`run_writer`] is the I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::network;

/// What DNS needs to know about a running pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub subdomain: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ip: Ipv4Addr,
    pub ready: bool,
    pub netns: String,
}

/// What DNS needs to know about a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub namespace: String,
    pub name: String,
    pub headless: bool,
    pub publish_not_ready: bool,
    pub selector: BTreeMap<String, String>,
}

impl ServiceEntry {
    fn from_service(svc: &Service) -> Option<Self> {
        let spec = svc.spec.as_ref()?;
        Some(Self {
            namespace: svc.metadata.namespace.clone()?,
            name: svc.metadata.name.clone()?,
            headless: spec.cluster_ip.as_deref() == Some("None"),
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            selector: spec.selector.clone().unwrap_or_default(),
        })
    }

    fn selects(&self, pod: &PodEntry) -> bool {
        pod.namespace == self.namespace
            && !self.selector.is_empty()
            && self
                .selector
                .iter()
                .all(|(k, v)| pod.labels.get(k) == Some(v))
    }
}

/// `fqdn` plus the names the search path `<ns>.svc.<domain> svc.<domain> <domain>` would
/// expand to it.
fn aliases(fqdn_without_domain: &str, namespace: &str, domain: &str) -> Vec<String> {
    let mut names = vec![format!("{fqdn_without_domain}.{domain}")];
    let svc_suffix = format!(".{namespace}.svc");
    if let Some(base) = fqdn_without_domain.strip_suffix(".svc") {
        names.push(fqdn_without_domain.to_owned());
        names.push(base.to_owned());
    }
    if let Some(base) = fqdn_without_domain.strip_suffix(&svc_suffix) {
        names.push(base.to_owned());
    }
    names
}

/// The hosts file of `own`, given every running pod and every known service.
pub fn render_hosts(
    own: &PodEntry,
    pods: &[PodEntry],
    services: &[ServiceEntry],
    domain: &str,
) -> String {
    let mut lines = vec![
        "# written by raft-test-agent".to_owned(),
        "127.0.0.1\tlocalhost".to_owned(),
        "::1\tlocalhost ip6-localhost ip6-loopback".to_owned(),
    ];
    let own_fqdn = own
        .subdomain
        .as_ref()
        .map(|sub| format!("{}.{sub}.{}.svc.{domain}", own.hostname, own.namespace));
    match own_fqdn {
        Some(fqdn) => lines.push(format!("{}\t{fqdn}\t{}", own.ip, own.hostname)),
        None => lines.push(format!("{}\t{}", own.ip, own.hostname)),
    }
    let mut svcs: Vec<&ServiceEntry> = services.iter().filter(|s| s.headless).collect();
    svcs.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut pods: Vec<&PodEntry> = pods.iter().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for svc in svcs {
        let members: Vec<&&PodEntry> = pods
            .iter()
            .filter(|p| svc.selects(p) && (p.ready || svc.publish_not_ready))
            .collect();
        for pod in &members {
            if pod.subdomain.as_deref() == Some(svc.name.as_str()) {
                let name = format!("{}.{}.{}.svc", pod.hostname, svc.name, svc.namespace);
                let names = aliases(&name, &svc.namespace, domain).join(" ");
                lines.push(format!("{}\t{names}", pod.ip));
            }
        }
        let svc_name = format!("{}.{}.svc", svc.name, svc.namespace);
        let names = aliases(&svc_name, &svc.namespace, domain).join(" ");
        for pod in &members {
            lines.push(format!("{}\t{names}", pod.ip));
        }
    }
    lines.push(String::new());
    lines.join("\n")
}

#[derive(Debug, Default)]
struct State {
    pods: HashMap<String, PodEntry>,
    services: HashMap<(String, String), ServiceEntry>,
}

/// Shared view of pods and services; every change wakes the writer.
#[derive(Debug, Clone, Default)]
pub struct DnsRegistry {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

impl DnsRegistry {
    fn with_state(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_one();
    }

    /// Adds or updates a pod (keyed by uid).
    pub fn upsert_pod(&self, uid: &str, entry: PodEntry) {
        self.with_state(|s| {
            s.pods.insert(uid.to_owned(), entry);
        });
    }

    pub fn remove_pod(&self, uid: &str) {
        self.with_state(|s| {
            s.pods.remove(uid);
        });
    }

    /// Sets a pod's readiness; a no-op (and no rewrite) when unchanged.
    pub fn set_ready(&self, uid: &str, ready: bool) {
        let changed = self
            .state
            .lock()
            .ok()
            .and_then(|mut s| {
                s.pods
                    .get_mut(uid)
                    .map(|p| std::mem::replace(&mut p.ready, ready))
            })
            .is_some_and(|old| old != ready);
        if changed {
            self.changed.notify_one();
        }
    }

    fn snapshot(&self) -> (Vec<PodEntry>, Vec<ServiceEntry>) {
        self.state
            .lock()
            .map(|s| {
                (
                    s.pods.values().cloned().collect(),
                    s.services.values().cloned().collect(),
                )
            })
            .unwrap_or_default()
    }

    /// Renders and writes the hosts file of one pod now (before its first container starts).
    pub async fn write_now(&self, uid: &str, domain: &str) {
        let (pods, services) = self.snapshot();
        let Some(own) = self
            .state
            .lock()
            .ok()
            .and_then(|s| s.pods.get(uid).cloned())
        else {
            return;
        };
        let text = render_hosts(&own, &pods, &services, domain);
        write_in_place(&own.netns, &text).await;
    }
}

/// Rewrites `/etc/netns/<netns>/hosts` keeping its inode (truncate + write, no rename).
async fn write_in_place(netns: &str, text: &str) {
    let path = network::etc_dir(netns).join("hosts");
    if let Err(e) = tokio::fs::write(&path, text).await {
        tracing::warn!(path = %path.display(), error = %e, "failed to write hosts file");
    }
}

/// Keeps every pod's hosts file current until the process ends.
pub async fn run_writer(registry: DnsRegistry, domain: String) {
    let mut written: HashMap<String, String> = HashMap::new();
    loop {
        registry.changed.notified().await;
        // let a burst of changes settle into one rewrite
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (pods, services) = registry.snapshot();
        written.retain(|netns, _| pods.iter().any(|p| &p.netns == netns));
        for own in &pods {
            let text = render_hosts(own, &pods, &services, &domain);
            if written.get(&own.netns) != Some(&text) {
                write_in_place(&own.netns, &text).await;
                written.insert(own.netns.clone(), text);
            }
        }
    }
}

/// Feeds Services (all namespaces) into the registry until the process ends.
pub async fn watch_services(client: Client, registry: DnsRegistry) {
    let api: Api<Service> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut fresh: HashMap<(String, String), ServiceEntry> = HashMap::new();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(svc)) => {
                if let Some(e) = ServiceEntry::from_service(&svc) {
                    registry.with_state(|s| {
                        s.services.insert((e.namespace.clone(), e.name.clone()), e);
                    });
                }
            }
            Ok(watcher::Event::Delete(svc)) => {
                if let Some(e) = ServiceEntry::from_service(&svc) {
                    registry.with_state(|s| {
                        s.services.remove(&(e.namespace, e.name));
                    });
                }
            }
            Ok(watcher::Event::Init) => fresh.clear(),
            Ok(watcher::Event::InitApply(svc)) => {
                if let Some(e) = ServiceEntry::from_service(&svc) {
                    fresh.insert((e.namespace.clone(), e.name.clone()), e);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let all = std::mem::take(&mut fresh);
                registry.with_state(|s| s.services = all);
            }
            Err(e) => {
                tracing::warn!(error = %e, "service watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: u8, ready: bool) -> PodEntry {
        PodEntry {
            namespace: "ns".into(),
            name: name.into(),
            hostname: name.into(),
            subdomain: Some("raft".into()),
            labels: [("app".to_string(), "raft".to_string())].into(),
            ip: Ipv4Addr::new(10, 245, 0, ip),
            ready,
            netns: format!("e2epod-{name}"),
        }
    }

    fn svc(publish_not_ready: bool) -> ServiceEntry {
        ServiceEntry {
            namespace: "ns".into(),
            name: "raft".into(),
            headless: true,
            publish_not_ready,
            selector: [("app".to_string(), "raft".to_string())].into(),
        }
    }

    #[test]
    fn pods_of_a_headless_service_resolve_under_every_search_form() {
        let pods = [pod("raft-0", 2, true), pod("raft-1", 3, true)];
        let text = render_hosts(&pods[0], &pods, &[svc(false)], "cluster.local");
        assert!(text.contains(
            "10.245.0.3\traft-1.raft.ns.svc.cluster.local raft-1.raft.ns.svc raft-1.raft.ns raft-1.raft\n"
        ));
        assert!(text.contains("10.245.0.2\traft-0.raft.ns.svc.cluster.local\traft-0\n"));
        assert!(text.contains("10.245.0.3\traft.ns.svc.cluster.local raft.ns.svc raft.ns raft\n"));
    }

    #[test]
    fn unready_pods_are_listed_only_when_the_service_publishes_them() {
        let pods = [pod("raft-0", 2, true), pod("raft-1", 3, false)];
        let hidden = render_hosts(&pods[0], &pods, &[svc(false)], "cluster.local");
        assert!(!hidden.contains("raft-1.raft"));
        let shown = render_hosts(&pods[0], &pods, &[svc(true)], "cluster.local");
        assert!(shown.contains("raft-1.raft.ns.svc.cluster.local"));
    }

    #[test]
    fn services_with_a_cluster_ip_or_another_namespace_add_nothing() {
        let pods = [pod("raft-0", 2, true), pod("raft-1", 3, true)];
        let mut not_headless = svc(true);
        not_headless.headless = false;
        let mut elsewhere = svc(true);
        elsewhere.namespace = "other".into();
        let text = render_hosts(&pods[0], &pods, &[not_headless, elsewhere], "cluster.local");
        assert!(!text.contains("raft-1"));
    }
}
