//! What every pod worker shares: the API client, the agent's configuration, the image map,
//! pod IP allocation, the DNS registry and the mount points it created.

use std::path::PathBuf;
use std::sync::Mutex;

use kube::Client;

use crate::config::AgentConfig;
use crate::dns::DnsRegistry;
use crate::image::ImageMap;
use crate::ipam::Ipam;
use crate::process::MountPoints;

/// What every pod worker shares.
pub struct Shared {
    pub client: Client,
    pub cfg: AgentConfig,
    pub images: ImageMap,
    pub ipam: Mutex<Ipam>,
    pub dns: DnsRegistry,
    pub mounts: MountPoints,
    pub self_exe: PathBuf,
    /// `KUBERNETES_SERVICE_HOST/PORT` for containers.
    pub apiserver: Option<(String, u16)>,
}
