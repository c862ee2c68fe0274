//! What remains of a file-level export through a temporary volume (filesystems the kernel
//! must read: XFS, Btrfs), as a pure function of what EC2, the host and the target report:
//! create the volume from the snapshot in this instance's availability zone (tagged
//! temporary at creation), attach it to this instance, wait for its device, export (mount
//! read-only without journal replay, tar, unmount), detach, delete — on success and on
//! failure. The volume is found again by its `Name` tag, derived from the deployment, the
//! snapshot and the target, so a rerun or a restart after a crash continues where it was.

use crate::dump_plan::stable_hash;

/// Prefix of every temporary volume's `Name` tag.
pub const VOLUME_PREFIX: &str = "bunker-files-";

/// The `Name` of the temporary volume for exporting `snapshot` of this `deployment` to
/// `target` (`bunker-files-` and 16 hex digits).
pub fn volume_name(deployment: &str, snapshot: &str, target: &str) -> String {
    format!("{VOLUME_PREFIX}{:016x}", stable_hash(&[deployment, snapshot, target]))
}

/// The temporary volume as a pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenVolume {
    /// EC2's state, lowercase: `creating`, `available`, `in-use`, `deleting`, `error`.
    pub state: String,
    /// It carries this deployment's temporary tags.
    pub ours: bool,
    /// Its attachment, if any: to this instance, and the attachment's state (`attaching`,
    /// `attached`, `detaching`).
    pub attachment: Option<(bool, String)>,
}

/// What a pass sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The export's index object exists in the target: every filesystem is archived.
    pub done: bool,
    /// The temporary volume, if it exists.
    pub volume: Option<SeenVolume>,
    /// Its device is present on this host (the by-id link in `export.device_dir`).
    pub device: bool,
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `CreateVolume` from the snapshot in this instance's zone, tagged at creation.
    Create,
    /// `AttachVolume` to this instance.
    Attach,
    /// Wait for EC2 (`why` for the logs).
    Wait(String),
    /// Attached, and no device yet: udev makes it within seconds; a retry (bounded by the
    /// job's retries), not an endless wait.
    NoDevice,
    /// Mount each filesystem read-only, archive it, unmount; then write the index.
    Export,
    /// Unmount what bunker mounted of it, then `DetachVolume` (with this instance's id).
    Detach,
    /// `DeleteVolume`.
    Delete,
    /// Nothing left: done.
    Done,
    /// Stop: something bunker must not touch is in the way (the volume is removed if it is
    /// ours).
    Refuse(String),
}

/// The plan for one pass (see the module documentation).
pub fn plan(seen: &Seen) -> Step {
    let Some(v) = &seen.volume else {
        return if seen.done { Step::Done } else { Step::Create };
    };
    if !v.ours {
        return Step::Refuse(
            "a volume with the temporary export's Name tag exists without bunker's temporary tags: \
             bunker will not use or delete it; remove it or its Name tag"
                .into(),
        );
    }
    if let Some((false, _)) = &v.attachment {
        return Step::Refuse(
            "the temporary volume is attached to another instance; bunker detaches only from its own".into(),
        );
    }
    if seen.done {
        return remove(v);
    }
    match (v.state.as_str(), &v.attachment) {
        ("creating", _) => Step::Wait("the temporary volume is being created".into()),
        ("available", None) => Step::Attach,
        ("deleting", _) => Step::Wait("a previous temporary volume is being deleted".into()),
        (_, Some((true, a))) if a == "attaching" => Step::Wait("the temporary volume is being attached".into()),
        (_, Some((true, a))) if a == "detaching" => Step::Wait("the temporary volume is being detached".into()),
        ("in-use", Some((true, _))) if seen.device => Step::Export,
        ("in-use", Some((true, _))) => Step::NoDevice,
        (state, _) => Step::Refuse(format!("the temporary volume is {state}; it is removed and the export fails")),
    }
}

/// The export is written: detach, then delete, then wait for the delete.
fn remove(v: &SeenVolume) -> Step {
    match (v.state.as_str(), &v.attachment) {
        (_, Some((_, a))) if a == "detaching" => Step::Wait("the temporary volume is being detached".into()),
        (_, Some(_)) => Step::Detach,
        ("deleting", None) => Step::Wait("the temporary volume is being deleted".into()),
        ("creating", None) => Step::Wait("the temporary volume is being created".into()),
        (_, None) => Step::Delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(done: bool, state: Option<&str>, attachment: Option<&str>, device: bool) -> Seen {
        let volume = state.map(|s| SeenVolume {
            state: s.into(),
            ours: true,
            attachment: attachment.map(|a| (true, a.to_string())),
        });
        Seen { done, volume, device }
    }

    #[test]
    fn the_export_goes_create_attach_export_detach_delete() {
        assert_eq!(plan(&seen(false, None, None, false)), Step::Create);
        assert!(matches!(plan(&seen(false, Some("creating"), None, false)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("available"), None, false)), Step::Attach);
        assert!(matches!(plan(&seen(false, Some("in-use"), Some("attaching"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(false, Some("in-use"), Some("attached"), false)), Step::NoDevice);
        assert_eq!(plan(&seen(false, Some("in-use"), Some("attached"), true)), Step::Export);
        assert_eq!(plan(&seen(true, Some("in-use"), Some("attached"), true)), Step::Detach);
        assert!(matches!(plan(&seen(true, Some("in-use"), Some("detaching"), false)), Step::Wait(_)));
        assert_eq!(plan(&seen(true, Some("available"), None, false)), Step::Delete);
        assert!(matches!(plan(&seen(true, Some("deleting"), None, false)), Step::Wait(_)));
        assert_eq!(plan(&seen(true, None, None, false)), Step::Done);
    }

    #[test]
    fn strangers_and_broken_volumes_are_refused() {
        let stranger = Seen {
            volume: Some(SeenVolume { state: "available".into(), ours: false, attachment: None }),
            ..seen(false, None, None, false)
        };
        assert!(matches!(plan(&stranger), Step::Refuse(m) if m.contains("will not use or delete")));
        let elsewhere = Seen {
            volume: Some(SeenVolume {
                state: "in-use".into(),
                ours: true,
                attachment: Some((false, "attached".into())),
            }),
            ..seen(false, None, None, false)
        };
        assert!(matches!(plan(&elsewhere), Step::Refuse(m) if m.contains("another instance")));
        assert!(matches!(plan(&seen(false, Some("error"), None, false)), Step::Refuse(m) if m.contains("error")));
        // A restart after a crash mid-export finds the volume attached with its device: the
        // export runs again (and resumes from its journal).
        assert_eq!(plan(&seen(false, Some("in-use"), Some("attached"), true)), Step::Export);
        // A volume left by an earlier failed run is reused, not duplicated.
        assert_eq!(plan(&seen(false, Some("available"), None, false)), Step::Attach);
    }

    #[test]
    fn names_are_stable_and_per_deployment_and_target() {
        let a = volume_name("prod", "snap-0123", "s3://b/p");
        assert_eq!(a, volume_name("prod", "snap-0123", "s3://b/p"));
        assert_ne!(a, volume_name("staging", "snap-0123", "s3://b/p"));
        assert_ne!(a, volume_name("prod", "snap-0123", "s3://b/q"));
        assert_eq!(a.len(), VOLUME_PREFIX.len() + 16);
    }
}
