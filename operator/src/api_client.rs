//! The operator's Kubernetes API client: kube's, with a deadline on the answer to every call.
//!
//! kube 5 sets no read timeout (so that exec streams and long watches survive), and its
//! watcher guards watches with an idle timeout of its own. Every other call would wait for
//! good on an API server that took the request and never answered, and kube-runtime runs one
//! reconcile per object at a time: that cluster would not be reconciled again until the
//! operator restarted. The deadline covers the wait for the response's head, which for a
//! watch comes as soon as the watch starts. A body that stalls after its head is not covered.

use std::time::Duration;

use tower::timeout::TimeoutLayer;

/// The layer that fails a call whose answer has not begun within `call_deadline`.
pub fn call_deadline_layer(call_deadline: Duration) -> TimeoutLayer {
    TimeoutLayer::new(call_deadline)
}

/// The client of the in-cluster config, or of the kubeconfig (`$KUBECONFIG`, `~/.kube/config`),
/// with `call_deadline` on every call.
pub async fn connect(call_deadline: Duration) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&call_deadline_layer(call_deadline))
        .build())
}
