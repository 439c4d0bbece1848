//! The AWS site against the moto EC2 emulator and the SSH test fleet.
//!
//! Each test starts its own moto server on a free loopback port (`harness::Moto`).
//! Instances get private IPs in the recipe's subnet in order (.4, .5, ... of the
//! subnet), and the subnet lies in the fleet's 10.250.0.0/24, so fleet hosts started at
//! those addresses stand in for the instances: continuum's normal connect-by-private-IP
//! path reaches real sshd hosts.
//! Subnets per test: .64/27 (e2e), .192/27 (faults), .224/27 (kill -9), .0/28 (delayed
//! visibility, `honest`); tests without fleet hosts use .96/27 and .240/28.
//!
//! Slow boots, throttling, 5xx, interruptions and dependency violations come from
//! `doubles::fault::Instrumented`; EC2's documented behaviour where moto differs
//! (eventual consistency, client tokens, forgotten instances, zones, capacity) from
//! `doubles::honest::Honest`. Both are test doubles (docs/aws.md, "Where moto
//! differs"); the operations get them through `doubles::connect::Given`.

mod details;
mod doubles;
mod honest;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use continuum::aws::provision::{self, CloudState, Journal};
use continuum::aws::{Ec2Api, NetKind};
use doubles::connect::Given;
use doubles::fault::{Faults, Instrumented};

use crate::harness::{
    Fleet, Moto, REGION, Workspace, client_key, fleet_available, moto_available, path_str,
    ready_nodes, root, text,
};

/// An x86_64 Ubuntu image from moto's built-in catalogue.
const AMI: &str = "ami-785db401";

/// The aws-sdk-ec2 client on the emulator, to look at what continuum made (configured
/// as continuum's own: `SdkEc2::for_endpoint`).
async fn sdk(moto: &Moto) -> aws_sdk_ec2::Client {
    moto.api().await.client().clone()
}

/// Short waits for tests (the code paths are the production ones). As with EC2, the
/// consistency window (2 s here, 3 min in production) is longer than ids stay
/// invisible (the honest double's 0.5 s) and shorter than terminated instances stay
/// listed (its 3 s; EC2's hour).
fn quick() -> provision::Options {
    provision::Options {
        retry: continuum::aws::RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            consistency: Duration::from_secs(2),
        },
        poll: Duration::from_millis(200),
        delete_timeout: Duration::from_secs(20),
    }
}

/// moto behind the honest double, behind the counting/fault wrapper.
async fn stack(
    moto: &Moto,
    rules: doubles::honest::Rules,
    faults: Faults,
) -> (Arc<doubles::honest::Honest>, Arc<Instrumented>) {
    let inner: Arc<dyn Ec2Api> = Arc::new(moto.api().await);
    let honest = Arc::new(doubles::honest::Honest::new(inner, rules));
    let outer = Arc::new(Instrumented::new(honest.clone(), faults));
    (honest, outer)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A recipe with a created VPC in the fleet range: `cp` (1 server) and `w` (agents).
fn write_recipe(ws: &Workspace, subnet: &str, agents: u32, image: &str) {
    let s = format!(
        r#"name: {env}
k3s:
  version: v1.31.4+k3s1
  install:
    source: bundle
    bundle: {bundle}
  servers: [cp]
  readiness_timeout: 90
kubeconfig:
  path: {kc}
aws:
  region: {REGION}
  network:
    vpc_cidr: 10.250.0.0/24
    subnet_cidr: {subnet}
  ssh:
    user: ops
    key: {key}
    timeout: 60
  firewall:
    ssh_from: [10.250.0.0/24]
  instance_groups:
    - name: cp
      count: 1
      instance_type: t3.medium
      image: {image}
      role: server
      root_volume_gb: 20
    - name: w
      count: {agents}
      instance_type: t3.small
      image:
        name: "ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*"
        owner: "099720109477"
"#,
        env = ws.env,
        bundle = root().join("tests/k3s-double").display(),
        kc = ws.kubeconfig().display(),
        key = client_key().display(),
    );
    std::fs::write(ws.recipe(), s).expect("write recipe");
}

/// `up` of the workspace's recipe on `moto`.
fn up(ws: &Workspace, moto: &Moto) -> std::process::Output {
    ws.cmd()
        .moto(moto)
        .args([
            "up",
            path_str(&ws.recipe()),
            "--yes",
            "--connect-timeout",
            "3",
        ])
        .output()
}

/// `plan` of the workspace's recipe on `moto`.
fn plan_of(ws: &Workspace, moto: &Moto) -> std::process::Output {
    ws.cmd()
        .moto(moto)
        .args(["plan", path_str(&ws.recipe())])
        .output()
}

/// Everything tagged with the environment that still exists.
async fn sweep(api: &dyn Ec2Api, env: &str) -> Vec<String> {
    let mut left: Vec<String> = api
        .describe_instances(env)
        .await
        .expect("describe instances")
        .into_iter()
        .filter(|i| i.state != "terminated")
        .map(|i| format!("instance {} ({})", i.id, i.state))
        .collect();
    for kind in NetKind::DELETION_ORDER {
        for t in api
            .describe_tagged(kind, env)
            .await
            .expect("describe tagged")
        {
            left.push(format!("{kind} {}", t.id));
        }
    }
    left
}

async fn live_instances(api: &dyn Ec2Api, env: &str) -> usize {
    api.describe_instances(env)
        .await
        .expect("describe instances")
        .iter()
        .filter(|i| i.state != "terminated")
        .count()
}

/// Fleet hosts standing in for the instances moto will hand out in `subnet_base`/27.
fn fleet_for(prefix: &str, first: u8, n: usize) -> Fleet {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    Fleet::start(&refs, first)
}

/// The fleet host standing in for instance `cp-0` (by its private IP in state).
fn server_host(fleet: &Fleet, st: &serde_json::Value) -> String {
    let ip = st["aws"]["groups"]["cp"]["instances"]["cp-0"]["private_ip"]
        .as_str()
        .expect("server ip")
        .to_string();
    fleet
        .hosts
        .iter()
        .find(|(_, h)| *h == ip)
        .map(|(n, _)| n.clone())
        .expect("fleet host at the server's private IP")
}

#[test]
fn aws_vpc_cluster_up_then_down_leaves_nothing() {
    if !fleet_available("aws_vpc_cluster_up_then_down_leaves_nothing")
        || !moto_available("aws_vpc_cluster_up_then_down_leaves_nothing")
    {
        return;
    }
    let moto = Moto::start();
    // Subnet 10.250.0.64/27: moto hands out .68, .69, .70.
    let fleet = fleet_for("awe", 68, 3);
    let ws = Workspace::new("awe");
    write_recipe(&ws, "10.250.0.64/27", 2, AMI);

    let plan = plan_of(&ws, &moto);
    let p = text(&plan);
    assert!(plan.status.success(), "{p}");
    for id in [
        "aws-vpc",
        "aws-subnet",
        "aws-internet-gateway",
        "aws-route",
        "aws-security-group",
        "aws-key-pair",
        "aws-instances/cp",
        "aws-instances/w",
        "k3s-server/cp-0",
        "k3s-agent/w-1",
    ] {
        assert!(p.contains(id), "plan lacks {id}:\n{p}");
    }

    let out = up(&ws, &moto);
    assert!(out.status.success(), "up failed:\n{}", text(&out));
    let st = ws.state();
    for id in [
        "aws-vpc",
        "aws-instances/w",
        "k3s-agent/w-0",
        "cluster-ready",
    ] {
        assert_eq!(st["resources"][id]["status"], "applied", "{id}: {st:#}");
    }
    let aws = &st["aws"];
    assert!(
        aws["vpc"]["id"]
            .as_str()
            .is_some_and(|v| v.starts_with("vpc-"))
    );
    assert_eq!(
        aws["groups"]["w"]["instances"].as_object().map(|m| m.len()),
        Some(2)
    );
    // The cluster is real (on the k3s double): 3 Ready nodes named after the instances.
    let server = server_host(&fleet, &st);
    assert_eq!(ready_nodes(&fleet, &server), ["cp-0", "w-0", "w-1"]);
    // The security group carries what the cluster needs.
    let rules = aws["rules"].to_string();
    assert!(
        rules.contains("\"to_port\":6443") && rules.contains("\"source\":\"self\""),
        "{rules}"
    );

    // status: every instance, live from one DescribeInstances, beside the nodes.
    let status = ws
        .cmd()
        .moto(&moto)
        .args(["status", "awe", "--output", "json"])
        .output();
    assert!(status.status.success(), "{}", text(&status));
    let sj: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let instances = sj["aws"]["instances"].as_array().expect("instances");
    assert_eq!(instances.len(), 3, "{sj:#}");
    assert!(instances.iter().all(|i| i["state"] == "running"), "{sj:#}");
    assert!(sj["aws"]["live_error"].is_null(), "{sj:#}");
    let human = ws.cmd().moto(&moto).args(["status", "awe"]).output();
    assert!(
        text(&human).contains("AWS eu-west-1: vpc vpc-"),
        "{}",
        text(&human)
    );

    // Idempotent: a second up changes nothing and launches nothing.
    let again = up(&ws, &moto);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("0 to change"), "{}", text(&again));
    let rt = rt();
    let api = rt.block_on(moto.api());
    assert_eq!(rt.block_on(live_instances(&api, "awe")), 3);

    // Shrink the agent group: w-1 leaves the cluster, then its instance is terminated.
    let w1 = ws.state()["aws"]["groups"]["w"]["instances"]["w-1"]["id"]
        .as_str()
        .expect("w-1 instance")
        .to_string();
    write_recipe(&ws, "10.250.0.64/27", 1, AMI);
    let plan = plan_of(&ws, &moto);
    let p = text(&plan);
    assert!(
        p.contains("- k3s-agent/w-1") && p.contains("~ aws-instances/w"),
        "{p}"
    );
    let out = up(&ws, &moto);
    assert!(out.status.success(), "shrink failed:\n{}", text(&out));
    assert_eq!(ready_nodes(&fleet, &server), ["cp-0", "w-0"]);
    let all = rt
        .block_on(api.describe_instances("awe"))
        .expect("instances");
    assert!(
        all.iter().any(|i| i.id == w1 && i.state == "terminated"),
        "w-1's instance {w1} is not terminated: {all:?}"
    );
    assert_eq!(rt.block_on(live_instances(&api, "awe")), 2);

    // A change EC2 cannot make in place is refused by the plan, and `up` changes
    // nothing: no call beyond the reads of the refresh, the same instances, the same
    // state.
    let recipe = std::fs::read_to_string(ws.recipe()).expect("recipe");
    std::fs::write(
        ws.recipe(),
        recipe.replace("instance_type: t3.medium", "instance_type: t3.large"),
    )
    .expect("recipe");
    let plan = plan_of(&ws, &moto);
    let p = text(&plan);
    assert!(plan.status.success(), "{p}");
    assert!(
        p.contains("! aws-instances/cp")
            && p.contains(
                "changing `instance_type` of instance group `cp` would replace its instances"
            )
            && p.contains("1 change(s) refused"),
        "{p}"
    );
    let before = std::fs::read_to_string(ws.state_file()).expect("state");
    let refused = up(&ws, &moto);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(
        text(&refused).contains("nothing was changed: aws-instances/cp:"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(ws.state_file()).expect("state"),
        before,
        "a refused up wrote state"
    );
    assert_eq!(rt.block_on(live_instances(&api, "awe")), 2);
    write_recipe(&ws, "10.250.0.64/27", 1, AMI);

    let down = ws.cmd().moto(&moto).args(["down", "awe", "--yes"]).output();
    assert!(down.status.success(), "down failed:\n{}", text(&down));
    let left = rt.block_on(sweep(&api, "awe"));
    assert!(left.is_empty(), "left behind after down: {left:?}");
    assert!(!ws.state_file().exists(), "state should be gone");
}

#[test]
fn aws_invalid_image_or_type_is_rejected_before_any_resource() {
    if !moto_available("aws_invalid_image_or_type_is_rejected_before_any_resource") {
        return;
    }
    let moto = Moto::start();
    let rt = rt();
    let api = rt.block_on(moto.api());
    // (case, image, (recipe text, replacement), expected message)
    for (case, image, edit, expect) in [
        (
            "ami",
            "ami-deadbeef",
            None,
            "image `ami-deadbeef` does not exist",
        ),
        (
            "type",
            AMI,
            Some(("instance_type: t3.medium", "instance_type: t9.huge")),
            "instance type `t9.huge` does not exist",
        ),
        (
            "arch",
            AMI,
            Some(("instance_type: t3.medium", "instance_type: t4g.small")),
            "is x86_64 but instance type `t4g.small` runs arm64",
        ),
        (
            // moto's image has a 15 GiB root snapshot.
            "root",
            AMI,
            Some(("root_volume_gb: 20", "root_volume_gb: 8")),
            "root volume of 8 GiB is smaller than the snapshot of image `ami-785db401` (15 GiB)",
        ),
    ] {
        let ws = Workspace::new(&format!("awbad-{case}"));
        write_recipe(&ws, "10.250.0.96/27", 1, image);
        if let Some((from, to)) = edit {
            let r = std::fs::read_to_string(ws.recipe())
                .expect("recipe")
                .replace(from, to);
            std::fs::write(ws.recipe(), r).expect("rewrite recipe");
        }
        let out = up(&ws, &moto);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{case}: {t}");
        assert!(t.contains(expect), "{case}: {t}");
        // The endpoint moto stands in for is said, not silently used.
        assert!(t.contains("EC2 endpoint overridden"), "{case}: {t}");
        // The message names the recipe line of the offending key.
        let line = std::fs::read_to_string(ws.recipe())
            .expect("recipe")
            .lines()
            .position(|l| match case {
                "ami" | "arch" => l.contains("image: ami-"),
                "root" => l.contains("root_volume_gb:"),
                _ => l.contains("instance_type: t") && !l.contains("t3.small"),
            })
            .expect("line")
            + 1;
        assert!(
            t.contains(&format!("recipe.yaml:{line}:")),
            "{case}: no recipe.yaml:{line}: in {t}"
        );
        let left = rt.block_on(sweep(&api, &ws.env));
        assert!(left.is_empty(), "{case}: created {left:?}");
        let state = ws.state_file();
        if state.exists() {
            let s = ws.state();
            assert!(s["aws"]["vpc"].is_null(), "{case}: {s:#}");
        }
    }
}

/// In-memory journal for the provisioning-level tests.
#[derive(Default)]
struct Mem(Mutex<CloudState>);

impl Journal for Mem {
    fn cloud(&self) -> CloudState {
        self.0.lock().expect("lock").clone()
    }
    fn record(
        &self,
        f: &mut dyn FnMut(&mut CloudState),
    ) -> Result<(), continuum::files::StateError> {
        f(&mut self.0.lock().expect("lock"));
        Ok(())
    }
}

/// EC2 calls of a real `up` (`ops::up::up`, what the CLI runs) of one group of `n`
/// instances in a created VPC, then of `down`, counted by the instrumented provider.
/// The instances have no SSH host behind them: the recipe's bastion refuses, so the
/// k3s steps stop at their first connection (they make no EC2 calls either way).
fn calls_for(moto: &Moto, n: u32, dir: &std::path::Path) -> [BTreeMap<String, u64>; 2] {
    let env_name = format!("cnt{n}");
    let recipe = dir.join(format!("{env_name}.yaml"));
    std::fs::write(
        &recipe,
        format!(
            "name: {env_name}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: {REGION}\n  network:\n    vpc_cidr: 10.{n}.0.0/16\n    subnet_cidr: 10.{n}.1.0/24\n  ssh:\n    user: ubuntu\n    bastion: nobody@127.0.0.1:1\n  firewall:\n    ssh_from: [203.0.113.0/24]\n  instance_groups:\n    - name: g\n      count: {n}\n      instance_type: t3.small\n      image: {AMI}\n"
        ),
    )
    .expect("write recipe");
    let env = continuum::files::load_recipe(&recipe).expect("recipe").env;
    let rt = rt();
    let settings_for = |calls: Arc<Instrumented>| continuum::ops::Settings {
        state_dir: dir.join(&env_name),
        connect_timeout: Duration::from_secs(2),
        connect_attempts: 1,
        ec2: Arc::new(Given(calls)),
        cloud: provision::Options {
            poll: Duration::from_millis(200),
            ..provision::Options::default()
        },
        ..continuum::ops::Settings::default()
    };
    let inner: Arc<dyn Ec2Api> = Arc::new(rt.block_on(moto.api()));
    let up_calls = Arc::new(Instrumented::new(inner.clone(), Faults::default()));
    let settings = settings_for(up_calls.clone());
    let cancel = tokio_util::sync::CancellationToken::new();
    // The k3s steps cannot connect: `up` reports them, the AWS steps are done.
    let _ = rt.block_on(continuum::ops::up::up(
        &env,
        &settings,
        Arc::new(continuum::ops::Silent),
        &cancel,
        |_| true,
    ));
    let st: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(&env_name).join(format!("{env_name}.json")))
            .expect("state"),
    )
    .expect("state json");
    assert_eq!(
        st["resources"]["aws-instances/g"]["status"], "applied",
        "group of {n}: {st:#}"
    );
    assert_eq!(
        st["aws"]["groups"]["g"]["instances"]
            .as_object()
            .map(|m| m.len()),
        Some(n as usize),
        "group of {n}"
    );
    let down_calls = Arc::new(Instrumented::new(inner, Faults::default()));
    let settings = settings_for(down_calls.clone());
    let r = rt.block_on(continuum::ops::down::down(
        &env_name,
        &[],
        &settings,
        Arc::new(continuum::ops::Silent),
        &cancel,
    ));
    assert!(r.is_ok(), "down of {n}: {:?}", r.err());
    [up_calls.calls(), down_calls.calls()]
}

#[test]
fn aws_call_count_does_not_grow_with_group_size() {
    if !moto_available("aws_call_count_does_not_grow_with_group_size") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut totals = Vec::new();
    for n in [1u32, 10, 50] {
        let [up, down] = calls_for(&moto, n, dir.path());
        let total: u64 = up.values().sum();
        let down_total: u64 = down.values().sum();
        // Printed for scripts/bench (`--nocapture`).
        println!("ec2-calls group={n} total={total} down={down_total} {up:?}");
        assert_eq!(up.get("RunInstances"), Some(&1), "{up:?}");
        assert_eq!(down.get("TerminateInstances"), Some(&1), "{down:?}");
        totals.push((total, down_total));
    }
    assert!(
        totals.windows(2).all(|w| w[0] == w[1]),
        "EC2 call count grows with the group size: {totals:?}"
    );
}

#[test]
fn aws_throttling_5xx_slow_boot_and_dependency_violations_are_survived() {
    if !fleet_available("aws_throttling_5xx_slow_boot_and_dependency_violations_are_survived")
        || !moto_available("aws_throttling_5xx_slow_boot_and_dependency_violations_are_survived")
    {
        return;
    }
    let moto = Moto::start();
    // Subnet 10.250.0.192/27: .196, .197.
    let _fleet = fleet_for("awf", 196, 2);
    let ws = Workspace::new("awf");
    write_recipe(&ws, "10.250.0.192/27", 1, AMI);
    let rt = rt();
    let inner: Arc<dyn Ec2Api> = Arc::new(rt.block_on(moto.api()));
    let check = rt.block_on(moto.api());
    let faults = Faults {
        throttle_every: Some(4),
        server_errors: [
            ("RunInstances".to_string(), 2),
            ("CreateVpc".to_string(), 1),
            ("DescribeInstances".to_string(), 1),
        ]
        .into(),
        boot_delay: Some(Duration::from_secs(3)),
        dependency_violations: [(NetKind::Vpc, 2), (NetKind::Subnet, 1)].into(),
        ..Faults::default()
    };
    let api = Arc::new(Instrumented::new(inner, faults));
    let settings = continuum::ops::Settings {
        state_dir: ws.state_dir(),
        connect_timeout: Duration::from_secs(3),
        ec2: Arc::new(Given(api.clone())),
        cloud: provision::Options {
            retry: continuum::aws::RetryPolicy {
                attempts: 6,
                base: Duration::from_millis(20),
                max: Duration::from_millis(200),
                consistency: Duration::from_secs(10),
            },
            poll: Duration::from_millis(300),
            delete_timeout: Duration::from_secs(30),
        },
        ..continuum::ops::Settings::default()
    };
    let env = continuum::files::load_recipe(&ws.recipe())
        .expect("recipe")
        .env;
    let cancel = tokio_util::sync::CancellationToken::new();
    let report = rt.block_on(continuum::ops::up::up(
        &env,
        &settings,
        Arc::new(continuum::ops::Silent),
        &cancel,
        |_| true,
    ));
    let injected = api.injected();
    assert!(report.is_ok(), "up failed under faults: {:?}", report.err());
    assert!(
        injected.get("RunInstances").is_some_and(|n| *n >= 2),
        "{injected:?}"
    );
    assert!(injected.values().sum::<u64>() >= 5, "{injected:?}");
    // Slow boot was seen: more than one poll per group.
    assert!(api.calls()["DescribeInstances"] >= 3, "{:?}", api.calls());
    assert_eq!(rt.block_on(live_instances(&check, "awf")), 2);

    let report = rt.block_on(continuum::ops::down::down(
        "awf",
        &[],
        &settings,
        Arc::new(continuum::ops::Silent),
        &cancel,
    ));
    assert!(
        report.is_ok(),
        "down failed under faults: {:?}",
        report.err()
    );
    assert!(
        api.injected().contains_key("Delete VPC"),
        "{:?}",
        api.injected()
    );
    let left = rt.block_on(sweep(&check, "awf"));
    assert!(left.is_empty(), "{left:?}");
}

/// The crash child (examples/aws_crash_child.rs, never run as a test): the program
/// `cargo build --example aws_crash_child` leaves in `target/<profile>/examples/`
/// (scripts/test builds it first; `cargo test` builds examples as test harnesses).
fn crash_child() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let p = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>")
        .join("examples")
        .join("aws_crash_child");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --example aws_crash_child` first (scripts/test does)",
        p.display()
    );
    p
}

/// Run the crash child on the workspace's recipe, state and kubeconfig against `moto`:
/// `up` (or the command `run_in` names) until the EC2 call `op` returns, then SIGKILL.
fn crash(ws: &Workspace, moto: &Moto, op: &str, run_in: Option<&str>) -> ExitStatus {
    let mut child = Command::new(crash_child());
    child.env("CONTINUUM_IT_CRASH_AT", op);
    if let Some(command) = run_in {
        child.env("CONTINUUM_IT_CRASH_IN", command);
    }
    child
        .env("CONTINUUM_IT_RECIPE", ws.recipe())
        .env("CONTINUUM_IT_STATE", ws.state_dir())
        .env("CONTINUUM_IT_MOTO", moto.url())
        .env("KUBECONFIG", ws.kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run crash child")
}

#[test]
fn aws_kill_9_at_seven_points_of_up_and_down_then_converge() {
    if !fleet_available("aws_kill_9_at_seven_points_of_up_and_down_then_converge")
        || !moto_available("aws_kill_9_at_seven_points_of_up_and_down_then_converge")
    {
        return;
    }
    let moto = Moto::start();
    // Subnet 10.250.0.224/27: .228 (server), .229, .230 (agents); a duplicate launch
    // would take .231 and up, where no host answers.
    let fleet = fleet_for("awk", 228, 3);
    let ws = Workspace::new("awk");
    write_recipe(&ws, "10.250.0.224/27", 2, AMI);
    let rt = rt();
    let api = rt.block_on(moto.api());
    for op in ["CreateVpc", "CreateSecurityGroup", "RunInstances"] {
        let status = crash(&ws, &moto, op, None);
        assert_eq!(
            status.signal(),
            Some(9),
            "{op}: child was not killed: {status:?}"
        );
    }
    // After the RunInstances kill the instances exist, but state never recorded them.
    let st = ws.state();
    assert!(
        st["aws"]["groups"]
            .get("cp")
            .is_none_or(|g| g["instances"].as_object().is_none_or(|m| m.is_empty())),
        "{st:#}"
    );
    let out = up(&ws, &moto);
    assert!(
        out.status.success(),
        "up after kill -9 failed:\n{}",
        text(&out)
    );
    assert_eq!(
        rt.block_on(live_instances(&api, "awk")),
        3,
        "exactly the requested instances"
    );
    let tagged_vpcs = rt
        .block_on(api.describe_tagged(NetKind::Vpc, "awk"))
        .expect("vpcs");
    assert_eq!(tagged_vpcs.len(), 1, "{tagged_vpcs:?}");
    let sgs = rt
        .block_on(api.describe_tagged(NetKind::SecurityGroup, "awk"))
        .expect("sgs");
    assert_eq!(sgs.len(), 1, "{sgs:?}");
    let server = server_host(&fleet, &ws.state());
    assert_eq!(ready_nodes(&fleet, &server), ["cp-0", "w-0", "w-1"]);

    // `down` killed right after it terminates the instances, then after each of its
    // next three deletions (each run resumes where the last one stopped); the final
    // `down` leaves nothing behind.
    for (i, op) in ["TerminateInstances", "Delete", "Delete", "Delete"]
        .into_iter()
        .enumerate()
    {
        let status = crash(&ws, &moto, op, Some("down"));
        assert_eq!(
            status.signal(),
            Some(9),
            "down #{i} ({op}): child was not killed: {status:?}"
        );
    }
    let down = ws.cmd().moto(&moto).args(["down", "awk", "--yes"]).output();
    assert!(down.status.success(), "{}", text(&down));
    let left = rt.block_on(sweep(&api, "awk"));
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn aws_default_vpc_spot_and_public_addresses_then_teardown_keeps_the_default_vpc() {
    if !moto_available(
        "aws_default_vpc_spot_and_public_addresses_then_teardown_keeps_the_default_vpc",
    ) {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let recipe = dir.path().join("dv.yaml");
    std::fs::write(
        &recipe,
        format!(
            "name: dv\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: {REGION}\n  ssh:\n    user: ubuntu\n    address: public\n  firewall:\n    ssh_from: [203.0.113.0/24]\n  instance_groups:\n    - name: g\n      count: 2\n      instance_type: t3.small\n      spot: true\n      root_volume_gb: 16\n      image: {AMI}\n"
        ),
    )
    .expect("write recipe");
    let env = continuum::files::load_recipe(&recipe).expect("recipe").env;
    let site = env.aws.clone().expect("site");
    let rt = rt();
    rt.block_on(async {
        let api = moto.api().await;
        let default_vpc = api
            .default_vpc()
            .await
            .expect("default vpc")
            .expect("has one");
        let opts = provision::Options {
            poll: Duration::from_millis(100),
            delete_timeout: Duration::from_secs(10),
            ..provision::Options::default()
        };
        let j = Mem::default();
        let images = provision::validate(&api, &site, &opts)
            .await
            .expect("validate");
        network(&api, &env, &j, dir.path(), &images.zones, &opts).await;
        let g = &site.groups[0];
        provision::ensure_group(&api, &env, g, &images.images["g"], &j, &opts, false)
            .await
            .expect("group");
        let st = j.cloud();
        assert_eq!(
            st.vpc.as_ref().map(|v| (v.id.as_str(), v.created)),
            Some((default_vpc.as_str(), false))
        );
        assert!(st.subnet.as_ref().is_some_and(|s| !s.created), "{st:?}");
        assert!(st.internet_gateway.is_none() && st.route_table.is_none());
        // Default subnets map public IPs: the SSH address is the public one.
        for (h, r) in &st.groups["g"].instances {
            assert!(r.public_ip.is_some(), "{h} has no public IP: {r:?}");
            assert_eq!(
                provision::address_of(&site, h, r).ok(),
                r.public_ip.clone(),
                "{h}"
            );
        }
        // A second pass launches nothing and changes nothing.
        let before = st.clone();
        let changed = provision::ensure_group(&api, &env, g, &images.images["g"], &j, &opts, false)
            .await
            .expect("group again");
        assert!(!changed);
        assert_eq!(j.cloud(), before);

        let report = provision::teardown(&api, "dv", &j, &opts, &|_| {})
            .await
            .expect("teardown");
        assert_eq!(report.terminated.len(), 2, "{report:?}");
        assert!(sweep(&api, "dv").await.is_empty());
        // The default VPC is not continuum's: it is still there.
        assert_eq!(api.default_vpc().await.expect("vpc"), Some(default_vpc));
        assert!(j.cloud().is_empty(), "{:?}", j.cloud());
    });
}

/// A small site for provisioning-level tests: one group of `count` in a created VPC.
fn small_env(
    dir: &std::path::Path,
    name: &str,
    subnet: &str,
    ssh_timeout: u64,
) -> continuum::recipe::Environment {
    let recipe = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &recipe,
        format!(
            "name: {name}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: {REGION}\n  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: {subnet}\n  ssh:\n    user: ubuntu\n    timeout: {ssh_timeout}\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n"
        ),
    )
    .expect("write recipe");
    continuum::files::load_recipe(&recipe).expect("recipe").env
}

/// The network part of `up` in graph order: VPC, subnet (in one of `zones`, when
/// validation gave them), gateway and route (only for a created VPC, as in
/// `graph::build`), security group, key pair.
async fn network(
    api: &dyn Ec2Api,
    env: &continuum::recipe::Environment,
    j: &Mem,
    dir: &std::path::Path,
    zones: &[String],
    opts: &provision::Options,
) {
    let site = env.aws.as_ref().expect("site");
    provision::init_state(j, site).expect("init");
    provision::ensure_vpc(api, env, j, opts).await.expect("vpc");
    provision::ensure_subnet(api, env, j, zones, opts)
        .await
        .expect("subnet");
    if matches!(site.vpc, continuum::recipe::VpcChoice::Create { .. }) {
        provision::ensure_gateway(api, env, j, opts)
            .await
            .expect("igw");
        provision::ensure_route(api, env, j, opts)
            .await
            .expect("route");
    }
    provision::ensure_security_group(api, env, j, opts)
        .await
        .expect("sg");
    provision::ensure_key_pair(api, env, j, dir, opts)
        .await
        .expect("key");
}

#[test]
fn aws_instance_that_never_answers_ssh_is_named_in_the_error() {
    if !moto_available("aws_instance_that_never_answers_ssh_is_named_in_the_error") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    // 10.250.0.240/28: moto hands out .244, where no test host ever runs.
    let env = small_env(dir.path(), "nossh", "10.250.0.240/28", 3);
    let site = env.aws.clone().expect("site");
    let rt = rt();
    rt.block_on(async {
        let api = moto.api().await;
        let opts = provision::Options {
            poll: Duration::from_millis(100),
            ..provision::Options::default()
        };
        let j = Mem::default();
        network(&api, &env, &j, dir.path(), &[], &opts).await;
        let images = provision::validate(&api, &site, &opts)
            .await
            .expect("validate");
        let started = Instant::now();
        let err = provision::ensure_group(
            &api,
            &env,
            &site.groups[0],
            &images.images["g"],
            &j,
            &opts,
            true,
        )
        .await
        .expect_err("no SSH there");
        let id = j.cloud().groups["g"].instances["g-0"].id.clone();
        let msg = err.to_string();
        assert!(
            msg.contains(&id)
                && msg.contains("g-0")
                && msg.contains("10.250.0.244")
                && msg.contains("did not answer SSH"),
            "{msg}"
        );
        // It gave up at the timeout (3 s), it did not hang.
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        // The instance is recorded: the next up adopts it, `down` removes it.
        provision::teardown(&api, "nossh", &j, &opts, &|_| {})
            .await
            .expect("teardown");
        assert!(sweep(&api, "nossh").await.is_empty());
    });
}

#[test]
fn aws_teardown_reports_what_it_cannot_delete_and_keeps_it_in_state() {
    if !moto_available("aws_teardown_reports_what_it_cannot_delete_and_keeps_it_in_state") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = small_env(dir.path(), "stuck", "10.250.0.240/28", 3);
    let rt = rt();
    rt.block_on(async {
        let inner: Arc<dyn Ec2Api> = Arc::new(moto.api().await);
        let check = moto.api().await;
        let opts = provision::Options {
            poll: Duration::from_millis(100),
            delete_timeout: Duration::from_secs(2),
            retry: continuum::aws::RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(10),
                max: Duration::from_millis(50),
                consistency: Duration::from_secs(5),
            },
        };
        let j = Mem::default();
        network(inner.as_ref(), &env, &j, dir.path(), &[], &opts).await;
        // The security group never stops having dependants.
        let api = Instrumented::new(
            inner,
            Faults {
                dependency_violations: [(NetKind::SecurityGroup, u32::MAX)].into(),
                ..Faults::default()
            },
        );
        let err = provision::teardown(&api, "stuck", &j, &opts, &|_| {})
            .await
            .expect_err("the security group cannot go");
        let sg = j.cloud().security_group.clone().expect("kept in state");
        let msg = err.to_string();
        assert!(
            msg.contains("could not delete") && msg.contains(&sg),
            "{msg}"
        );
        // Everything else is gone (and forgotten); the VPC stays because the group does.
        let st = j.cloud();
        assert!(
            st.key_pair.is_none() && st.route_table.is_none() && st.internet_gateway.is_none(),
            "{st:?}"
        );
        let left = sweep(&check, "stuck").await;
        assert!(left.iter().any(|l| l.contains(&sg)), "{left:?}");
        // Once the dependency is gone, a second teardown finishes the job.
        provision::teardown(&check, "stuck", &j, &opts, &|_| {})
            .await
            .expect("second teardown");
        assert!(sweep(&check, "stuck").await.is_empty());
        assert!(j.cloud().is_empty());
    });
}
