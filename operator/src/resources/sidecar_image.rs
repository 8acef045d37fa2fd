//! Which sidecar image a cluster runs. An operator upgrade must not restart every cluster at
//! once, so a cluster that names no image keeps the one it was created with (recorded in
//! `status.sidecarImage`) until its owner asks for the operator's current default, with a new
//! value of the [`UPGRADE_SIDECAR_ANNOTATION`]; clusters then move one by one, each with its
//! usual leader-last rolling restart. (The pod template is held the same way:
//! [`super::pod_template`].)
//!
//! In order, the image is:
//! 1. `spec.sidecar.image`, when set;
//! 2. the operator's default, when the annotation has a value not acted on before;
//! 3. the recorded `status.sidecarImage`;
//! 4. what the StatefulSet's sidecar container runs (a cluster created by an operator that did
//!    not record it, or whose status was lost);
//! 5. the operator's default (a new cluster).
//!
//! Where nothing is recorded, an annotation already present counts as acted on: in doubt,
//! nothing restarts.

/// Annotation of a RaftCluster asking to move onto the operator's default sidecar image and its
/// pod template: any value not acted on before (a timestamp, say). While `spec.sidecar.image`
/// is set, the image stays the spec's.
pub const UPGRADE_SIDECAR_ANNOTATION: &str = "consensus.unrdf.io/upgrade-sidecar";

/// What the choice starts from.
#[derive(Debug, Clone, Copy, Default)]
pub struct SidecarInputs<'a> {
    /// `spec.sidecar.image`.
    pub spec: Option<&'a str>,
    /// The [`UPGRADE_SIDECAR_ANNOTATION`]'s value.
    pub request: Option<&'a str>,
    /// `status.sidecarImage`.
    pub recorded: Option<&'a str>,
    /// `status.sidecarUpgradeRequest`: the annotation value last acted on.
    pub acted_on: Option<&'a str>,
    /// The image of the StatefulSet's sidecar container, if the StatefulSet exists.
    pub running: Option<&'a str>,
    /// The operator's `--sidecar-image`.
    pub default: &'a str,
}

/// Why the image is the one it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageSource {
    Spec,
    UpgradeRequested,
    Recorded,
    Running,
    NewCluster,
}

/// The image to run and what to record in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarChoice {
    pub image: String,
    pub source: ImageSource,
    /// `status.sidecarUpgradeRequest` from now on.
    pub acted_on: Option<String>,
}

pub fn choose(i: &SidecarInputs<'_>) -> SidecarChoice {
    let request = i.request.map(str::to_owned);
    let (image, source, acted_on) = if let Some(image) = i.spec {
        (image, ImageSource::Spec, request)
    } else if let Some(recorded) = i.recorded {
        match i.request {
            Some(r) if Some(r) != i.acted_on => (i.default, ImageSource::UpgradeRequested, request),
            _ => (
                recorded,
                ImageSource::Recorded,
                i.acted_on.map(str::to_owned),
            ),
        }
    } else if let Some(running) = i.running {
        (running, ImageSource::Running, request)
    } else {
        (i.default, ImageSource::NewCluster, request)
    };
    SidecarChoice {
        image: image.to_owned(),
        source,
        acted_on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "raft-sidecar:0.1.0";
    const NEW: &str = "raft-sidecar:0.2.0";

    fn recorded() -> SidecarInputs<'static> {
        SidecarInputs {
            recorded: Some(OLD),
            running: Some(OLD),
            default: NEW,
            ..SidecarInputs::default()
        }
    }

    #[test]
    fn a_new_cluster_gets_the_default_and_keeps_it_when_the_default_changes() {
        let new = SidecarInputs {
            default: OLD,
            ..SidecarInputs::default()
        };
        let first = choose(&new);
        assert_eq!(
            (first.image.as_str(), first.source),
            (OLD, ImageSource::NewCluster)
        );
        // The operator upgraded: its default is NEW, the cluster stays on what it recorded.
        let later = choose(&recorded());
        assert_eq!(
            (later.image.as_str(), later.source),
            (OLD, ImageSource::Recorded)
        );
    }

    #[test]
    fn a_cluster_of_an_older_operator_keeps_what_its_statefulset_runs() {
        let i = SidecarInputs {
            recorded: None,
            request: Some("2026-12-01"),
            ..recorded()
        };
        let c = choose(&i);
        assert_eq!((c.image.as_str(), c.source), (OLD, ImageSource::Running));
        assert_eq!(
            c.acted_on.as_deref(),
            Some("2026-12-01"),
            "an annotation found with nothing recorded counts as acted on"
        );
    }

    #[test]
    fn each_new_annotation_value_moves_onto_the_default_once() {
        let asked = SidecarInputs {
            request: Some("1"),
            ..recorded()
        };
        let c = choose(&asked);
        assert_eq!(
            (c.image.as_str(), c.source),
            (NEW, ImageSource::UpgradeRequested)
        );
        assert_eq!(c.acted_on.as_deref(), Some("1"));

        // Recorded; the next operator upgrade (default NEWER) does not move it again ...
        let after = SidecarInputs {
            request: Some("1"),
            recorded: Some(NEW),
            acted_on: Some("1"),
            default: "raft-sidecar:0.3.0",
            ..SidecarInputs::default()
        };
        let c = choose(&after);
        assert_eq!((c.image.as_str(), c.source), (NEW, ImageSource::Recorded));
        // ... nor does removing the annotation, and the value acted on stays recorded ...
        let removed = SidecarInputs {
            request: None,
            ..after
        };
        assert_eq!(choose(&removed).acted_on.as_deref(), Some("1"));
        assert_eq!(choose(&removed).image, NEW);
        // ... a new value does.
        let again = SidecarInputs {
            request: Some("2"),
            ..after
        };
        assert_eq!(choose(&again).image, "raft-sidecar:0.3.0");
    }

    #[test]
    fn the_spec_wins_and_the_annotation_is_moot_while_it_is_set() {
        let i = SidecarInputs {
            spec: Some("mirror.example/raft-sidecar:0.1.0"),
            request: Some("1"),
            ..recorded()
        };
        let c = choose(&i);
        assert_eq!(c.source, ImageSource::Spec);
        assert_eq!(c.image, "mirror.example/raft-sidecar:0.1.0");
        assert_eq!(c.acted_on.as_deref(), Some("1"));
        // Unset later: the cluster stays on the image it runs (recorded from the spec).
        let unset = SidecarInputs {
            spec: None,
            recorded: Some("mirror.example/raft-sidecar:0.1.0"),
            acted_on: Some("1"),
            ..i
        };
        assert_eq!(choose(&unset).image, "mirror.example/raft-sidecar:0.1.0");
    }
}
