//! Which pod template the StatefulSet gets. A new operator may render the same spec into another
//! template (a new variable, a default affinity); applied as it is, that alone would restart
//! every cluster at once after an operator upgrade. So the StatefulSet carries two digests:
//! of what its template was made from ([`TEMPLATE_INPUTS_ANNOTATION`]: the spec but for the
//! fields no pod sees, the sidecar image, the upgrade request acted on, the cluster domain) and
//! of the template the operator rendered ([`TEMPLATE_RENDERED_ANNOTATION`]). Then:
//!
//! - the inputs changed (the user edited the spec, or asked for an upgrade): the new rendering,
//!   which rolls the pods, with whatever the operator changed folded into the same roll;
//! - same inputs, same rendering: the rendering again (a hand edit of the StatefulSet is undone);
//! - same inputs, another rendering (only the operator changed): the template the StatefulSet
//!   has is kept, so no pod restarts until the cluster's inputs change;
//! - a StatefulSet of an operator that wrote no digests is kept as well when the spec did not
//!   change since the last reconcile (`observedGeneration`), else rendered anew.
//!
//! [`TEMPLATE_EPOCH`] is bumped when a release needs pods to change with the operator (a fix
//! that does not work on the old template): it changes every cluster's inputs.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use raft_api::admin::hex;
use raft_crds::RaftClusterSpec;
use raft_crds::spec::NetworkPolicySpec;
use sha2::{Digest, Sha256};

/// Annotation of the StatefulSet: digest of what its pod template was made from.
pub const TEMPLATE_INPUTS_ANNOTATION: &str = "consensus.unrdf.io/template-inputs";
/// Annotation of the StatefulSet: digest of the pod template the operator rendered.
pub const TEMPLATE_RENDERED_ANNOTATION: &str = "consensus.unrdf.io/template-rendered";
/// Part of every cluster's inputs: bump it to roll every cluster onto a new template.
const TEMPLATE_EPOCH: u32 = 1;

/// The template the StatefulSet in the cluster has, and its digests.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppliedTemplate {
    pub template: PodTemplateSpec,
    pub inputs: Option<String>,
    pub rendered: Option<String>,
}

/// What a cluster's pod template is made from, besides the operator's code.
#[derive(Debug, Clone, Copy)]
pub struct TemplateInputs<'a> {
    pub spec: &'a RaftClusterSpec,
    pub sidecar_image: &'a str,
    /// `status.sidecarUpgradeRequest` from this reconcile on.
    pub upgrade_request: Option<&'a str>,
    pub cluster_domain: &'a str,
}

impl TemplateInputs<'_> {
    pub fn digest(&self) -> String {
        // Fields no pod sees: changing them must not restart anything.
        let spec = RaftClusterSpec {
            replicas: 0,
            paused: false,
            network_policy: NetworkPolicySpec::default(),
            ..self.spec.clone()
        };
        digest(&(
            TEMPLATE_EPOCH,
            spec,
            self.sidecar_image,
            self.upgrade_request,
            self.cluster_domain,
        ))
    }
}

pub fn rendered_digest(template: &PodTemplateSpec) -> String {
    digest(template)
}

fn digest(value: &impl serde::Serialize) -> String {
    // Serializing these types cannot fail (no maps with non-string keys).
    let text = serde_json::to_vec(value).unwrap_or_default();
    hex(&Sha256::digest(&text)[..12])
}

/// Whether the StatefulSet gets the operator's rendering or keeps its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateChoice {
    /// No StatefulSet yet, or its inputs changed, or the rendering is the one it has.
    Render,
    /// Only the operator changed: the template stays as it is.
    Keep,
}

/// `spec_reconciled`: the spec did not change since the last reconcile (used only for a
/// StatefulSet without digests).
pub fn choose(
    applied: Option<&AppliedTemplate>,
    inputs: &str,
    rendered: &str,
    spec_reconciled: bool,
) -> TemplateChoice {
    let Some(applied) = applied else {
        return TemplateChoice::Render;
    };
    match applied.inputs.as_deref() {
        None if spec_reconciled => TemplateChoice::Keep,
        Some(i) if i == inputs && applied.rendered.as_deref() != Some(rendered) => {
            TemplateChoice::Keep
        }
        _ => TemplateChoice::Render,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(spec: &RaftClusterSpec) -> String {
        TemplateInputs {
            spec,
            sidecar_image: "raft-sidecar:0.1.0",
            upgrade_request: None,
            cluster_domain: "cluster.local",
        }
        .digest()
    }

    fn applied(inputs: &str, rendered: &str) -> AppliedTemplate {
        AppliedTemplate {
            template: PodTemplateSpec::default(),
            inputs: Some(inputs.to_owned()),
            rendered: Some(rendered.to_owned()),
        }
    }

    #[test]
    fn only_fields_a_pod_sees_change_the_inputs() {
        let spec = RaftClusterSpec::default();
        let base = inputs(&spec);
        let mut scaled = spec.clone();
        scaled.replicas = 5;
        scaled.paused = true;
        scaled.network_policy.enabled = false;
        assert_eq!(inputs(&scaled), base);
        let mut tuned = spec.clone();
        tuned.raft.heartbeat_ms += 1;
        assert_ne!(inputs(&tuned), base);
        let asked = TemplateInputs {
            spec: &spec,
            sidecar_image: "raft-sidecar:0.1.0",
            upgrade_request: Some("1"),
            cluster_domain: "cluster.local",
        };
        assert_ne!(asked.digest(), base, "an upgrade request is a new input");
    }

    #[test]
    fn a_new_rendering_of_the_same_inputs_is_held_and_new_inputs_are_rendered() {
        let i = inputs(&RaftClusterSpec::default());
        let held = applied(&i, "old-operator");
        assert_eq!(
            choose(Some(&held), &i, "new-operator", false),
            TemplateChoice::Keep
        );
        assert_eq!(
            choose(Some(&held), "other-inputs", "new-operator", true),
            TemplateChoice::Render
        );
        let same = applied(&i, "same");
        assert_eq!(
            choose(Some(&same), &i, "same", true),
            TemplateChoice::Render,
            "a hand edit of the template is undone"
        );
        assert_eq!(choose(None, &i, "r", true), TemplateChoice::Render);
    }

    #[test]
    fn a_statefulset_without_digests_is_kept_unless_the_spec_changed_since() {
        let legacy = AppliedTemplate::default();
        assert_eq!(choose(Some(&legacy), "i", "r", true), TemplateChoice::Keep);
        assert_eq!(
            choose(Some(&legacy), "i", "r", false),
            TemplateChoice::Render
        );
    }
}
