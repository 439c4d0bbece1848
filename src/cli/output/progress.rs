//! Progress bars on a terminal. A run of a few steps shows one spinner per resource,
//! its message following the resource's events, finished with the outcome. A run of
//! many steps (a fleet of hundreds of nodes) shows one aggregate bar instead (steps
//! settled of all, how many run, how many failed) and a line per failure above it, so
//! the screen stays readable whatever the fleet's size.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::Event;

/// Above this many steps, one aggregate bar replaces the spinners.
pub(super) const AGGREGATE_ABOVE: usize = 24;

/// The spinners of one run, by resource id, or the aggregate bar.
pub(super) struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    total: Mutex<Option<Aggregate>>,
}

/// The aggregate bar and its counts.
struct Aggregate {
    bar: ProgressBar,
    running: usize,
    failed: usize,
    skipped: usize,
}

impl Aggregate {
    fn redraw(&self) {
        let mut msg = format!("{} running", self.running);
        if self.failed > 0 {
            msg.push_str(&format!(" · {} failed", self.failed));
        }
        if self.skipped > 0 {
            msg.push_str(&format!(" · {} skipped", self.skipped));
        }
        self.bar.set_message(msg);
    }
}

impl Bars {
    pub(super) fn new() -> Self {
        Self::drawn_to(ProgressDrawTarget::stderr())
    }

    fn drawn_to(target: ProgressDrawTarget) -> Self {
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            total: Mutex::new(None),
        }
    }

    /// The run will have `steps` steps: above `AGGREGATE_ABOVE`, one bar shows them.
    pub(super) fn expect(&self, steps: usize) {
        if steps <= AGGREGATE_ABOVE {
            return;
        }
        let bar = self.multi.add(ProgressBar::new(steps as u64));
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} steps · {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let agg = Aggregate {
            bar,
            running: 0,
            failed: 0,
            skipped: 0,
        };
        agg.redraw();
        if let Ok(mut t) = self.total.lock() {
            *t = Some(agg);
        }
    }

    /// Clear every spinner still running; leave the aggregate bar's last state.
    pub(super) fn finish(&self) {
        if let Ok(mut t) = self.total.lock()
            && let Some(agg) = t.take()
        {
            agg.redraw();
            agg.bar.finish();
        }
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
        if let Ok(mut t) = self.total.lock()
            && let Some(agg) = t.as_mut()
        {
            return self.count(agg, event);
        }
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

    /// Count `event` on the aggregate bar; a failure also gets a line of its own.
    fn count(&self, agg: &mut Aggregate, event: &Event) -> bool {
        match event {
            Event::Started { .. } => agg.running += 1,
            Event::Progress { .. } => {}
            Event::Finished { .. } => {
                agg.running = agg.running.saturating_sub(1);
                agg.bar.inc(1);
            }
            Event::Failed { id, error } => {
                agg.running = agg.running.saturating_sub(1);
                agg.failed += 1;
                agg.bar.inc(1);
                let _ = self
                    .multi
                    .println(format!("✗ {id}: {}", error.lines().next().unwrap_or("")));
            }
            Event::Skipped { .. } => {
                agg.skipped += 1;
                agg.bar.inc(1);
            }
            Event::Cancelled { .. } => agg.bar.inc(1),
            Event::Warning { .. } => return false,
        }
        agg.redraw();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Action;

    fn started(id: &str) -> Event {
        Event::Started {
            id: id.into(),
            action: Action::Create,
        }
    }

    #[test]
    fn a_large_run_shows_one_bar_with_counts_and_a_small_one_a_spinner_each() {
        let bars = Bars::drawn_to(ProgressDrawTarget::hidden());
        bars.expect(AGGREGATE_ABOVE + 176);
        for i in 0..3 {
            assert!(bars.show(&started(&format!("k3s-agent/a{i}"))));
        }
        assert!(bars.show(&Event::Finished {
            id: "k3s-agent/a0".into(),
            changed: true,
            summary: "installed".into(),
        }));
        assert!(bars.show(&Event::Failed {
            id: "k3s-agent/a1".into(),
            error: "cannot connect\nmore".into(),
        }));
        assert!(bars.show(&Event::Skipped {
            id: "gpu-runtime/a1".into(),
            because: "k3s-agent/a1 failed".into(),
        }));
        // Warnings are printed by the caller, as lines.
        assert!(!bars.show(&Event::Warning {
            message: "w".into()
        }));
        {
            let t = bars.total.lock().expect("lock");
            let agg = t.as_ref().expect("aggregate");
            assert_eq!(agg.bar.position(), 3);
            assert_eq!(agg.bar.length(), Some(200));
            assert_eq!(agg.bar.message(), "1 running · 1 failed · 1 skipped");
        }
        // No spinner per resource.
        assert!(bars.bars.lock().expect("lock").is_empty());
        bars.finish();

        let few = Bars::drawn_to(ProgressDrawTarget::hidden());
        few.expect(3);
        assert!(few.show(&started("k3s-server/s")));
        assert!(few.total.lock().expect("lock").is_none());
        assert_eq!(few.bars.lock().expect("lock").len(), 1);
        few.finish();
    }
}
