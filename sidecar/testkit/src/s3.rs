//! versitygw, an S3-compatible server built from its Go module and cached like the control
//! plane's binaries (`e2e/controlplane/build.sh versitygw`), serving buckets from a directory
//! on a loopback port: where the backup tests store backups.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Access key of every [`S3Server`].
pub const ACCESS_KEY: &str = "raft-tests";
/// Secret key of every [`S3Server`].
pub const SECRET_KEY: &str = "raft-tests-secret";

/// How long the server may take to listen.
const START_DEADLINE: Duration = Duration::from_secs(20);

/// A running versitygw; killed on drop.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Build versitygw if it is missing (`build.sh` under `controlplane`, the repository's
    /// `e2e/controlplane/`), create `bucket` under `root` and serve `root`; returns once the
    /// server listens.
    pub fn start(controlplane: &Path, root: &Path, bucket: &str) -> io::Result<S3Server> {
        let out = Command::new(controlplane.join("build.sh"))
            .arg("versitygw")
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "building versitygw failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let printed = String::from_utf8_lossy(&out.stdout);
        let dir = printed
            .lines()
            .find_map(|l| l.strip_prefix("S3_BIN="))
            .ok_or_else(|| io::Error::other("build.sh printed no S3_BIN="))?;
        let binary = PathBuf::from(dir.trim_matches('\'')).join("versitygw");
        std::fs::create_dir_all(root.join(bucket))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(binary)
            .args(["--access", ACCESS_KEY, "--secret", SECRET_KEY, "--quiet"])
            .args(["--port", &addr.to_string()])
            .arg("posix")
            .arg(root)
            .stdout(Stdio::null())
            .spawn()?;
        let server = S3Server {
            child,
            endpoint: format!("http://{addr}"),
        };
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("versitygw did not listen on {addr} within {START_DEADLINE:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// The variables `ctl backup` and `restore` read the store's address and credentials from.
    pub fn env(&self) -> [(&'static str, String); 4] {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
