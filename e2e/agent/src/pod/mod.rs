//! The pod side of the agent: watches the pods bound to this node and runs one
//! [`worker::Worker`] task per pod uid. A pod with a `deletionTimestamp` gets a graceful stop
//! (its grace period) and is then deleted from the API by its worker; a pod that vanished from
//! the API (force deletion) is stopped at once. On agent shutdown every worker stops its pod
//! with `--shutdown-grace` and leaves the API objects alone.

pub mod container;
mod shared;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use shared::Shared;
use worker::{Msg, Worker};

struct Handle {
    tx: mpsc::UnboundedSender<Msg>,
    join: JoinHandle<()>,
    stopping: bool,
}

/// Grace period of a pod being deleted through the API.
fn deletion_grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

struct Controller {
    shared: Arc<Shared>,
    workers: HashMap<String, Handle>,
    /// uids whose worker has finished: later events about them are ignored.
    done: HashSet<String>,
}

impl Controller {
    fn on_pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if self.done.contains(&uid) {
            return;
        }
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let grace = deletion_grace(&pod);
        let handle = self.workers.entry(uid).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tracing::info!(pod = ?pod.metadata.name, namespace = ?pod.metadata.namespace, "new pod");
            let worker = Worker::new(self.shared.clone(), pod);
            Handle {
                tx,
                join: tokio::spawn(worker.run(rx)),
                stopping: false,
            }
        });
        if deleting && !handle.stopping {
            handle.stopping = true;
            let _ = handle.tx.send(Msg::Stop {
                grace,
                delete_from_api: true,
            });
        }
    }

    fn on_gone(&mut self, uid: &str) {
        if let Some(h) = self.workers.get_mut(uid)
            && !h.stopping
        {
            h.stopping = true;
            let _ = h.tx.send(Msg::Stop {
                grace: Duration::ZERO,
                delete_from_api: false,
            });
        }
    }

    fn collect_finished(&mut self) {
        let finished: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, h)| h.join.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in finished {
            self.workers.remove(&uid);
            self.done.insert(uid);
        }
    }

    async fn shutdown(self, grace: Duration) {
        for h in self.workers.values() {
            let _ = h.tx.send(Msg::Stop {
                grace,
                delete_from_api: false,
            });
        }
        let deadline = grace + Duration::from_secs(15);
        for (uid, h) in self.workers {
            if tokio::time::timeout(deadline, h.join).await.is_err() {
                tracing::error!(%uid, "pod worker did not stop in time");
            }
        }
    }
}

/// Runs the pods bound to the node until `shutdown` resolves, then stops them all.
pub async fn run(shared: Arc<Shared>, shutdown: impl Future<Output = ()>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.cfg.node_name));
    let mut stream = watcher(api, cfg).boxed();
    let grace = shared.cfg.shutdown_grace;
    let mut ctl = Controller {
        shared,
        workers: HashMap::new(),
        done: HashSet::new(),
    };
    let mut listed: HashSet<String> = HashSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = sweep.tick() => ctl.collect_finished(),
            event = stream.next() => match event {
                Some(Ok(watcher::Event::Apply(pod))) => ctl.on_pod(pod),
                Some(Ok(watcher::Event::Delete(pod))) => {
                    if let Some(uid) = pod.metadata.uid {
                        ctl.on_gone(&uid);
                    }
                }
                Some(Ok(watcher::Event::Init)) => listed.clear(),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.insert(uid);
                    }
                    ctl.on_pod(pod);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let gone: Vec<String> = ctl.workers.keys().filter(|u| !listed.contains(*u)).cloned().collect();
                    for uid in gone {
                        ctl.on_gone(&uid);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "pod watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => break,
            },
        }
    }
    tracing::info!(pods = ctl.workers.len(), "stopping all pods");
    ctl.shutdown(grace).await;
}
