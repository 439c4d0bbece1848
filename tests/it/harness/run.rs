//! The one way the tests run the continuum binary: a small builder over
//! `std::process::Command` that starts from the same defaults every time (no
//! `CONTINUUM_LOG` from the caller's environment, stdin empty) and names the settings
//! tests vary (state directory, kubeconfig, oscar-cli config, working directory,
//! environment, stdin). `Workspace::cmd` is this runner with a workspace's paths.

use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use super::moto::Moto;

/// One run of the continuum binary, built up and then started with `output` or `spawn`.
pub struct Continuum {
    cmd: Command,
    input: Option<String>,
}

impl Default for Continuum {
    fn default() -> Self {
        Continuum::new()
    }
}

impl Continuum {
    /// The binary cargo built for these tests, without `CONTINUUM_LOG` and with an
    /// empty stdin (never a terminal).
    pub fn new() -> Continuum {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_continuum"));
        cmd.env_remove("CONTINUUM_LOG").stdin(Stdio::null());
        Continuum { cmd, input: None }
    }

    /// Where continuum keeps its state (`CONTINUUM_STATE_DIR`).
    pub fn state_dir(self, dir: impl AsRef<Path>) -> Self {
        self.env("CONTINUUM_STATE_DIR", dir.as_ref())
    }

    /// The kubeconfig continuum merges into when a recipe names none (`KUBECONFIG`).
    pub fn kubeconfig(self, path: impl AsRef<Path>) -> Self {
        self.env("KUBECONFIG", path.as_ref())
    }

    /// The oscar-cli config the `fn` commands read (`CONTINUUM_OSCAR_CLI_CONFIG`).
    pub fn oscar_cli_config(self, path: impl AsRef<Path>) -> Self {
        self.env("CONTINUUM_OSCAR_CLI_CONFIG", path.as_ref())
    }

    /// Point the binary's AWS SDK at `moto`, with test credentials and no profile,
    /// shared files or instance metadata of the machine running the tests.
    pub fn moto(self, moto: &Moto) -> Self {
        self.env("AWS_ENDPOINT_URL_EC2", moto.url())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.cmd.args(args);
        self
    }

    /// Give `text` on stdin (for `output`), as a user typing it would.
    pub fn input(mut self, text: &str) -> Self {
        self.input = Some(text.to_string());
        self
    }

    pub fn stdout(mut self, to: Stdio) -> Self {
        self.cmd.stdout(to);
        self
    }

    pub fn stderr(mut self, to: Stdio) -> Self {
        self.cmd.stderr(to);
        self
    }

    /// Run to the end; exit status, stdout and stderr.
    pub fn output(mut self) -> Output {
        let Some(text) = self.input.take() else {
            return self.cmd.output().expect("run continuum");
        };
        let mut child = self
            .cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run continuum");
        child
            .stdin
            .as_mut()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write continuum's stdin");
        child.wait_with_output().expect("wait for continuum")
    }

    /// Start it and return at once (stdout and stderr as set with `stdout`/`stderr`).
    pub fn spawn(mut self) -> Child {
        assert!(self.input.is_none(), "stdin text is given by `output` only");
        self.cmd.spawn().expect("start continuum")
    }
}
