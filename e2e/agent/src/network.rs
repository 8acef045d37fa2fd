//! Pod networking with iproute2: one bridge on the host (its address is the pods' gateway and
//! the node's InternalIP, so the host reaches every pod IP directly), one network namespace per
//! pod with a veth whose peer is in the bridge. `/etc/netns/<netns>/` holds the pod's `hosts`,
//! `resolv.conf` and `hostname`, which `ip netns exec` bind-mounts over `/etc`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`ip {args}` failed: {stderr}")]
    Ip { args: String, stderr: String },
    #[error("failed to run `ip`: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `ip ARGS`, failing with its stderr.
async fn ip(args: &[&str]) -> Result<String, NetworkError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(NetworkError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetworkError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Creates the bridge with its address if missing and brings it up (idempotent).
pub async fn ensure_bridge(
    bridge: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetworkError> {
    if ip(&["link", "show", "dev", bridge]).await.is_err() {
        ip(&["link", "add", bridge, "type", "bridge"]).await?;
    }
    let cidr = format!("{addr}/{prefix_len}");
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", bridge]).await?;
    if !addrs.contains(&format!(" {cidr} ")) {
        ip(&["addr", "add", &cidr, "dev", bridge]).await?;
    }
    ip(&["link", "set", bridge, "up"]).await?;
    Ok(())
}

/// Network namespaces whose name starts with `prefix` (left over from an earlier run).
pub async fn list_netns(prefix: &str) -> Result<Vec<String>, NetworkError> {
    let out = ip(&["netns", "list"]).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect())
}

/// Where a pod's network is, and how it is named on the host.
#[derive(Debug, Clone)]
pub struct PodNetwork {
    pub netns: String,
    pub host_veth: String,
    pub ip: Ipv4Addr,
}

impl PodNetwork {
    /// Names derive from the pod uid: netns `<prefix><uid>`, host veth `ve<10 hex of uid>`.
    pub fn new(prefix: &str, uid: &str, ip: Ipv4Addr) -> Self {
        let hex: String = uid
            .chars()
            .filter(|c| c.is_ascii_hexdigit())
            .take(10)
            .collect();
        Self {
            netns: format!("{prefix}{uid}"),
            host_veth: format!("ve{hex}"),
            ip,
        }
    }

    pub fn etc_dir(&self) -> PathBuf {
        etc_dir(&self.netns)
    }

    /// Creates the namespace, the veth pair and the addresses; removes a half-made one first.
    pub async fn create(
        &self,
        bridge: &str,
        gateway: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetworkError> {
        self.delete().await;
        let peer = format!("{}p", self.host_veth);
        let ns = self.netns.as_str();
        ip(&["netns", "add", ns]).await?;
        ip(&[
            "link",
            "add",
            &self.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])
        .await?;
        ip(&["link", "set", &peer, "netns", ns]).await?;
        ip(&["link", "set", &self.host_veth, "master", bridge, "up"]).await?;
        ip(&["-n", ns, "link", "set", &peer, "name", "eth0"]).await?;
        let cidr = format!("{}/{prefix_len}", self.ip);
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        ip(&["-n", ns, "link", "set", "eth0", "up"]).await?;
        ip(&["-n", ns, "link", "set", "lo", "up"]).await?;
        ip(&[
            "-n",
            ns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ])
        .await?;
        Ok(())
    }

    /// Writes the pod's `/etc/netns/<netns>/{hostname,resolv.conf}` and an initial `hosts`.
    pub async fn write_etc(&self, hostname: &str, resolv_conf: &str) -> Result<(), NetworkError> {
        let dir = self.etc_dir();
        let write = |name: &'static str, text: String| {
            let path = dir.join(name);
            async move {
                tokio::fs::write(&path, text)
                    .await
                    .map_err(|source| NetworkError::Write { path, source })
            }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| NetworkError::Write {
                path: dir.clone(),
                source,
            })?;
        write("hostname", format!("{hostname}\n")).await?;
        write("resolv.conf", resolv_conf.to_owned()).await?;
        let hosts = dir.join("hosts");
        if !tokio::fs::try_exists(&hosts).await.unwrap_or(false) {
            write(
                "hosts",
                format!("127.0.0.1 localhost\n{} {hostname}\n", self.ip),
            )
            .await?;
        }
        Ok(())
    }

    /// Removes the namespace (its veth goes with it, and the host end with the peer) and its
    /// `/etc/netns` directory. Best effort: missing pieces are fine.
    pub async fn delete(&self) {
        delete_netns(&self.netns).await;
        let _ = ip(&["link", "del", &self.host_veth]).await;
    }
}

/// `/etc/netns/<netns>`.
pub fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// Deletes a namespace and its `/etc/netns` directory, best effort.
pub async fn delete_netns(netns: &str) {
    if let Err(e) = ip(&["netns", "del", netns]).await {
        tracing::debug!(netns, error = %e, "netns delete");
    }
    let _ = tokio::fs::remove_dir_all(etc_dir(netns)).await;
}

/// PIDs of processes running in a namespace.
pub async fn netns_pids(netns: &str) -> Vec<i32> {
    ip(&["netns", "pids", netns])
        .await
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_interface_name_limit() {
        let n = PodNetwork::new(
            "e2epod-",
            "0f3a9c1e-77aa-4bd0-9b1c-3d2f1a0e9c88",
            Ipv4Addr::new(10, 245, 0, 2),
        );
        assert_eq!(n.netns, "e2epod-0f3a9c1e-77aa-4bd0-9b1c-3d2f1a0e9c88");
        assert_eq!(n.host_veth, "ve0f3a9c1e77");
        assert!(format!("{}p", n.host_veth).len() <= 15);
    }
}
