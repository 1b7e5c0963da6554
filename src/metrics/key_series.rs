//! The per-key series of `/metrics`, kept and rendered by keyrelay itself.
//!
//! 1,000 keys make ~5,000 per-key series. The Prometheus exporter rebuilds,
//! sanitises and hashes every series' labels on each scrape (~2.5 µs a series
//! on the 2-core bench VM), which took a loaded 1,000-key scrape to 8–17 ms.
//! Here a key's label text is built once and its values are atomics, so a
//! scrape only writes lines. Every other metric stays with the `metrics`
//! recorder. `/metrics` is the recorder's text followed by this table's. The
//! families differ, so each family's lines stay together, as the text format
//! requires.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::{JOBS_IN_FLIGHT, KEY_QUOTA_USED, KEY_STATE, TOKENS_TOTAL, UPSTREAM_REQUESTS_TOTAL};
use crate::keys::KeyState;
use crate::provider::OutcomeClass;

/// The state every key exports, so each key has a series whatever its history.
const ALWAYS_EXPORTED_STATE: &str = "active";
const TOKEN_DIRECTIONS: [&str; 2] = ["input", "output"];

/// Which declared limit a `keyrelay_key_quota_used_ratio` value is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaWindow {
    /// rpm and tpm.
    Minute,
    /// rpd and tpd.
    Day,
}

impl QuotaWindow {
    const LABELS: [&'static str; 2] = ["minute", "day"];
}

/// One series' value, absent from the scrape until first written.
#[derive(Default)]
struct Cell {
    bits: AtomicU64,
    present: AtomicBool,
}

impl Cell {
    fn add(&self, n: u64) {
        self.bits.fetch_add(n, Relaxed);
        self.mark();
    }

    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Relaxed);
        self.mark();
    }

    /// Read before writing: the flag's cache line stays shared once set.
    fn mark(&self) {
        if !self.present.load(Relaxed) {
            self.present.store(true, Relaxed);
        }
    }

    fn is_present(&self) -> bool {
        self.present.load(Relaxed)
    }

    fn count(&self) -> Option<u64> {
        self.is_present().then(|| self.bits.load(Relaxed))
    }

    fn gauge(&self) -> Option<f64> {
        self.is_present()
            .then(|| f64::from_bits(self.bits.load(Relaxed)))
    }
}

/// The series of one key. A series appears once it has something to say, so
/// 1,000 idle keys do not make a large page.
pub struct KeySeries {
    /// `pool="…",key="…"`, escaped once.
    labels: String,
    /// `keyrelay_key_state`, in [`KeyState::LABELS`] order.
    state: [Cell; 4],
    /// `keyrelay_upstream_requests_total`, in [`OutcomeClass::ALL`] order.
    upstream: [Cell; OutcomeClass::ALL.len()],
    /// `keyrelay_tokens_total`: input, output.
    tokens: [Cell; 2],
    in_flight: Cell,
    /// `keyrelay_key_quota_used_ratio`: minute, day.
    quota_used: [Cell; 2],
}

impl KeySeries {
    fn new(pool: &str, key: &str) -> KeySeries {
        KeySeries {
            labels: format!(
                "pool=\"{}\",key=\"{}\"",
                escape_label_value(pool),
                escape_label_value(key)
            ),
            state: Default::default(),
            upstream: Default::default(),
            tokens: Default::default(),
            in_flight: Cell::default(),
            quota_used: Default::default(),
        }
    }

    /// Export `current` (one of [`KeyState::LABELS`]) as the key's state: 1 for
    /// it, 0 for every state already exported. `active` is always exported;
    /// another state from the first time the key enters it. A key never parked
    /// costs one line instead of four, and `{state="disabled"} == 1` and
    /// `count by (pool, key)` still see every key.
    pub fn state(&self, current: &str) {
        for (cell, label) in self.state.iter().zip(KeyState::LABELS) {
            let on = label == current;
            if on || label == ALWAYS_EXPORTED_STATE || cell.is_present() {
                cell.set(if on { 1.0 } else { 0.0 });
            }
        }
    }

    /// One provider call finished with `class`.
    pub fn upstream(&self, class: OutcomeClass) {
        // `OutcomeClass::ALL` is in declaration order (tested in keys::tally).
        self.upstream[class as usize].add(1);
    }

    /// Tokens reported for one call.
    pub fn tokens(&self, input: u64, output: u64) {
        self.tokens[0].add(input);
        self.tokens[1].add(output);
    }

    pub fn in_flight(&self, n: usize) {
        self.in_flight.set(n as f64);
    }

    /// Share of the key's declared limit used in `window`.
    pub fn quota_used(&self, window: QuotaWindow, share: f64) {
        self.quota_used[window as usize].set(share);
    }
}

/// Every key's series, by pool and key name.
#[derive(Default)]
pub struct KeySeriesTable(Mutex<BTreeMap<(String, String), Arc<KeySeries>>>);

/// The process-wide table `/metrics` renders (like the recorder, shared by every App).
pub fn key_series_table() -> &'static KeySeriesTable {
    static TABLE: OnceLock<KeySeriesTable> = OnceLock::new();
    TABLE.get_or_init(KeySeriesTable::default)
}

/// The series of `pool`/`key` in the process-wide table.
pub fn key_series(pool: &str, key: &str) -> Arc<KeySeries> {
    key_series_table().key(pool, key)
}

impl KeySeriesTable {
    /// The series of `pool`/`key`, created on first use. Two Apps of one
    /// process with the same key share its series, as they would share a
    /// recorder's.
    pub fn key(&self, pool: &str, key: &str) -> Arc<KeySeries> {
        let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        keys.entry((pool.to_owned(), key.to_owned()))
            .or_insert_with(|| Arc::new(KeySeries::new(pool, key)))
            .clone()
    }

    /// Append the per-key families in the Prometheus text format.
    pub fn render_into(&self, out: &mut String) {
        let keys: Vec<Arc<KeySeries>> = {
            let keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            keys.values().cloned().collect()
        };
        let family =
            |out: &mut String, name, kind, help, lines: &dyn Fn(&mut String, &KeySeries)| {
                let start = out.len();
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                let header = out.len();
                for key in &keys {
                    lines(out, key);
                }
                if out.len() == header {
                    out.truncate(start);
                } else {
                    out.push('\n');
                }
            };
        family(out, KEY_STATE, "gauge", KEY_STATE_HELP, &|out, k| {
            for (cell, state) in k.state.iter().zip(KeyState::LABELS) {
                gauge_line(out, KEY_STATE, &k.labels, Some(("state", state)), cell);
            }
        });
        family(
            out,
            JOBS_IN_FLIGHT,
            "gauge",
            JOBS_IN_FLIGHT_HELP,
            &|out, k| {
                gauge_line(out, JOBS_IN_FLIGHT, &k.labels, None, &k.in_flight);
            },
        );
        family(
            out,
            KEY_QUOTA_USED,
            "gauge",
            KEY_QUOTA_USED_HELP,
            &|out, k| {
                for (cell, window) in k.quota_used.iter().zip(QuotaWindow::LABELS) {
                    gauge_line(
                        out,
                        KEY_QUOTA_USED,
                        &k.labels,
                        Some(("window", window)),
                        cell,
                    );
                }
            },
        );
        family(
            out,
            UPSTREAM_REQUESTS_TOTAL,
            "counter",
            UPSTREAM_REQUESTS_HELP,
            &|out, k| {
                for (cell, class) in k.upstream.iter().zip(OutcomeClass::ALL) {
                    let label = Some(("outcome", class.as_str()));
                    counter_line(out, UPSTREAM_REQUESTS_TOTAL, &k.labels, label, cell);
                }
            },
        );
        family(out, TOKENS_TOTAL, "counter", TOKENS_HELP, &|out, k| {
            for (cell, direction) in k.tokens.iter().zip(TOKEN_DIRECTIONS) {
                counter_line(
                    out,
                    TOKENS_TOTAL,
                    &k.labels,
                    Some(("direction", direction)),
                    cell,
                );
            }
        });
    }
}

const KEY_STATE_HELP: &str =
    "1 for the key's current state (active, cooling_down, exhausted, disabled), by pool and key.";
const JOBS_IN_FLIGHT_HELP: &str = "Jobs being processed, by pool and key.";
const KEY_QUOTA_USED_HELP: &str =
    "Share of a declared limit used, by pool, key and window (minute: rpm/tpm, day: rpd/tpd).";
const UPSTREAM_REQUESTS_HELP: &str = "Provider calls, by pool, key and outcome class.";
const TOKENS_HELP: &str = "Tokens reported by providers, by pool, key and direction.";

fn series_start(out: &mut String, name: &str, labels: &str, extra: Option<(&str, &str)>) {
    out.push_str(name);
    out.push('{');
    out.push_str(labels);
    if let Some((label, value)) = extra {
        // Extra label values are fixed identifiers: nothing to escape.
        let _ = write!(out, ",{label}=\"{value}\"");
    }
    out.push_str("} ");
}

fn gauge_line(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    cell: &Cell,
) {
    if let Some(value) = cell.gauge() {
        series_start(out, name, labels, extra);
        match value {
            v if v == f64::INFINITY => out.push_str("+Inf"),
            v if v == f64::NEG_INFINITY => out.push_str("-Inf"),
            v => {
                let _ = write!(out, "{v}");
            }
        }
        out.push('\n');
    }
}

fn counter_line(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    cell: &Cell,
) {
    if let Some(value) = cell.count() {
        series_start(out, name, labels, extra);
        let _ = writeln!(out, "{value}");
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label_value(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(table: &KeySeriesTable) -> String {
        let mut out = String::new();
        table.render_into(&mut out);
        out
    }

    fn lines_of(table: &KeySeriesTable, name: &str) -> Vec<String> {
        rendered(table)
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn an_untouched_key_renders_nothing() {
        let table = KeySeriesTable::default();
        table.key("p", "k");
        assert_eq!(rendered(&table), "");
    }

    #[test]
    fn key_state_exports_active_always_and_other_states_once_entered() {
        let table = KeySeriesTable::default();
        let key = table.key("p", "k");
        key.state("active");
        assert_eq!(
            lines_of(&table, KEY_STATE),
            [r#"keyrelay_key_state{pool="p",key="k",state="active"} 1"#]
        );
        key.state("cooling_down");
        key.state("active");
        assert_eq!(
            lines_of(&table, KEY_STATE),
            [
                r#"keyrelay_key_state{pool="p",key="k",state="active"} 1"#,
                r#"keyrelay_key_state{pool="p",key="k",state="cooling_down"} 0"#,
            ]
        );
        key.state("disabled");
        assert_eq!(
            lines_of(&table, KEY_STATE),
            [
                r#"keyrelay_key_state{pool="p",key="k",state="active"} 0"#,
                r#"keyrelay_key_state{pool="p",key="k",state="cooling_down"} 0"#,
                r#"keyrelay_key_state{pool="p",key="k",state="disabled"} 1"#,
            ]
        );
    }

    #[test]
    fn families_have_one_header_and_every_touched_series() {
        let table = KeySeriesTable::default();
        let a = table.key("p", "a");
        let b = table.key("p", "b");
        a.upstream(OutcomeClass::Success);
        a.upstream(OutcomeClass::Success);
        b.upstream(OutcomeClass::RateLimited);
        a.tokens(10, 0);
        b.in_flight(3);
        b.quota_used(QuotaWindow::Day, 0.25);
        let text = rendered(&table);
        assert_eq!(
            text,
            "# HELP keyrelay_jobs_in_flight Jobs being processed, by pool and key.\n\
             # TYPE keyrelay_jobs_in_flight gauge\n\
             keyrelay_jobs_in_flight{pool=\"p\",key=\"b\"} 3\n\n\
             # HELP keyrelay_key_quota_used_ratio Share of a declared limit used, by pool, key and window (minute: rpm/tpm, day: rpd/tpd).\n\
             # TYPE keyrelay_key_quota_used_ratio gauge\n\
             keyrelay_key_quota_used_ratio{pool=\"p\",key=\"b\",window=\"day\"} 0.25\n\n\
             # HELP keyrelay_upstream_requests_total Provider calls, by pool, key and outcome class.\n\
             # TYPE keyrelay_upstream_requests_total counter\n\
             keyrelay_upstream_requests_total{pool=\"p\",key=\"a\",outcome=\"success\"} 2\n\
             keyrelay_upstream_requests_total{pool=\"p\",key=\"b\",outcome=\"rate_limited\"} 1\n\n\
             # HELP keyrelay_tokens_total Tokens reported by providers, by pool, key and direction.\n\
             # TYPE keyrelay_tokens_total counter\n\
             keyrelay_tokens_total{pool=\"p\",key=\"a\",direction=\"input\"} 10\n\
             keyrelay_tokens_total{pool=\"p\",key=\"a\",direction=\"output\"} 0\n\n"
        );
    }

    #[test]
    fn the_same_key_shares_its_series_and_label_values_are_escaped() {
        let table = KeySeriesTable::default();
        table.key("p", "k").upstream(OutcomeClass::Success);
        table.key("p", "k").upstream(OutcomeClass::Success);
        table.key("p\"q", "a\\b\nc").in_flight(1);
        assert_eq!(
            lines_of(&table, UPSTREAM_REQUESTS_TOTAL),
            [r#"keyrelay_upstream_requests_total{pool="p",key="k",outcome="success"} 2"#]
        );
        assert_eq!(
            lines_of(&table, JOBS_IN_FLIGHT),
            [r#"keyrelay_jobs_in_flight{pool="p\"q",key="a\\b\nc"} 1"#]
        );
    }
}
