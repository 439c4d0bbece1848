//! The `continuum` binary: parse arguments, run, print the error chain, exit with a
//! documented code (README.md, "Exit codes").

use clap::Parser;
use continuum::cli::{self, Cli};

fn main() {
    let cli = Cli::parse();
    let level = if cli.global.quiet {
        "error"
    } else {
        match cli.global.verbose {
            0 | 1 => "warn",
            2 => "continuum=debug,info",
            _ => "debug",
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONTINUUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(cli::exit::ERROR);
        }
    };
    let result = runtime.block_on(cli::run(cli));
    if let Err(err) = result {
        if let Some(e @ continuum::recipe::LoadError::Invalid(_)) =
            err.downcast_ref::<continuum::recipe::LoadError>()
        {
            // Diagnostics already say `file:line:col: error: ...`.
            eprintln!("{e}");
            std::process::exit(cli::exit_code(&err));
        }
        let mut msg = format!("error: {err}");
        for cause in err.chain().skip(1) {
            let c = cause.to_string();
            if !msg.contains(&c) {
                msg.push_str(&format!("\n  caused by: {c}"));
            }
        }
        eprintln!("{msg}");
        std::process::exit(cli::exit_code(&err));
    }
}
