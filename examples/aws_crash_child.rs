//! TEST HELPER, not an example for users: the child process of the integration test
//! `aws::aws_kill_9_at_seven_points_of_up_and_down_then_converge` (tests/it/aws/mod.rs). It runs
//! `up` against the moto EC2 emulator through the fault-injecting test double of
//! tests/it/aws/doubles (included here by path; it is not part of the library), which
//! SIGKILLs this process right after the EC2 call named by `CONTINUUM_IT_CRASH_AT`
//! returns (before continuum records its result), so the test can check that the next
//! `up` adopts what was created. Kept out of the test harness so that it can never count
//! as a passing test (docs/reliability.md); scripts/test builds it with
//! `cargo build --example aws_crash_child`.
//!
//! Environment: CONTINUUM_IT_CRASH_AT (an EC2 operation; every network deletion is
//! `Delete`), CONTINUUM_IT_CRASH_IN (`up`, the default, or `down`), CONTINUUM_IT_RECIPE,
//! CONTINUUM_IT_STATE (state directory), CONTINUUM_IT_MOTO (the emulator's URL).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use continuum::aws::Ec2Api;
use continuum::aws::sdk::SdkEc2;

#[path = "../tests/it/aws/doubles/connect.rs"]
mod connect;
// Only the fault injector's hook is used here; its counters serve the tests.
#[allow(dead_code)]
#[path = "../tests/it/aws/doubles/fault.rs"]
mod fault;

use connect::Given;
use fault::{Faults, Instrumented};

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("aws_crash_child: {name} is not set (this is a test helper, see its header)");
        std::process::exit(2)
    })
}

fn main() {
    let op = var("CONTINUUM_IT_CRASH_AT");
    let recipe = PathBuf::from(var("CONTINUUM_IT_RECIPE"));
    let state_dir = PathBuf::from(var("CONTINUUM_IT_STATE"));
    let url = var("CONTINUUM_IT_MOTO");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let inner: Arc<dyn Ec2Api> =
        Arc::new(rt.block_on(SdkEc2::for_endpoint("eu-west-1", &url, "test", "test")));
    let hook: Arc<dyn Fn(&str) + Send + Sync> = Arc::new(|_| {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(30));
    });
    let api = Arc::new(Instrumented::new(
        inner,
        Faults {
            after: Some((op, hook)),
            ..Faults::default()
        },
    ));
    let settings = continuum::ops::Settings {
        state_dir,
        connect_timeout: Duration::from_secs(3),
        ec2: Arc::new(Given(api)),
        ..continuum::ops::Settings::default()
    };
    let env = continuum::files::load_recipe(&recipe).expect("recipe").env;
    let cancel = tokio_util::sync::CancellationToken::new();
    if std::env::var("CONTINUUM_IT_CRASH_IN").is_ok_and(|v| v == "down") {
        let _ = rt.block_on(continuum::ops::down::down(
            &env.name,
            &[],
            &settings,
            Arc::new(continuum::ops::Silent),
            &cancel,
        ));
    } else {
        let _ = rt.block_on(continuum::ops::up::up(
            &env,
            &settings,
            Arc::new(continuum::ops::Silent),
            &cancel,
            |_| true,
        ));
    }
}
