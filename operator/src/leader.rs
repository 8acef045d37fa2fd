//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can run
//! and only one reconciles at a time.
//!
//! The algorithm is client-go's: every write of the Lease is a replace carrying the
//! resourceVersion that was read, so of two contenders that read the same record only one write
//! succeeds (the other gets 409 Conflict and stays a standby). Whether another holder's lease has
//! expired is judged by this process's own monotonic clock — the time since it last saw the
//! record change — never by comparing the holder's `renewTime` with the local wall clock, so
//! clock skew between nodes cannot make a standby take over early.
//!
//! The leader renews every renew period. When renewals keep failing it steps down once the lease
//! duration has passed since the start of its last successful renewal: no standby can have taken
//! over before that, since a standby counts the duration from when it saw that renewal, which is
//! later. Stepping down means the caller stops reconciling and the process exits non-zero.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use rand::Rng;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};
use tracing::{info, warn};

/// Where the Lease lives, who we are, and the timing of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    pub namespace: String,
    pub name: String,
    /// `holderIdentity` written by this replica: unique among the contenders.
    pub identity: String,
    /// How long a holder's claim lasts after its last renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_period: Duration,
    /// How often a standby tries to acquire, and a leader retries a failed renewal.
    pub retry_period: Duration,
}

/// Why the leader stepped down.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the leader Lease {namespace}/{name}: not renewed for the lease duration ({lease_duration:?}); stepping down"
    )]
    RenewDeadline {
        namespace: String,
        name: String,
        lease_duration: Duration,
    },
    #[error(
        "lost the leader Lease {namespace}/{name}: it is now held by {holder:?}; stepping down"
    )]
    TakenOver {
        namespace: String,
        name: String,
        holder: Option<String>,
    },
}

/// What one attempt to acquire or renew found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the Lease (acquired or renewed just now).
    Leader,
    /// Another holder's claim is current; `None` when our create lost to another's.
    HeldBy(Option<String>),
    /// The Lease changed between our read and our write (409): someone else wrote first.
    Conflict,
}

/// The holderIdentity to use when none is configured: the host name (the pod name in a pod)
/// plus a random suffix, so that two processes on one host never share an identity.
pub fn fallback_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "raft-operator".to_owned());
    let suffix: u32 = rand::rng().random();
    format!("{host}-{suffix:08x}")
}

/// The record last read, and when (by our clock) it was first seen in that state.
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    lease_duration: Option<Duration>,
    since: Instant,
}

/// One contender: [`acquire`](Elector::acquire) waits as a standby, [`hold`](Elector::hold)
/// renews until leadership is lost, [`release`](Elector::release) hands it over.
pub struct Elector {
    api: Api<Lease>,
    config: ElectionConfig,
    observed: Option<Observed>,
    /// Start of the last attempt that left us the holder.
    last_renewed: Option<Instant>,
}

impl Elector {
    pub fn new(client: kube::Client, config: ElectionConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renewed: None,
        }
    }

    /// One round of the election: read the Lease, and write ourselves into it when it is ours,
    /// free or expired.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let identity = self.config.identity.clone();
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(identity),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.won(&created, started)),
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => {
                    Ok(Attempt::HeldBy(None))
                }
                Err(e) => Err(e),
            };
        };
        self.observe(&lease, started);
        let holder = self.observed.as_ref().and_then(|o| o.holder.clone());
        let ours = holder.as_deref() == Some(identity.as_str());
        if !ours && holder.is_some() && !self.expired(started) {
            return Ok(Attempt::HeldBy(holder));
        }
        let mut next = lease;
        let spec = next.spec.get_or_insert_with(LeaseSpec::default);
        if !ours {
            spec.holder_identity = Some(identity);
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(seconds);
        // `next` keeps the resourceVersion we read: the API server refuses the replace if anyone
        // wrote the Lease since.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => Ok(self.won(&written, started)),
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    fn won(&mut self, lease: &Lease, started: Instant) -> Attempt {
        self.observe(lease, started);
        self.last_renewed = Some(started);
        Attempt::Leader
    }

    fn observe(&mut self, lease: &Lease, now: Instant) {
        let resource_version = lease.metadata.resource_version.clone();
        if let Some(o) = &self.observed
            && o.resource_version.is_some()
            && o.resource_version == resource_version
        {
            return;
        }
        let spec = lease.spec.clone().unwrap_or_default();
        self.observed = Some(Observed {
            resource_version,
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
            since: now,
        });
    }

    /// Whether the record we last read has gone unchanged for longer than its holder's lease
    /// duration (ours when the record names none).
    fn expired(&self, now: Instant) -> bool {
        self.observed.as_ref().is_none_or(|o| {
            let duration = o.lease_duration.unwrap_or(self.config.lease_duration);
            now.saturating_duration_since(o.since) >= duration
        })
    }

    /// Wait as a standby until we hold the Lease.
    pub async fn acquire(&mut self) {
        let mut last_holder = None;
        loop {
            match timeout(self.config.lease_duration, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leader)) => {
                    info!(lease = %self.config.name, namespace = %self.config.namespace,
                        identity = %self.config.identity, "acquired the leader Lease");
                    return;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    if holder != last_holder {
                        info!(holder = ?holder, lease = %self.config.name,
                            "standby: the leader Lease is held by another replica");
                        last_holder = holder;
                    }
                }
                Ok(Ok(Attempt::Conflict)) => {
                    info!(lease = %self.config.name, "another replica wrote the Lease first");
                }
                Ok(Err(e)) => {
                    warn!(error = %e, lease = %self.config.name, "cannot read or write the leader Lease")
                }
                Err(_) => warn!(lease = %self.config.name, "the leader Lease call timed out"),
            }
            sleep(self.config.retry_period).await;
        }
    }

    /// Renew while we hold the Lease; returns when we no longer may act as leader.
    pub async fn hold(&mut self) -> LeaderError {
        let mut next = self
            .last_renewed
            .map_or_else(Instant::now, |t| t + self.config.renew_period);
        loop {
            sleep_until(next).await;
            let deadline = self
                .last_renewed
                .map_or_else(Instant::now, |t| t + self.config.lease_duration);
            if Instant::now() >= deadline {
                return self.renew_deadline();
            }
            // A call that hangs must not keep us acting past the deadline.
            match timeout_at(deadline, self.try_acquire_or_renew()).await {
                Err(_) => return self.renew_deadline(),
                Ok(Ok(Attempt::Leader)) => {
                    next = Instant::now().max(
                        self.last_renewed.unwrap_or_else(Instant::now) + self.config.renew_period,
                    );
                    continue;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    return LeaderError::TakenOver {
                        namespace: self.config.namespace.clone(),
                        name: self.config.name.clone(),
                        holder,
                    };
                }
                // A write between our read and ours, maybe not a new holder: read again.
                Ok(Ok(Attempt::Conflict)) => {
                    info!(lease = %self.config.name, "the Lease changed under the renewal; retrying");
                }
                Ok(Err(e)) => {
                    warn!(error = %e, lease = %self.config.name, "renewing the leader Lease failed; retrying");
                }
            }
            next = (Instant::now() + self.config.retry_period).min(deadline);
        }
    }

    fn renew_deadline(&self) -> LeaderError {
        LeaderError::RenewDeadline {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            lease_duration: self.config.lease_duration,
        }
    }

    /// Give the Lease up (on a clean shutdown, after the controllers stopped) so that a standby
    /// takes over at its next retry instead of after the lease duration. Does nothing unless we
    /// still hold it.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.last_renewed = None;
        info!(lease = %self.config.name, "released the leader Lease");
        Ok(())
    }
}
