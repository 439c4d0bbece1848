//! A temporary workspace for one test: inventory, recipe, state directory and
//! kubeconfig in one directory, the continuum binary run against them, and what the
//! run left in its state file.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::fleet::{HostDef, client_key};
use super::run::Continuum;
use super::{path_str, poll_until, root};

/// A temporary workspace: inventory, recipe, state directory and kubeconfig.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub env: String,
}

impl Workspace {
    pub fn new(env: &str) -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("cit")
                .tempdir()
                .expect("tempdir"),
            env: env.to_string(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
    pub fn recipe(&self) -> PathBuf {
        self.dir.path().join("recipe.yaml")
    }
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join(format!("{}.json", self.env))
    }

    pub fn write_inventory(&self, hosts: &[HostDef<'_>], user: &str) {
        let key = client_key();
        let mut s = format!(
            "defaults:\n  user: {user}\n  key: {}\nhosts:\n",
            key.display()
        );
        for h in hosts {
            s.push_str(&format!("  - name: {}\n    address: {}\n", h.name, h.ip));
            if !h.labels.is_empty() {
                s.push_str("    labels:\n");
                for (k, v) in h.labels {
                    s.push_str(&format!("      {k}: \"{v}\"\n"));
                }
            }
        }
        std::fs::write(self.dir.path().join("inventory.yaml"), s).expect("write inventory");
    }

    /// A recipe over the inventory; `servers` first is the init server.
    pub fn write_recipe(&self, servers: &[&str], extra: &str) {
        let s = format!(
            "name: {env}\ninventory: inventory.yaml\nk3s:\n  version: v1.31.4+k3s1\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [{servers}]\n  readiness_timeout: 90\n{extra}",
            env = self.env,
            bundle = root().join("tests/k3s-double").display(),
            servers = servers.join(", "),
        );
        std::fs::write(self.recipe(), s).expect("write recipe");
    }

    /// The continuum binary with this workspace's state dir and kubeconfig.
    pub fn cmd(&self) -> Continuum {
        Continuum::new()
            .state_dir(self.state_dir())
            .kubeconfig(self.kubeconfig())
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output()
    }

    /// `up` of the workspace's recipe with short connection settings.
    pub fn up(&self) -> Output {
        self.up_recipe(&self.recipe())
    }

    /// `up` of `recipe` with the settings of `up`.
    pub fn up_recipe(&self, recipe: &Path) -> Output {
        self.run(&[
            "up",
            path_str(recipe),
            "--yes",
            "--connect-timeout",
            "3",
            "--connect-attempts",
            "2",
        ])
    }

    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file()).expect("state file");
        serde_json::from_str(&text).expect("state json")
    }
}

/// Wait (at most 90 s) until the workspace's state file mentions `needle`: a run in
/// progress has reached that step.
pub fn wait_for_state(ws: &Workspace, needle: &str) {
    let reached = poll_until(
        Duration::from_secs(90),
        Duration::from_millis(20),
        || std::fs::read_to_string(ws.state_file()).is_ok_and(|t| t.contains(needle)),
        |reached| *reached,
    );
    assert!(reached, "the run never reached {needle}");
}
