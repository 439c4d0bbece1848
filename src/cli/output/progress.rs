//! Progress bars on a terminal: one spinner per resource, its message following the
//! resource's events, finished with the outcome.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::ops::Event;

/// The spinners of one run, by resource id.
pub(super) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    pub(super) fn new() -> Self {
        Bars {
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Clear every spinner still running.
    pub(super) fn finish(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain() {
                if !b.is_finished() {
                    b.finish_and_clear();
                }
            }
        }
    }

    fn bar(&self, id: &str) -> Option<ProgressBar> {
        let mut bars = self.bars.lock().ok()?;
        Some(
            bars.entry(id.to_string())
                .or_insert_with(|| {
                    let b = self.multi.add(ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<32} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_prefix(id.to_string());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }

    /// Show `event` on its resource's spinner; false when no spinner shows it (a
    /// warning), so the caller prints it as a line.
    pub(super) fn show(&self, event: &Event) -> bool {
        let Some(bar) = (match event {
            Event::Started { id, .. }
            | Event::Progress { id, .. }
            | Event::Finished { id, .. }
            | Event::Failed { id, .. }
            | Event::Skipped { id, .. }
            | Event::Cancelled { id } => self.bar(id),
            Event::Warning { .. } => None,
        }) else {
            return false;
        };
        match event {
            Event::Started { action, .. } => bar.set_message(format!("{action:?}").to_lowercase()),
            Event::Progress { message, .. } => bar.set_message(message.clone()),
            Event::Finished { summary, .. } => bar.finish_with_message(format!("✓ {summary}")),
            Event::Failed { error, .. } => {
                bar.finish_with_message(format!("✗ {}", error.lines().next().unwrap_or("")))
            }
            Event::Skipped { because, .. } => {
                bar.finish_with_message(format!("skipped ({because})"))
            }
            Event::Cancelled { .. } => bar.finish_with_message("cancelled"),
            Event::Warning { .. } => {}
        }
        true
    }
}
