//! The smaller EC2 facts continuum relies on, against moto (behind the honest double
//! where EC2 differs): t2's architecture order, IPv6 firewall sources and firewall
//! drift, public addresses per launch and Elastic IPs, IMDSv2, network interfaces
//! named when a subnet will not delete, credentials resolved before anything.

use std::time::Duration;

use continuum::aws::provision::{self, Journal};
use continuum::aws::{Ec2Api, NetKind};
use continuum::recipe::ImageRef;

use super::doubles::fault::{Faults, Instrumented};
use super::doubles::honest::Rules;
use super::honest::env_with;
use super::{AMI, Mem, network, quick, rt, sdk, stack, sweep};
use crate::harness::{Moto, Workspace, moto_available, path_str, text};

#[test]
fn aws_t2_without_architecture_gets_an_x86_64_image() {
    if !moto_available("aws_t2_without_architecture_gets_an_x86_64_image") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with(
        dir.path(),
        "t2",
        "g-0",
        "  ssh:\n    user: ubuntu\n  firewall:\n    ssh_from: [203.0.113.0/24]\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t2.micro\n      image:\n        name: \"ubuntu/images/hvm-ssd/ubuntu-xenial-16.04-amd64-server-*\"\n        owner: \"099720109477\"\n",
    );
    let site = env.aws.clone().expect("site");
    assert!(matches!(
        &site.groups[0].image,
        ImageRef::Lookup {
            architecture: None,
            ..
        }
    ));
    rt().block_on(async {
        let (honest, _) = stack(&moto, Rules::default(), Faults::default()).await;
        let types = honest
            .describe_instance_types(&["t2.micro".to_string()])
            .await
            .expect("types");
        assert_eq!(types[0].architectures[0], "i386", "{types:?}");
        let valid = provision::validate(&*honest, &site, &quick())
            .await
            .expect("t2.micro validates");
        assert_eq!(valid.images["g"].architecture, "x86_64");
    });
}

#[test]
fn aws_ipv6_sources_and_rules_dropped_from_the_recipe() {
    if !moto_available("aws_ipv6_sources_and_rules_dropped_from_the_recipe") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let site = |ssh_from: &str| {
        format!(
            "  network:\n    vpc_cidr: 10.250.0.0/24\n    subnet_cidr: 10.250.0.240/28\n  ssh:\n    user: ubuntu\n  firewall:\n    ssh_from: [{ssh_from}]\n    http: true\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n"
        )
    };
    let before = env_with(
        dir.path(),
        "fw",
        "g-0",
        &site("10.250.0.0/24, \"2001:db8::/64\""),
    );
    rt().block_on(async {
        let (_, api) = stack(&moto, Rules::default(), Faults::default()).await;
        let client = sdk(&moto).await;
        let opts = quick();
        let j = Mem::default();
        network(&*api, &before, &j, dir.path(), &[], &opts).await;
        let sg = j.cloud().security_group.expect("sg");
        let perms = |client: aws_sdk_ec2::Client, sg: String| async move {
            client
                .describe_security_groups()
                .group_ids(sg)
                .send()
                .await
                .expect("describe")
                .security_groups()[0]
                .ip_permissions()
                .to_vec()
        };
        let ssh_v6 = |p: &[aws_sdk_ec2::types::IpPermission]| {
            p.iter()
                .filter(|p| p.from_port() == Some(22))
                .flat_map(|p| p.ipv6_ranges())
                .filter_map(|r| r.cidr_ipv6().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let p = perms(client.clone(), sg.clone()).await;
        assert_eq!(ssh_v6(&p), ["2001:db8::/64"], "{p:?}");
        // A rule added by hand is not continuum's: it stays.
        client
            .authorize_security_group_ingress()
            .group_id(&sg)
            .ip_protocol("tcp")
            .from_port(8080)
            .to_port(8080)
            .cidr_ip("192.0.2.0/24")
            .send()
            .await
            .expect("hand rule");

        // The recipe drops the IPv6 source and the HTTP ports: they are revoked.
        let after = env_with(
            dir.path(),
            "fw",
            "g-0",
            &site("10.250.0.0/24").replace("    http: true\n", ""),
        );
        let changed = provision::ensure_security_group(&*api, &after, &j, &opts)
            .await
            .expect("drift");
        assert!(changed);
        let p = perms(client.clone(), sg.clone()).await;
        assert!(ssh_v6(&p).is_empty(), "{p:?}");
        let ports: Vec<i32> = p.iter().filter_map(|p| p.from_port()).collect();
        assert!(
            !ports.contains(&80) && !ports.contains(&443),
            "HTTP rules were not revoked: {p:?}"
        );
        assert!(ports.contains(&22) && ports.contains(&8080), "{p:?}");
        let recorded: Vec<String> = j.cloud().rules.iter().map(|r| r.source.clone()).collect();
        assert!(!recorded.iter().any(|s| s.contains(':')), "{recorded:?}");
        // Converged: nothing more to do.
        assert!(
            !provision::ensure_security_group(&*api, &after, &j, &opts)
                .await
                .expect("again")
        );
        provision::teardown(&*api, "fw", &j, &opts, &|_| {})
            .await
            .expect("teardown");
        assert!(sweep(&*api, "fw").await.is_empty());
    });
}

#[test]
fn aws_public_ips_per_launch_elastic_ips_kept_across_replacement_and_imdsv2() {
    let test = "aws_public_ips_per_launch_elastic_ips_kept_across_replacement_and_imdsv2";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = env_with(
        dir.path(),
        "eip",
        "cp",
        &format!(
            "  ssh:\n    user: ubuntu\n    address: public\n  firewall:\n    ssh_from: [203.0.113.0/24]\n  instance_groups:\n    - name: cp\n      count: 1\n      instance_type: t3.small\n      image: {AMI}\n      elastic_ip: true\n    - name: w\n      count: 1\n      instance_type: t3.small\n      spot: true\n      image: {AMI}\n"
        ),
    );
    let site = env.aws.clone().expect("site");
    rt().block_on(async {
        let rules = Rules::default();
        let forget = rules.forget_after;
        let (honest, api) = stack(&moto, rules, Faults::default()).await;
        let client = sdk(&moto).await;
        let opts = quick();
        // Some accounts' default subnets do not map public IPs.
        let vpc = api.default_vpc().await.expect("vpc").expect("default vpc");
        for s in api.default_subnets(&vpc).await.expect("subnets") {
            client
                .modify_subnet_attribute()
                .subnet_id(&s.id)
                .map_public_ip_on_launch(
                    aws_sdk_ec2::types::AttributeBooleanValue::builder()
                        .value(false)
                        .build(),
                )
                .send()
                .await
                .expect("unset");
        }
        let j = Mem::default();
        let valid = provision::validate(&*api, &site, &opts)
            .await
            .expect("validate");
        network(&*api, &env, &j, dir.path(), &valid.zones, &opts).await;
        for g in &site.groups {
            provision::ensure_group(&*api, &env, g, &valid.images[&g.name], &j, &opts, false)
                .await
                .expect("group");
        }
        let st = j.cloud();
        let w0 = &st.groups["w"].instances["w-0"];
        assert!(
            w0.public_ip.is_some(),
            "no public IP asked at launch: {w0:?}"
        );
        let eip = st.groups["cp"].addresses["cp-0"].clone();
        let cp0 = st.groups["cp"].instances["cp-0"].clone();
        assert_eq!(cp0.public_ip.as_deref(), Some(eip.public_ip.as_str()));
        let ids = vec![cp0.id.clone(), w0.id.clone()];
        let out = client
            .describe_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .expect("describe");
        for i in out.reservations().iter().flat_map(|r| r.instances()) {
            assert_eq!(
                i.metadata_options().and_then(|m| m.http_tokens()),
                Some(&aws_sdk_ec2::types::HttpTokensState::Required),
                "IMDSv2 not required on {:?}",
                i.instance_id()
            );
        }

        // The server's instance is replaced (spot reclaim, or a restart): same address.
        honest.reclaim(&cp0.id).await.expect("reclaim");
        tokio::time::sleep(forget + Duration::from_millis(300)).await;
        let cp = &site.groups[0];
        provision::ensure_group(&*api, &env, cp, &valid.images["cp"], &j, &opts, false)
            .await
            .expect("replace");
        let st = j.cloud();
        let again = &st.groups["cp"].instances["cp-0"];
        assert_ne!(again.id, cp0.id);
        assert_eq!(again.public_ip.as_deref(), Some(eip.public_ip.as_str()));
        assert_eq!(
            st.groups["cp"].addresses["cp-0"], eip,
            "a new address was allocated"
        );
        let resolved = provision::resolve(&env, Some(&st), dir.path());
        assert_eq!(resolved.hosts["cp-0"].address, eip.public_ip);

        provision::teardown(&*api, "eip", &j, &opts, &|_| {})
            .await
            .expect("teardown");
        assert!(
            api.describe_addresses("eip")
                .await
                .expect("addresses")
                .is_empty()
        );
        assert!(sweep(&*api, "eip").await.is_empty());
        assert!(j.cloud().is_empty(), "{:?}", j.cloud());
    });
}

#[test]
fn aws_a_subnet_that_will_not_delete_names_its_network_interfaces() {
    if !moto_available("aws_a_subnet_that_will_not_delete_names_its_network_interfaces") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let env = super::small_env(dir.path(), "eni", "10.250.0.240/28", 3);
    rt().block_on(async {
        let inner: std::sync::Arc<dyn Ec2Api> = std::sync::Arc::new(moto.api().await);
        let client = sdk(&moto).await;
        let mut opts = quick();
        opts.delete_timeout = Duration::from_secs(1);
        let j = Mem::default();
        network(&*inner, &env, &j, dir.path(), &[], &opts).await;
        let subnet = j.cloud().subnet.expect("subnet").id;
        // Something outside continuum holds the subnet (a Lambda, an endpoint, ...).
        let eni = client
            .create_network_interface()
            .subnet_id(&subnet)
            .description("held by something else")
            .send()
            .await
            .expect("eni")
            .network_interface()
            .and_then(|n| n.network_interface_id())
            .expect("eni id")
            .to_string();
        let api = Instrumented::new(
            inner.clone(),
            Faults {
                dependency_violations: [(NetKind::Subnet, u32::MAX), (NetKind::Vpc, u32::MAX)]
                    .into(),
                ..Faults::default()
            },
        );
        let err = provision::teardown(&api, "eni", &j, &opts, &|_| {})
            .await
            .expect_err("the subnet is held");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("subnet {subnet}")) && msg.contains(&eni),
            "{msg}"
        );
        assert!(msg.contains("held by something else"), "{msg}");
        client
            .delete_network_interface()
            .network_interface_id(&eni)
            .send()
            .await
            .expect("delete eni");
        provision::teardown(&*inner, "eni", &j, &opts, &|_| {})
            .await
            .expect("second teardown");
        assert!(sweep(&*inner, "eni").await.is_empty());
        assert!(j.cloud().is_empty());
    });
}

#[test]
fn aws_missing_credentials_fail_before_anything_and_the_endpoint_is_logged() {
    let test = "aws_missing_credentials_fail_before_anything_and_the_endpoint_is_logged";
    if !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    let ws = Workspace::new("awn");
    super::write_recipe(&ws, "10.250.0.96/27", 1, AMI);
    let out = ws
        .cmd()
        .moto(&moto)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_SESSION_TOKEN")
        .env("HOME", ws.state_dir())
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("cannot load AWS credentials") && t.contains("aws sso login"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "EC2 endpoint overridden by AWS_ENDPOINT_URL_EC2: {}",
            moto.url()
        )),
        "{t}"
    );
    let api = rt().block_on(moto.api());
    assert!(rt().block_on(sweep(&api, "awn")).is_empty());
}
