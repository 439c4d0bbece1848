//! What the state file records of an environment: the cluster (token, servers), each
//! host, each resource (kind, status, hash, attributes), the AWS site (`cloud`) and the
//! serverless layer's credentials; `Secret` for values never shown. Pure types; the
//! file store that reads and writes them is `store`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::recipe::Role;
pub use crate::recipe::Secret;
use crate::recipe::serverless::GivenCredentials;

pub mod cloud;
pub mod shared;
pub use cloud::CloudState;

pub const STATE_VERSION: u32 = 1;

/// Everything continuum knows about one environment.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct State {
    pub version: u32,
    pub env: String,
    /// Incremented on every save.
    pub serial: u64,
    pub recipe: Option<PathBuf>,
    pub cluster: ClusterState,
    /// Hosts contacted so far, by inventory name.
    pub hosts: BTreeMap<String, HostState>,
    /// Applied resources, by resource id (`k3s-server/pi-01`, `kubeconfig`, ...).
    pub resources: BTreeMap<String, ResourceState>,
    /// AWS resources continuum created or adopted (ids recorded the moment EC2
    /// returns them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<CloudState>,
    /// The OSCAR layer's credentials; absent without a serverless layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serverless: Option<Credentials>,
    /// Enrolment pools (`continuum enroll bundle`), by pool name. Absent in state files
    /// written before issue 15, which load with none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, PoolState>,
}

/// A pool of devices that join by themselves with a time-limited bootstrap token
/// (docs/enrolment.md). The token's secret is never recorded: only its id, which is
/// all `k3s token delete` needs.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct PoolState {
    /// The bootstrap token's id (`<id>` of `<id>.<secret>`).
    pub token_id: String,
    /// Labels the pool's nodes register with, `continuum.io/pool=NAME` included.
    pub labels: BTreeMap<String, String>,
    /// Architecture of the k3s binary in the bundle (`amd64`, `arm64`, `arm`).
    pub arch: String,
    /// `bundle` (k3s from the bundle's files) or `online` (get.k3s.io).
    pub install: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// When the token expires (seconds since the Unix epoch); `None` never.
    pub expires: Option<u64>,
    /// When `enroll revoke` deleted the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<u64>,
}

impl PoolState {
    /// `revoked`, `expired` or `active` at `now` (seconds since the Unix epoch).
    pub fn condition(&self, now: u64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.expires.is_some_and(|e| e <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ClusterState {
    /// Cluster secret given to the first server (CSPRNG, 32 bytes hex).
    pub token: Secret,
    /// Secure join token read back from the first server (`K10<ca hash>::server:<secret>`).
    pub join_token: Secret,
    /// Secret agents join with (`agent-token` on every server; CSPRNG, 32 bytes hex),
    /// so an agent's token cannot make a host a server (docs/k3s.md, "Tokens").
    #[serde(default)]
    pub agent_token: Secret,
    /// The agents' secure token read back from the first server
    /// (`K10<ca hash>::node:<secret>`).
    #[serde(default)]
    pub agent_join_token: Secret,
    /// `https://ADDRESS:6443` of the first server, as joiners use it.
    pub server_url: Option<String>,
    pub init_server: Option<String>,
}

/// How to reach a host again without the inventory (for `down` and `status`).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct HostState {
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub key: Option<PathBuf>,
    pub bastion: Option<String>,
    pub host_key: Option<String>,
    /// SHA256 fingerprint of the pinned host key.
    pub host_key_fingerprint: Option<String>,
    /// `uname -m` as k3s names it (amd64, arm64).
    pub arch: Option<String>,
    /// continuum started installing k3s here (set before the first file is uploaded):
    /// `down` must uninstall. A host without it (and without an applied node) never
    /// got k3s from continuum, so `down` drops it without connecting.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub k3s_installed: bool,
    /// Where install.sh put the k3s binary and scripts when not `/usr/local/bin`
    /// (`/opt/bin` on hosts whose /usr is read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
}

/// What a resource is (the graph's node kinds; recorded with each resource in state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    /// k3s server on a host; `init` for the first one.
    K3sServer {
        init: bool,
    },
    K3sAgent,
    /// Every expected node Ready, API `/readyz` ok.
    ClusterReady,
    /// The cluster's context merged into the user's kubeconfig.
    Kubeconfig,
    /// Raspberry Pi / Jetson preparation before k3s on a probed device.
    DevicePrep {
        device: crate::recipe::device::Device,
    },
    /// After k3s on a Jetson: nvidia runtime in containerd, RuntimeClass `nvidia`.
    GpuRuntime,
    /// The OSCAR layer's manifests on the first server, answering through its
    /// endpoint.
    Serverless,
    /// The OSCAR endpoint in continuum's catalog and the oscar-cli config.
    Endpoint,
    /// AWS site resources (`graph::cloud`).
    AwsVpc,
    AwsSubnet,
    AwsInternetGateway,
    AwsRoute,
    AwsSecurityGroup,
    AwsKeyPair,
    AwsInstances {
        group: String,
    },
}

/// Status of a resource after the last attempt.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fully applied and verified.
    Applied,
    /// Started but not finished (crash, Ctrl-C) or failed: the next `up` redoes it.
    Pending,
    Failed,
    /// The host could not be reached (edge devices are often switched off): the next
    /// `up` tries again; `k3s.allow_unavailable` decides whether `up` still succeeds.
    Offline,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ResourceState {
    pub status: Status,
    /// Hash of the desired configuration that was applied.
    pub hash: String,
    pub host: Option<String>,
    pub role: Option<Role>,
    /// Non-secret view of what was applied (for plan diffs).
    #[serde(default)]
    pub attrs: BTreeMap<String, serde_json::Value>,
    pub last_error: Option<String>,
    pub updated_at: u64,
    /// For a k3s node: the k3s version applied (a change is an upgrade: the plan says
    /// `version A -> B (restart)` and `up` rolls it in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the resource is (absent in state files written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

impl HostState {
    /// The inventory view of this host, for reconnecting.
    pub fn to_host(&self, name: &str) -> crate::recipe::Host {
        crate::recipe::Host {
            name: name.to_string(),
            address: self.address.clone(),
            port: self.port,
            user: self.user.clone(),
            key: self.key.clone(),
            bastion: self.bastion.clone(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            node_ip: None,
            external_ip: None,
            host_key: self.host_key.clone(),
            cloud: None,
            probed: None,
        }
    }
}

impl State {
    pub fn new(env: &str) -> Self {
        State {
            version: STATE_VERSION,
            env: env.to_string(),
            ..State::default()
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The credentials in force for a cluster (kept in the state file, 0600).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub oscar_user: String,
    pub oscar_password: Secret,
    pub minio_access_key: String,
    pub minio_secret_key: Secret,
}

impl Credentials {
    /// The given credentials, with a CSPRNG value for every missing one; values
    /// already recorded (`previous`) are kept so a re-run does not rotate them.
    pub fn resolve(
        given: &GivenCredentials,
        previous: Option<&Credentials>,
        random: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<Credentials, String> {
        let prev = previous.cloned().unwrap_or_default();
        let pick = |g: Option<&str>, p: &str, r: &mut dyn FnMut() -> Result<String, String>| match (
            g, p,
        ) {
            (Some(g), _) => Ok(g.to_string()),
            (None, p) if !p.is_empty() => Ok(p.to_string()),
            _ => r(),
        };
        let oscar_user = given.oscar_user.clone().unwrap_or_else(|| {
            if prev.oscar_user.is_empty() {
                "oscar".into()
            } else {
                prev.oscar_user.clone()
            }
        });
        let oscar_password = Secret::new(pick(
            given.oscar_password.as_ref().map(Secret::expose),
            prev.oscar_password.expose(),
            random,
        )?);
        let mut short = || random().map(|s| s.chars().take(20).collect::<String>());
        let minio_access_key = pick(
            given.minio_access_key.as_deref(),
            &prev.minio_access_key,
            &mut short,
        )?;
        let minio_secret_key = Secret::new(pick(
            given.minio_secret_key.as_ref().map(Secret::expose),
            prev.minio_secret_key.expose(),
            random,
        )?);
        Ok(Credentials {
            oscar_user,
            oscar_password,
            minio_access_key,
            minio_secret_key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::serverless::GivenCredentials;

    #[test]
    fn generated_credentials_are_kept_and_given_ones_win() {
        let mut n = 0;
        let mut rnd = || {
            n += 1;
            Ok(format!("{n:0>40}"))
        };
        let c = Credentials::resolve(&GivenCredentials::default(), None, &mut rnd).expect("c");
        assert_eq!(c.oscar_user, "oscar");
        assert_eq!(c.minio_access_key.len(), 20);
        assert_ne!(c.oscar_password, c.minio_secret_key);
        let again =
            Credentials::resolve(&GivenCredentials::default(), Some(&c), &mut rnd).expect("again");
        assert_eq!(again, c, "a re-run keeps generated secrets");
        let given = GivenCredentials {
            oscar_password: Some(Secret::new("given-pass")),
            ..GivenCredentials::default()
        };
        let g = Credentials::resolve(&given, Some(&c), &mut rnd).expect("g");
        assert_eq!(g.oscar_password.expose(), "given-pass");
        assert_eq!(g.minio_secret_key, c.minio_secret_key);
    }

    #[test]
    fn state_without_pools_loads_and_pools_round_trip() {
        let old = r#"{"version":1,"env":"e","serial":3,"recipe":null,
            "cluster":{"token":"","join_token":"","server_url":null,"init_server":null},
            "hosts":{},"resources":{}}"#;
        let s: State = serde_json::from_str(old).expect("an issue-14 state file loads");
        assert!(s.pools.is_empty());
        assert!(!serde_json::to_string(&s).expect("json").contains("pools"));
        let mut s = s;
        let p = PoolState {
            token_id: "abcdef".into(),
            expires: Some(100),
            ..PoolState::default()
        };
        assert_eq!(p.condition(99), "active");
        assert_eq!(p.condition(100), "expired");
        s.pools.insert("field".into(), p);
        let back: State =
            serde_json::from_str(&serde_json::to_string(&s).expect("json")).expect("back");
        assert_eq!(back, s);
        let revoked = PoolState {
            revoked: Some(5),
            ..PoolState::default()
        };
        assert_eq!(revoked.condition(0), "revoked");
    }
}
