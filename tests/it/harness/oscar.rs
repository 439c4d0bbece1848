//! OSCAR for the tests: the OSCAR API double (tests/oscar-double/oscar-api) as a
//! process on a loopback port chosen by the kernel, recording every request it gets;
//! and what tests ask of an OSCAR endpoint served on a fleet host (its status with
//! Basic auth, the http-to-https redirect).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::{poll_until, root};

/// One OSCAR API double process on 127.0.0.1 (killed on drop), recording every request
/// it gets.
pub struct OscarDouble {
    child: Child,
    pub port: u16,
    pub password: String,
    /// The OSCAR version the double behaves as (`--version`).
    pub version: String,
    dir: tempfile::TempDir,
}

impl OscarDouble {
    pub fn start(cluster_id: &str, version: &str, extra: &[&str]) -> OscarDouble {
        let password = format!("pw-{cluster_id}-{}", std::process::id());
        OscarDouble::start_with(cluster_id, version, &password, extra)
    }

    /// Federation members with Basic auth share the coordinator's password (OSCAR
    /// forwards the caller's Authorization header to them).
    pub fn start_with(
        cluster_id: &str,
        version: &str,
        password: &str,
        extra: &[&str],
    ) -> OscarDouble {
        let dir = tempfile::tempdir().expect("tmp");
        let port_file = dir.path().join("port");
        let child = Command::new("python3")
            .arg(root().join("tests/oscar-double/oscar-api"))
            .args([
                "--port",
                "0",
                "--cluster-id",
                cluster_id,
                "--version",
                version,
            ])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--record")
            .arg(dir.path().join("requests.jsonl"))
            .args(extra)
            .env("OSCAR_DOUBLE_PASSWORD", password)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the OSCAR API double");
        let port = poll_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                std::fs::read_to_string(&port_file)
                    .ok()
                    .and_then(|s| s.trim().parse::<u16>().ok())
            },
            Option::is_some,
        )
        .expect("OSCAR double did not start");
        OscarDouble {
            child,
            port,
            password: password.to_string(),
            version: version.to_string(),
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Raw HTTP request with Basic auth; (status, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.port, method, path, &self.password, body)
    }

    pub fn service(&self, name: &str) -> Option<Value> {
        let (code, body) = self.request("GET", &format!("/system/services/{name}"), None);
        (code == 200).then(|| serde_json::from_str(&body).expect("service json"))
    }

    pub fn names(&self) -> Vec<String> {
        let (code, body) = self.request("GET", "/system/services", None);
        assert_eq!(code, 200, "{body}");
        let v: Vec<Value> = serde_json::from_str(&body).expect("list");
        let mut n: Vec<String> = v
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    }

    /// Every request the double got: (method, path, JSON body, User-Agent).
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("recorded request"))
            .collect()
    }

    /// Requests continuum sent: not those a coordinator double pushed (Python's
    /// urllib) nor the test's own (`http` below); continuum's client sends no
    /// User-Agent.
    pub fn sent_by_continuum(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["agent"].as_str().is_some_and(str::is_empty))
            .collect()
    }

    /// Writes of a service definition (POST/PUT /system/services) pushed by another
    /// OSCAR (a coordinator double).
    pub fn pushed(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r["agent"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("Python-urllib"))
                    && r["path"] == "/system/services"
            })
            .collect()
    }
}

impl Drop for OscarDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw request from the test (a User-Agent, so the spec check can tell it apart).
fn http(port: u16, method: &str, path: &str, password: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("oscar:{password}"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: continuum-test\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// curl with `args` on `url`, the Basic credentials given in a config on stdin, never
/// in argv (where any process of the machine could read them); curl's output.
pub fn curl_with_credentials(args: &[&str], url: &str, user: &str, password: &str) -> Output {
    let mut child = Command::new("curl")
        .args(args)
        .args(["--config", "-"])
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run curl");
    let config = format!(
        "user = \"{}:{}\"\n",
        user.replace('\\', "\\\\").replace('"', "\\\""),
        password.replace('\\', "\\\\").replace('"', "\\\"")
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(config.as_bytes())
        .expect("curl config");
    child.wait_with_output().expect("curl")
}

/// The HTTP status of OSCAR's `GET /system/info` at `https://IP` (the endpoint; the
/// certificate is not checked) with Basic auth, or `None` when nothing listens on
/// port 443.
pub fn oscar_status(ip: &str, user: &str, password: &str) -> Option<u16> {
    let out = curl_with_credentials(
        &[
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ],
        &format!("https://{ip}/system/info"),
        user,
        password,
    );
    let code: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (code != 0).then_some(code)
}

/// What a plain-http request of `url` is answered with: `<status> <redirect URL>`.
pub fn http_redirect(url: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
        ])
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
