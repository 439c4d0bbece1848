//! The AWS site against EC2 as documented (moto behind `doubles::honest::Honest`, a
//! test double): ids invisible for a while after creation, client tokens remembered,
//! terminated instances forgotten, per-zone offerings, capacity errors as HTTP 500.

use std::sync::Arc;
use std::time::{Duration, Instant};

use continuum::aws::provision::{self, Journal};
use continuum::aws::{Ec2Api, InstanceQuery, RunSpec, TAG_TOKEN};
use continuum::recipe::Environment;

use super::doubles::connect::Given;
use super::doubles::fault::Faults;
use super::doubles::honest::Rules;
use super::{AMI, Mem, fleet_for, live_instances, network, quick, rt, sdk, stack, sweep};
use crate::harness::{
    Moto, REGION, Workspace, client_key, fleet_available, moto_available, ready_nodes, root,
};

/// An environment with the given `aws:` block (indented two spaces), from a recipe in
/// `dir`; `servers` names the k3s servers.
pub(super) fn env_with(dir: &std::path::Path, name: &str, servers: &str, aws: &str) -> Environment {
    let recipe = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &recipe,
        format!(
            "name: {name}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [{servers}]\naws:\n  region: {REGION}\n{aws}"
        ),
    )
    .expect("write recipe");
    continuum::files::load_recipe(&recipe).expect("recipe").env
}

/// A created VPC in the fleet range with one group `g` of `count` t3.small.
fn vpc_env(dir: &std::path::Path, name: &str, count: u32, extra_group: &str) -> Environment {
    env_with(
        dir,
        name,
        "g-0",
        &format!(
            "  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.240/28\n  ssh:\n    user: ubuntu\n    address: public\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: g\n      count: {count}\n      instance_type: t3.small\n      image: {AMI}\n{extra_group}"
        ),
    )
}

fn settings(ws: &Workspace, api: Arc<dyn Ec2Api>) -> continuum::ops::Settings {
    continuum::ops::Settings {
        state_dir: ws.state_dir(),
        connect_timeout: Duration::from_secs(3),
        ec2: Arc::new(Given(api)),
        cloud: quick(),
        ..continuum::ops::Settings::default()
    }
}

fn up_in_process(
    env: &Environment,
    settings: &continuum::ops::Settings,
) -> Result<continuum::ops::up::UpReport, continuum::ops::OpsError> {
    rt().block_on(continuum::ops::up::up(
        env,
        settings,
        Arc::new(continuum::ops::Silent),
        &tokio_util::sync::CancellationToken::new(),
        |_| true,
    ))
}

fn down_in_process(env: &str, settings: &continuum::ops::Settings) {
    let r = rt().block_on(continuum::ops::down::down(
        env,
        &[],
        settings,
        Arc::new(continuum::ops::Silent),
        &tokio_util::sync::CancellationToken::new(),
    ));
    assert!(r.is_ok(), "down failed: {:?}", r.err());
}

#[test]
fn aws_up_converges_through_delayed_visibility_and_interrupted_steps() {
    let test = "aws_up_converges_through_delayed_visibility_and_interrupted_steps";
    if !fleet_available(test) || !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    // Subnet 10.250.0.0/28: moto hands out .4 for the one instance.
    let fleet = fleet_for("awv", 4, 1);
    let ws = Workspace::new("awv");
    // wireguard-native: a hybrid cluster, so instances want public addresses and the
    // created subnet gets its public-IP setting (operated from inside the VPC here).
    std::fs::write(
        ws.recipe(),
        format!(
            "name: awv\nk3s:\n  version: v1.31.4+k3s1\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [cp]\n  flannel_backend: wireguard-native\n  readiness_timeout: 90\nkubeconfig:\n  path: {kc}\naws:\n  region: {REGION}\n  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.0/28\n  ssh:\n    user: ops\n    key: {key}\n    timeout: 60\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: cp\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n      role: server\n",
            bundle = root().join("tests/k3s-double").display(),
            kc = ws.kubeconfig().display(),
            key = client_key().display(),
        ),
    )
    .expect("recipe");
    let env = continuum::files::load_recipe(&ws.recipe())
        .expect("recipe")
        .env;
    let rt = rt();
    let (honest, api) = rt.block_on(stack(
        &moto,
        Rules::default(),
        Faults {
            // Each run stops once right after the subnet, then the route table, was
            // recorded: before the public-IP setting, before the default route.
            interrupt: [
                ("ModifySubnetAttribute".to_string(), 1),
                ("CreateRoute".to_string(), 1),
            ]
            .into(),
            ..Faults::default()
        },
    ));
    let settings = settings(&ws, api.clone());
    let client = rt.block_on(sdk(&moto));

    let first = up_in_process(&env, &settings);
    assert!(
        first.is_err(),
        "the first run was to stop at ModifySubnetAttribute"
    );
    let st = ws.state();
    let subnet = st["aws"]["subnet"]["id"]
        .as_str()
        .expect("subnet recorded")
        .to_string();
    assert_eq!(st["resources"]["aws-subnet"]["status"], "failed", "{st:#}");
    let map_public = |client: &aws_sdk_ec2::Client| {
        rt.block_on(client.describe_subnets().subnet_ids(&subnet).send())
            .expect("describe subnet")
            .subnets()[0]
            .map_public_ip_on_launch()
    };
    assert_eq!(map_public(&client), Some(false));

    let second = up_in_process(&env, &settings);
    assert!(second.is_err(), "the second run was to stop at CreateRoute");
    assert_eq!(map_public(&client), Some(true), "the resumed run set it");
    let st = ws.state();
    let table = st["aws"]["route_table"]
        .as_str()
        .expect("table recorded")
        .to_string();
    let default_routes = |client: &aws_sdk_ec2::Client| {
        rt.block_on(
            client
                .describe_route_tables()
                .route_table_ids(&table)
                .send(),
        )
        .expect("describe route table")
        .route_tables()[0]
            .routes()
            .iter()
            .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .count()
    };
    assert_eq!(default_routes(&client), 0);

    let third = up_in_process(&env, &settings);
    assert!(third.is_ok(), "up did not converge: {:?}", third.err());
    assert_eq!(
        default_routes(&client),
        1,
        "the resumed run created the route"
    );
    let st = ws.state();
    assert_eq!(
        st["resources"]["cluster-ready"]["status"], "applied",
        "{st:#}"
    );
    assert_eq!(ready_nodes(&fleet, "awv0"), ["cp-0"]);
    // EC2 did not know fresh ids at first, and up went through it.
    let hidden = honest.hidden();
    for op in [
        "CreateSubnet",
        "AttachInternetGateway",
        "AuthorizeSecurityGroupIngress",
    ] {
        assert!(
            hidden.contains_key(op),
            "{op} never met a young id: {hidden:?}"
        );
    }
    down_in_process("awv", &settings);
    let left = rt.block_on(sweep(&*api, "awv"));
    assert!(left.is_empty(), "{left:?}");
}

/// The request ensure_group makes for group `g` of `env` (to replay a crashed run).
fn spec_for(
    env: &Environment,
    j: &Mem,
    image: &provision::ResolvedImage,
    n: i32,
    token: &str,
) -> RunSpec {
    let st = j.cloud();
    let rid = provision::group_id("g");
    let mut tags = continuum::aws::tags(&env.name, &rid);
    tags.insert(TAG_TOKEN.into(), token.into());
    RunSpec {
        image_id: image.id.clone(),
        instance_type: "t3.small".into(),
        count: n,
        subnet_id: st.subnet.clone().expect("subnet").id,
        security_group_id: st.security_group.clone().expect("sg"),
        key_name: provision::key_name(&env.name),
        client_token: token.into(),
        user_data: provision::user_data(&env.name, "g").expect("user data"),
        root_volume_gb: None,
        root_device: image.root_device.clone(),
        spot: false,
        public_ip: provision::wants_public_ip(env),
        tags,
    }
}

#[test]
fn aws_fresh_ids_are_retried_until_ec2_knows_them_and_teardown_waits_for_them() {
    let test = "aws_fresh_ids_are_retried_until_ec2_knows_them_and_teardown_waits_for_them";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vpc_env(dir.path(), "fresh", 1, "");
    let site = env.aws.clone().expect("site");
    let rt = rt();
    rt.block_on(async {
        let (honest, api) = stack(
            &moto,
            Rules {
                visibility: Duration::from_millis(600),
                ..Rules::default()
            },
            Faults::default(),
        )
        .await;
        let opts = quick();
        let j = Mem::default();
        let valid = provision::validate(&*api, &site, &opts)
            .await
            .expect("validate");
        network(&*api, &env, &j, dir.path(), &valid.zones, &opts).await;
        let image = &valid.images["g"];
        provision::ensure_group(&*api, &env, &site.groups[0], image, &j, &opts, false)
            .await
            .expect("group");
        let hidden = honest.hidden();
        for op in [
            "CreateSubnet",
            "ModifySubnetAttribute",
            "AttachInternetGateway",
            "CreateRoute",
            "AuthorizeSecurityGroupIngress",
            "RunInstances",
        ] {
            assert!(
                hidden.contains_key(op),
                "{op} never met a young id: {hidden:?}"
            );
        }
        let st = j.cloud();
        let r = &st.groups["g"].instances["g-0"];
        assert_eq!(r.state, "running");
        assert!(r.public_ip.is_some(), "{r:?}");

        // A launch a crashed run made moments ago: recorded, not yet visible. Teardown
        // must wait for it, not take NotFound for "gone".
        let token = "continuum-crashed-run";
        let request = spec_for(&env, &j, image, 1, token);
        let extra = continuum::aws::retry_new(opts.retry, || honest.run_instances(&request))
            .await
            .expect("launch");
        let id = extra[0].id.clone();
        j.record(&mut |c| {
            let g = c.groups.entry("g".into()).or_default();
            g.instances.insert(
                "g-1".into(),
                provision::InstanceRecord {
                    id: id.clone(),
                    state: "pending".into(),
                    private_ip: None,
                    public_ip: None,
                },
            );
            c.created_at.insert(id.clone(), provision::now_secs());
        })
        .expect("record");
        let report = provision::teardown(&*api, "fresh", &j, &opts, &|_| {})
            .await
            .expect("teardown");
        assert!(report.terminated.contains(&id), "{report:?}");
        assert!(sweep(&*api, "fresh").await.is_empty());
    });
}

#[test]
fn aws_down_finishes_after_a_spot_instance_was_reclaimed_and_forgotten() {
    let test = "aws_down_finishes_after_a_spot_instance_was_reclaimed_and_forgotten";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vpc_env(dir.path(), "spot", 2, "");
    let site = env.aws.clone().expect("site");
    let rt = rt();
    rt.block_on(async {
        let rules = Rules::default();
        let forget = rules.forget_after;
        let (honest, api) = stack(&moto, rules, Faults::default()).await;
        let opts = quick();
        let j = Mem::default();
        let valid = provision::validate(&*api, &site, &opts)
            .await
            .expect("validate");
        network(&*api, &env, &j, dir.path(), &valid.zones, &opts).await;
        let g = &site.groups[0];
        provision::ensure_group(&*api, &env, g, &valid.images["g"], &j, &opts, false)
            .await
            .expect("group");
        let before = j.cloud().groups["g"].instances.clone();
        let reclaimed = before["g-1"].id.clone();
        honest.reclaim(&reclaimed).await.expect("reclaim");
        tokio::time::sleep(forget + Duration::from_millis(300)).await;
        assert!(
            api.find_instances(&InstanceQuery::Ids(vec![reclaimed.clone()]))
                .await
                .expect("lookup")
                .is_empty(),
            "EC2 should have forgotten {reclaimed}"
        );

        // `up` again: the forgotten instance's host gets a new one, the other stays.
        provision::ensure_group(&*api, &env, g, &valid.images["g"], &j, &opts, false)
            .await
            .expect("group again");
        let after = j.cloud().groups["g"].instances.clone();
        assert_eq!(after["g-0"].id, before["g-0"].id);
        assert_ne!(after["g-1"].id, reclaimed);
        assert_eq!(live_instances(&moto.api().await, "spot").await, 2);

        // Reclaimed again and forgotten: `down` terminates the rest and finishes.
        honest.reclaim(&after["g-1"].id).await.expect("reclaim");
        tokio::time::sleep(forget + Duration::from_millis(300)).await;
        let started = Instant::now();
        let report = provision::teardown(&*api, "spot", &j, &opts, &|_| {})
            .await
            .expect("teardown after a reclaim");
        assert_eq!(report.terminated, [after["g-0"].id.clone()], "{report:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(
            !honest.refused().contains_key("TerminateInstances"),
            "a forgotten id was sent to TerminateInstances: {:?}",
            honest.refused()
        );
        assert!(sweep(&*api, "spot").await.is_empty());
        assert!(j.cloud().is_empty(), "{:?}", j.cloud());
    });
}

#[test]
fn aws_a_pending_token_is_adopted_and_a_reused_one_is_not() {
    let test = "aws_a_pending_token_is_adopted_and_a_reused_one_is_not";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = rt();
    rt.block_on(async {
        let rules = Rules::default();
        let forget = rules.forget_after;
        let (honest, api) = stack(&moto, rules, Faults::default()).await;
        // moto itself: what exists, whatever EC2 would list yet.
        let check = moto.api().await;
        let opts = quick();
        let runs = |api: &super::doubles::fault::Instrumented| {
            api.calls().get("RunInstances").copied().unwrap_or(0)
        };
        // (crashed launch count, group count, reclaimed before the next run)
        for (name, launched, want, reclaim) in [
            ("tka", 2, 2, false),
            ("tkm", 1, 2, false),
            ("tkr", 1, 1, true),
        ] {
            let env = vpc_env(dir.path(), name, want, "");
            let site = env.aws.clone().expect("site");
            let j = Mem::default();
            let valid = provision::validate(&*api, &site, &opts)
                .await
                .expect("validate");
            network(&*api, &env, &j, dir.path(), &valid.zones, &opts).await;
            let image = &valid.images["g"];
            // A run wrote its token, launched, and died before recording the result.
            let token = format!("continuum-{name}-crashed");
            j.record(&mut |c| {
                c.groups.entry("g".into()).or_default().pending_token = Some(token.clone());
            })
            .expect("record");
            let request = spec_for(&env, &j, image, launched, &token);
            let crashed: Vec<String> =
                continuum::aws::retry_new(opts.retry, || honest.run_instances(&request))
                    .await
                    .expect("crashed launch")
                    .into_iter()
                    .map(|i| i.id)
                    .collect();
            if reclaim {
                honest.reclaim(&crashed[0]).await.expect("reclaim");
                tokio::time::sleep(forget + Duration::from_millis(300)).await;
            }
            let before = runs(&api);
            provision::ensure_group(&*api, &env, &site.groups[0], image, &j, &opts, false)
                .await
                .expect("group");
            let st = j.cloud();
            let mapped: Vec<String> = st.groups["g"]
                .instances
                .values()
                .map(|r| r.id.clone())
                .collect();
            assert_eq!(mapped.len(), want as usize, "{name}: {st:?}");
            assert!(st.groups["g"].pending_token.is_none(), "{name}: token kept");
            assert_eq!(live_instances(&check, name).await, want as usize, "{name}");
            match name {
                // Same request under the pending token: EC2 returns the reservation.
                "tka" => {
                    assert_eq!(runs(&api) - before, 1, "{name}");
                    assert_eq!(
                        mapped.iter().collect::<std::collections::BTreeSet<_>>(),
                        crashed.iter().collect(),
                        "{name}: adopted"
                    );
                }
                // The recipe changed after the crash: mismatch, adopted, token cleared.
                "tkm" => {
                    assert!(mapped.contains(&crashed[0]), "{name}: {mapped:?}");
                    assert_eq!(honest.refused().get("RunInstances"), Some(&1), "{name}");
                    assert_eq!(runs(&api) - before, 2, "{name}");
                }
                // The token's instance ended: its old reservation is not used.
                _ => {
                    assert!(
                        !mapped.contains(&crashed[0]),
                        "{name}: mapped a dead instance"
                    );
                    assert_eq!(runs(&api) - before, 2, "{name}");
                }
            }
            provision::teardown(&*api, name, &j, &opts, &|_| {})
                .await
                .expect("teardown");
            assert!(sweep(&*api, name).await.is_empty(), "{name}");
        }
    });
}

#[test]
fn aws_an_unavailable_zone_is_refused_before_any_spend() {
    let test = "aws_an_unavailable_zone_is_refused_before_any_spend";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let rt = rt();
    let not_in_a = Rules {
        not_offered: [("eu-west-1a".to_string(), "t3.small".to_string())].into(),
        ..Rules::default()
    };
    // The recipe's zone does not offer the type: nothing is created.
    let ws = Workspace::new("awz");
    std::fs::write(
        ws.recipe(),
        format!(
            "name: awz\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: {REGION}\n  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.96/27\n    availability_zone: eu-west-1a\n  ssh:\n    user: ubuntu\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n"
        ),
    )
    .expect("recipe");
    let env = continuum::files::load_recipe(&ws.recipe())
        .expect("recipe")
        .env;
    let (_, api) = rt.block_on(stack(&moto, not_in_a.clone(), Faults::default()));
    let err =
        up_in_process(&env, &settings(&ws, api.clone())).expect_err("a zone without the type");
    let msg = err.to_string();
    let line = std::fs::read_to_string(ws.recipe())
        .expect("recipe")
        .lines()
        .position(|l| l.contains("instance_type:"))
        .expect("line")
        + 1;
    assert!(
        msg.contains("`t3.small` is not offered in availability zone eu-west-1a")
            && msg.contains(&format!("recipe.yaml:{line}:")),
        "{msg}"
    );
    let calls = api.calls();
    assert!(
        calls.keys().all(|op| op.starts_with("Describe")),
        "spent before validating: {calls:?}"
    );
    assert!(rt.block_on(sweep(&*api, "awz")).is_empty());

    // No zone in the recipe: the subnet goes where the type is offered, created or
    // the default VPC's.
    let dir = tempfile::tempdir().expect("tempdir");
    rt.block_on(async {
        let (honest, api) = stack(&moto, not_in_a, Faults::default()).await;
        let opts = quick();
        for (name, aws) in [
            (
                "zc",
                "  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.96/27\n",
            ),
            ("zd", ""),
        ] {
            let env = env_with(
                dir.path(),
                name,
                "g-0",
                &format!(
                    "{aws}  ssh:\n    user: ubuntu\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n"
                ),
            );
            let site = env.aws.clone().expect("site");
            let valid = provision::validate(&*api, &site, &opts).await.expect("validate");
            assert!(!valid.zones.contains(&"eu-west-1a".to_string()), "{valid:?}");
            let j = Mem::default();
            network(&*api, &env, &j, dir.path(), &valid.zones, &opts).await;
            let zone = j.cloud().subnet.and_then(|s| s.zone).expect("zone");
            assert_ne!(zone, "eu-west-1a", "{name}");
            provision::ensure_group(&*api, &env, &site.groups[0], &valid.images["g"], &j, &opts, false)
                .await
                .expect("launch where the type is offered");
            assert!(honest.refused().is_empty(), "{name}: {:?}", honest.refused());
            // A subnet recorded in a zone without the type is refused before a launch.
            let mut moved = j.cloud();
            if let Some(s) = moved.subnet.as_mut() {
                s.zone = Some("eu-west-1a".into());
            }
            let e = provision::check_subnet_zone(&*api, &moved, &valid, &opts)
                .await
                .expect_err("zone without the type");
            assert!(e.to_string().contains("is in eu-west-1a"), "{e}");
            provision::teardown(&*api, name, &j, &opts, &|_| {})
                .await
                .expect("teardown");
            assert!(sweep(&*api, name).await.is_empty(), "{name}");
        }
    });
}

#[test]
fn aws_capacity_errors_end_at_once_with_the_hint() {
    let test = "aws_capacity_errors_end_at_once_with_the_hint";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let rt = rt();
    for (name, code, spot, hint) in [
        ("awc", "InsufficientInstanceCapacity", false, "another zone"),
        ("awcs", "SpotMaxPriceTooLow", true, "on-demand"),
    ] {
        let ws = Workspace::new(name);
        std::fs::write(
            ws.recipe(),
            format!(
                "name: {name}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: {REGION}\n  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.96/27\n  ssh:\n    user: ubuntu\n  firewall:\n    ssh_from: [10.250.0.0/24]\n  instance_groups:\n    - name: g\n      count: 3\n      instance_type: t3.small\n      spot: {spot}\n      image: {AMI}\n"
            ),
        )
        .expect("recipe");
        let env = continuum::files::load_recipe(&ws.recipe())
            .expect("recipe")
            .env;
        let (honest, api) = rt.block_on(stack(
            &moto,
            Rules {
                capacity: [("t3.small".to_string(), code.to_string())].into(),
                ..Rules::default()
            },
            Faults::default(),
        ));
        // The production retry policy (8 attempts, backoff up to 20 s): a retried
        // capacity error would show as more calls and a long wait.
        let mut s = settings(&ws, api.clone());
        s.cloud.retry = continuum::aws::RetryPolicy {
            consistency: Duration::from_secs(15),
            ..continuum::aws::RetryPolicy::default()
        };
        let started = Instant::now();
        let err = up_in_process(&env, &s).expect_err("no capacity");
        let msg = err.to_string();
        assert!(msg.contains(code) && msg.contains(hint), "{name}: {msg}");
        assert_eq!(api.calls().get("RunInstances"), Some(&1), "{name}: retried");
        assert_eq!(honest.refused().get("RunInstances"), Some(&1), "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name}: {:?}",
            started.elapsed()
        );
        let st = ws.state();
        assert!(
            st["aws"]["groups"]["g"]["pending_token"].is_null(),
            "{name}: {st:#}"
        );
        down_in_process(name, &s);
        assert!(rt.block_on(sweep(&*api, name)).is_empty(), "{name}");
    }
}
