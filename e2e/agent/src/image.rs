//! Image → local binary mapping. There is no container runtime: an image name only selects
//! which binary on this machine plays the container's entrypoint. The mapping is configuration
//! (`--image PATTERN=PATH`), so nothing in the operator knows about it.

use std::path::{Path, PathBuf};

/// One `PATTERN=PATH` rule; `*` in the pattern matches any (possibly empty) text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRule {
    pub pattern: String,
    pub binary: PathBuf,
}

/// Parses `PATTERN=PATH`.
pub fn parse_rule(s: &str) -> Result<ImageRule, String> {
    let (pattern, path) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not PATTERN=PATH"))?;
    if pattern.is_empty() || path.is_empty() {
        return Err(format!("'{s}' is not PATTERN=PATH"));
    }
    Ok(ImageRule {
        pattern: pattern.to_owned(),
        binary: PathBuf::from(path),
    })
}

/// The configured rules, first match wins.
#[derive(Debug, Clone, Default)]
pub struct ImageMap {
    rules: Vec<ImageRule>,
}

impl ImageMap {
    pub fn new(rules: Vec<ImageRule>) -> Self {
        Self { rules }
    }

    /// The binary an image runs, if any rule matches. A registry prefix (`ghcr.io/org/`) is
    /// tried both with and without, so `raft-sidecar:*` also matches `ghcr.io/x/raft-sidecar:1`.
    pub fn binary_for(&self, image: &str) -> Option<&Path> {
        let short = image.rsplit('/').next().unwrap_or(image);
        self.rules
            .iter()
            .find(|r| glob_match(&r.pattern, image) || glob_match(&r.pattern, short))
            .map(|r| r.binary.as_path())
    }
}

/// `*`-only glob matching.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return false,
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let (last, middle) = match rest.split_last() {
        Some(x) => x,
        None => return false,
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The argv a container runs: `command` (entrypoint override) + `args`, with the image's binary
/// as the entrypoint. A `command[0]` naming the image's binary (by file name) is replaced by its
/// local path; any other `command[0]` is run as given (absolute path or looked up in `PATH`).
pub fn container_argv(binary: &Path, command: &[String], args: &[String]) -> Vec<String> {
    let binary_str = binary.to_string_lossy().into_owned();
    let mut argv = Vec::with_capacity(command.len() + args.len() + 1);
    match command.split_first() {
        None => argv.push(binary_str),
        Some((first, rest)) => {
            let same_name = Path::new(first).file_name() == binary.file_name();
            argv.push(if same_name { binary_str } else { first.clone() });
            argv.extend(rest.iter().cloned());
        }
    }
    argv.extend(args.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ImageMap {
        ImageMap::new(vec![
            parse_rule("raft-sidecar:*=/bin/raft-sidecar").unwrap(),
            parse_rule("raft-example-daemon:*=/bin/daemon").unwrap(),
            parse_rule("busybox=/bin/busybox").unwrap(),
        ])
    }

    #[test]
    fn a_tagged_image_matches_its_wildcard_rule() {
        assert_eq!(
            map().binary_for("raft-sidecar:0.1.0"),
            Some(Path::new("/bin/raft-sidecar"))
        );
        assert_eq!(
            map().binary_for("ghcr.io/unrdf/raft-example-daemon:dev"),
            Some(Path::new("/bin/daemon"))
        );
    }

    #[test]
    fn an_exact_rule_matches_only_that_name() {
        assert_eq!(map().binary_for("busybox"), Some(Path::new("/bin/busybox")));
        assert_eq!(map().binary_for("busybox:1"), None);
        assert_eq!(map().binary_for("nginx:1"), None);
    }

    #[test]
    fn globs_match_in_the_middle_and_at_the_ends() {
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "a-b-c"));
        assert!(!glob_match("a*b*c", "a-c"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn rules_need_a_pattern_and_a_path() {
        assert!(parse_rule("x").is_err());
        assert!(parse_rule("=y").is_err());
        assert!(parse_rule("x=").is_err());
    }

    #[test]
    fn command_naming_the_image_binary_runs_the_local_binary() {
        let bin = Path::new("/opt/raft-sidecar");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            container_argv(bin, &[], &s(&["run", "--x"])),
            s(&["/opt/raft-sidecar", "run", "--x"])
        );
        assert_eq!(
            container_argv(bin, &s(&["/usr/bin/raft-sidecar", "run"]), &s(&["--y"])),
            s(&["/opt/raft-sidecar", "run", "--y"])
        );
        assert_eq!(
            container_argv(bin, &s(&["sh", "-c", "true"]), &[]),
            s(&["sh", "-c", "true"])
        );
    }
}
