//! The output layer: the only place that writes to stdout/stderr, and where each piece
//! of output goes. Text for people (`text`, `tables`; progress bars on a terminal,
//! `progress`, plain lines otherwise) or JSON for machines (`json`: one object per line
//! while running, one document for reports). `Printer` picks the format of results,
//! `Reporter` that of the progress events a run reports. `enroll` renders the
//! enrolment commands' reports.

mod enroll;
mod json;
mod progress;
mod state;
pub mod tables;
mod text;

use std::io::{IsTerminal, Write};

use crate::graph::Plan;
use crate::ops::down::DownReport;
use crate::ops::status::StatusReport;
use crate::ops::up::UpReport;
use crate::ops::{Event, Observer};
use crate::recipe::Environment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Prints results and diagnostics in the chosen format.
#[derive(Debug, Clone)]
pub struct Printer {
    format: Format,
    quiet: bool,
    verbose: u8,
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

fn err(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{s}");
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: u8) -> Self {
        Printer {
            format,
            quiet,
            verbose,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn warning(&self, msg: &str) {
        match self.format {
            Format::Json => out(&json::warning(msg)),
            Format::Text => err(msg),
        }
    }

    /// Raw text to stdout (DOT output).
    pub fn text(&self, s: &str) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
    }

    pub fn validated(&self, env: &Environment) {
        match self.format {
            Format::Json => out(&json::validated(env)),
            Format::Text if !self.quiet => out(&text::validated(env)),
            Format::Text => {}
        }
    }

    pub fn plan(&self, env: &Environment, plan: &Plan) {
        if self.format == Format::Json {
            out(&json::plan(plan));
            return;
        }
        if self.quiet {
            return;
        }
        for l in text::plan(env, plan, self.verbose) {
            out(&l);
        }
    }

    pub fn up_summary(&self, r: &UpReport) {
        match self.format {
            Format::Json => out(&json::up_summary(r)),
            Format::Text if self.quiet => {}
            Format::Text => out(&text::up_summary(r)),
        }
    }

    pub fn down_summary(&self, env: &str, r: &DownReport) {
        match self.format {
            Format::Json => out(&json::down_summary(r)),
            Format::Text if self.quiet => {}
            Format::Text => out(&text::down_summary(env, r)),
        }
    }

    pub fn status(&self, s: &StatusReport) {
        if self.format == Format::Json {
            out(&json::status(s));
            return;
        }
        for l in text::status(s) {
            out(&l);
        }
    }

    /// `continuum enroll bundle`.
    pub fn enroll_bundle(&self, r: &crate::ops::enroll::BundleReport) {
        match self.format {
            Format::Json => out(&enroll::bundle_json(r)),
            Format::Text if self.quiet => {}
            Format::Text => {
                for l in enroll::bundle_text(r) {
                    out(&l);
                }
            }
        }
    }

    /// `continuum enroll revoke`.
    pub fn enroll_revoke(&self, r: &crate::ops::enroll::RevokeReport) {
        match self.format {
            Format::Json => out(&enroll::revoke_json(r)),
            Format::Text if self.quiet => {}
            Format::Text => out(&enroll::revoke_text(r)),
        }
    }

    /// `continuum enroll list`.
    pub fn pools(&self, rows: &[crate::ops::enroll::PoolRow]) {
        match self.format {
            Format::Json => out(&enroll::pools_json(rows)),
            Format::Text => out(&enroll::pools_text(rows)),
        }
    }

    /// A progress observer for `up`/`down`.
    pub fn reporter(&self) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        Reporter {
            format: self.format,
            quiet: self.quiet,
            bars: (tty && self.format == Format::Text && !self.quiet).then(progress::Bars::new),
        }
    }

    /// `continuum endpoints list`.
    pub fn endpoints(&self, list: &[crate::files::endpoints::Endpoint]) {
        match self.format {
            Format::Json => out(&json::endpoints(list)),
            Format::Text => out(&text::endpoints(list)),
        }
    }

    /// `continuum endpoints show NAME [--reveal]`: secrets only when `creds` is given.
    pub fn endpoint(
        &self,
        e: &crate::files::endpoints::Endpoint,
        creds: Option<&crate::state::Credentials>,
    ) {
        if self.format == Format::Json {
            out(&json::endpoint(e, creds));
            return;
        }
        for l in text::endpoint(e, creds) {
            out(&l);
        }
    }

    /// `continuum fn list --cluster C`.
    pub fn services(&self, cluster: &str, list: &[serde_json::Value]) {
        match self.format {
            Format::Json => out(&json::services(list)),
            Format::Text => out(&text::services(cluster, list)),
        }
    }

    /// Results of `fn copy|move|apply|federate`.
    pub fn written(&self, verb: &str, w: &[crate::oscar::functions::Written]) {
        if self.format == Format::Json {
            out(&json::written(verb, w));
            return;
        }
        if self.quiet {
            return;
        }
        for l in text::written(verb, w) {
            out(&l);
        }
    }

    /// `continuum state list`.
    pub fn state_list(&self, l: &crate::ops::statecmd::Listing) {
        match self.format {
            Format::Json => out(&state::list_json(l)),
            Format::Text => state::list_text(l).iter().for_each(|x| out(x)),
        }
    }

    /// `continuum state show ENV` (no secrets: the state comes without them).
    pub fn state_show(&self, s: &crate::ops::statecmd::Shown) {
        match self.format {
            Format::Json => out(&state::show_json(s)),
            Format::Text => state::show_text(s).iter().for_each(|x| out(x)),
        }
    }

    /// `continuum state unlock ENV`.
    pub fn state_holder(&self, h: &crate::statestore::Holder) {
        match self.format {
            Format::Json => out(&state::holder_json(h)),
            Format::Text => out(&state::holder_text(h)),
        }
    }

    /// `continuum state migrate`.
    pub fn migrated(&self, m: &crate::ops::statecmd::Migrated) {
        match self.format {
            Format::Json => out(&state::migrated_json(m)),
            Format::Text if self.quiet => {}
            Format::Text => out(&state::migrated_text(m)),
        }
    }

    /// A one-line confirmation (text) or event (JSON).
    pub fn done(&self, message: &str) {
        match self.format {
            Format::Json => out(&json::done(message)),
            Format::Text if !self.quiet => out(message),
            Format::Text => {}
        }
    }
}

/// Ask a yes/no question on the terminal.
pub fn confirm(question: &str) -> bool {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{question} Only 'yes' is accepted: ");
    let _ = e.flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

/// Renders progress events: a JSON line each, or on a terminal a progress bar per
/// resource (one aggregate bar for a large run), or else a plain line each on stderr.
pub struct Reporter {
    format: Format,
    quiet: bool,
    bars: Option<progress::Bars>,
}

impl Reporter {
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            bars.finish();
        }
    }
}

impl Observer for Reporter {
    fn event(&self, event: Event) {
        if self.format == Format::Json {
            out(&json::event(&event));
            return;
        }
        if let Some(bars) = &self.bars
            && bars.show(&event)
        {
            return;
        }
        if let Some(line) = text::event(&event, self.quiet) {
            err(&line);
        }
    }

    /// A large run gets one aggregate bar.
    fn expect(&self, steps: usize) {
        if let Some(bars) = &self.bars {
            bars.expect(steps);
        }
    }
}
