//! The moto EC2 emulator: one `moto_server` per test on a free loopback port, and
//! whether it is installed here (a missing emulator skips, or fails where tests must
//! run). The binary reaches it through `Continuum::moto`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use continuum::aws::sdk::SdkEc2;

use super::{must_run, poll_until, skipped};

/// The region the tests address the emulator in.
pub const REGION: &str = "eu-west-1";

fn moto_bin() -> Option<PathBuf> {
    let p = std::env::var_os("CONTINUUM_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/continuum-venv/bin/moto_server"));
    p.is_file().then_some(p)
}

/// Whether the emulator is installed. Under the full test run (CONTINUUM_FLEET=1,
/// which scripts/test sets after installing it) a missing emulator is a failure.
pub fn moto_available(test: &str) -> bool {
    let have = moto_bin().is_some();
    if !have {
        assert!(
            !must_run() && !std::env::var("CONTINUUM_FLEET").is_ok_and(|v| v == "1"),
            "{test}: moto_server not found; scripts/test installs it (tests/pyenv/setup.sh)"
        );
        skipped(test, "needs moto_server: run tests/pyenv/setup.sh");
    }
    have
}

/// A moto server on a free loopback port, killed on drop.
pub struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let bin = moto_bin().expect("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let up = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(100),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            |up| *up,
        );
        assert!(up, "moto_server did not start");
        Moto { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// continuum's own EC2 provider on the emulator (`SdkEc2::for_endpoint`).
    pub async fn api(&self) -> SdkEc2 {
        SdkEc2::for_endpoint(REGION, &self.url(), "test", "test").await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
