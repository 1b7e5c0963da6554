//! The per-key series of `/metrics`, kept and rendered by keyrelay itself.
//!
//! 1,000 keys make ~5,000 per-key series. The Prometheus exporter rebuilds,
//! sanitises and hashes every series' labels on each scrape (~2.5 µs a series
//! on the 2-core bench VM), which took a loaded 1,000-key scrape to 8–17 ms.
//! Here a key's label text is built once and its values are atomics, so a
//! scrape only writes lines. Every other metric stays with the `metrics`
//! recorder. `/metrics` is the recorder's text followed by this table's. The
//! families differ, so each family's lines stay together, as the text format
//! requires. Settings of the exporter's builder (global labels, idle timeouts)
//! do not reach these families.

use std::collections::BTreeMap;
use std::fmt::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::names::{
    JOBS_IN_FLIGHT, KEY_QUOTA_USED, KEY_STATE, TOKENS_TOTAL, UPSTREAM_REQUESTS_TOTAL,
};
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
    const ALL: [QuotaWindow; 2] = [QuotaWindow::Minute, QuotaWindow::Day];

    fn label(self) -> &'static str {
        match self {
            QuotaWindow::Minute => "minute",
            QuotaWindow::Day => "day",
        }
    }

    fn index(self) -> usize {
        match self {
            QuotaWindow::Minute => 0,
            QuotaWindow::Day => 1,
        }
    }
}

/// One series' value, absent from the scrape until first written: an integer
/// (counters, `jobs_in_flight`) or an f64's bits (ratios and states).
#[derive(Default)]
struct Slot {
    bits: AtomicU64,
    present: AtomicBool,
}

impl Slot {
    fn add(&self, n: u64) {
        self.bits.fetch_add(n, Ordering::Relaxed);
        self.mark();
    }

    fn sub(&self, n: u64) {
        self.bits.fetch_sub(n, Ordering::Relaxed);
        self.mark();
    }

    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        self.mark();
    }

    /// Release, paired with `is_present`'s Acquire: a scrape that sees the
    /// series also sees the value that made it appear.
    fn mark(&self) {
        if !self.present.load(Ordering::Relaxed) {
            self.present.store(true, Ordering::Release);
        }
    }

    fn is_present(&self) -> bool {
        self.present.load(Ordering::Acquire)
    }

    fn integer(&self) -> Option<Value> {
        self.is_present()
            .then(|| Value::Integer(self.bits.load(Ordering::Relaxed)))
    }

    fn float(&self) -> Option<Value> {
        self.is_present()
            .then(|| Value::Float(f64::from_bits(self.bits.load(Ordering::Relaxed))))
    }
}

/// A sample value as the text format writes it.
enum Value {
    Integer(u64),
    Float(f64),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(n) => write!(f, "{n}"),
            Value::Float(v) if *v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if *v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// The series of one key. Its counters and its jobs in flight exist from the
/// start at 0 (a rate over a counter that appears at its first event misses
/// that event); its state and quota ratios once there is one to say.
pub struct KeySeries {
    /// `pool="…",key="…"`, escaped once.
    labels: String,
    /// `keyrelay_key_state`, in [`KeyState::LABELS`] order.
    state: [Slot; KeyState::LABELS.len()],
    /// `keyrelay_upstream_requests_total`, in [`OutcomeClass::ALL`] order.
    upstream: [Slot; OutcomeClass::ALL.len()],
    /// `keyrelay_tokens_total`, in [`TOKEN_DIRECTIONS`] order.
    tokens: [Slot; TOKEN_DIRECTIONS.len()],
    /// Counted up and down (not set from a count read earlier), so two jobs
    /// ending together cannot leave a stale value behind.
    in_flight: Slot,
    /// `keyrelay_key_quota_used_ratio`, in [`QuotaWindow::ALL`] order.
    quota_used: [Slot; QuotaWindow::ALL.len()],
}

impl KeySeries {
    fn new(pool: &str, key: &str) -> KeySeries {
        let series = KeySeries {
            labels: format!(
                "pool=\"{}\",key=\"{}\"",
                escape_label_value(pool),
                escape_label_value(key)
            ),
            state: Default::default(),
            upstream: Default::default(),
            tokens: Default::default(),
            in_flight: Slot::default(),
            quota_used: Default::default(),
        };
        // Counters exist from the start at 0 (a rate over a series that
        // appears at its first event misses that event).
        for slot in series.upstream.iter().chain(&series.tokens) {
            slot.add(0);
        }
        series.in_flight.add(0);
        series
    }

    /// Export `current` (one of [`KeyState::LABELS`]) as the key's state: 1 for
    /// it, 0 for every state already exported. `active` is always exported;
    /// another state from the first time the key enters it. A key never parked
    /// costs one line instead of four, and `{state="disabled"} == 1` and
    /// `count by (pool, key)` still see every key.
    pub fn state(&self, current: &str) {
        for (slot, label) in self.state.iter().zip(KeyState::LABELS) {
            let on = label == current;
            if on || label == ALWAYS_EXPORTED_STATE || slot.is_present() {
                slot.set(if on { 1.0 } else { 0.0 });
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
        for (slot, n) in self.tokens.iter().zip([input, output]) {
            slot.add(n);
        }
    }

    /// A job started on this key.
    pub fn job_started(&self) {
        self.in_flight.add(1);
    }

    /// A job counted by [`job_started`](Self::job_started) ended.
    pub fn job_ended(&self) {
        self.in_flight.sub(1);
    }

    /// Share of the key's declared limit used in `window`.
    pub fn quota_used(&self, window: QuotaWindow, share: f64) {
        self.quota_used[window.index()].set(share);
    }
}

/// The five per-key families, in the order they are rendered.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    State,
    InFlight,
    QuotaUsed,
    Upstream,
    Tokens,
}

impl Family {
    const ALL: [Family; 5] = [
        Family::State,
        Family::InFlight,
        Family::QuotaUsed,
        Family::Upstream,
        Family::Tokens,
    ];

    fn name(self) -> &'static str {
        match self {
            Family::State => KEY_STATE,
            Family::InFlight => JOBS_IN_FLIGHT,
            Family::QuotaUsed => KEY_QUOTA_USED,
            Family::Upstream => UPSTREAM_REQUESTS_TOTAL,
            Family::Tokens => TOKENS_TOTAL,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Family::State | Family::InFlight | Family::QuotaUsed => "gauge",
            Family::Upstream | Family::Tokens => "counter",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Family::State => {
                "1 for the key's current state (active, cooling_down, exhausted, disabled), by pool and key."
            }
            Family::InFlight => "Jobs being processed, by pool and key.",
            Family::QuotaUsed => {
                "Share of a declared limit used, by pool, key and window (minute: rpm/tpm, day: rpd/tpd)."
            }
            Family::Upstream => "Provider calls, by pool, key and outcome class.",
            Family::Tokens => "Tokens reported by providers, by pool, key and direction.",
        }
    }

    /// This family's lines for one key: one per series present.
    fn write_lines(self, out: &mut String, key: &KeySeries) {
        let mut line = |extra: Option<(&str, &str)>, value: Option<Value>| {
            if let Some(value) = value {
                write_sample(out, self.name(), &key.labels, extra, value);
            }
        };
        match self {
            Family::State => {
                for (slot, state) in key.state.iter().zip(KeyState::LABELS) {
                    line(Some(("state", state)), slot.float());
                }
            }
            Family::InFlight => line(None, key.in_flight.integer()),
            Family::QuotaUsed => {
                for (slot, window) in key.quota_used.iter().zip(QuotaWindow::ALL) {
                    line(Some(("window", window.label())), slot.float());
                }
            }
            Family::Upstream => {
                for (slot, class) in key.upstream.iter().zip(OutcomeClass::ALL) {
                    line(Some(("outcome", class.as_str())), slot.integer());
                }
            }
            Family::Tokens => {
                for (slot, direction) in key.tokens.iter().zip(TOKEN_DIRECTIONS) {
                    line(Some(("direction", direction)), slot.integer());
                }
            }
        }
    }
}

/// Every key's series, by pool and key name.
#[derive(Default)]
pub(crate) struct KeySeriesTable(Mutex<BTreeMap<(String, String), Arc<KeySeries>>>);

/// The process-wide table `/metrics` renders (like the recorder, shared by every App).
pub(crate) fn key_series_table() -> &'static KeySeriesTable {
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
    pub(crate) fn key(&self, pool: &str, key: &str) -> Arc<KeySeries> {
        let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        keys.entry((pool.to_owned(), key.to_owned()))
            .or_insert_with(|| Arc::new(KeySeries::new(pool, key)))
            .clone()
    }

    /// Append the per-key families in the Prometheus text format. A family
    /// with no series present is left out, header included.
    pub(crate) fn render_into(&self, out: &mut String) {
        // Registration waits for the copy only, not for the rendering.
        let keys: Vec<Arc<KeySeries>> = {
            let keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            keys.values().cloned().collect()
        };
        for family in Family::ALL {
            let start = out.len();
            let (name, kind, help) = (family.name(), family.kind(), family.help());
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let header_end = out.len();
            for key in &keys {
                family.write_lines(out, key);
            }
            if out.len() == header_end {
                out.truncate(start);
            } else {
                out.push('\n');
            }
        }
    }
}

/// `name{labels,extra="v"} value`: `extra` values are fixed identifiers, so
/// only `labels` (escaped when built) comes from the config.
fn write_sample(
    out: &mut String,
    name: &str,
    labels: &str,
    extra: Option<(&str, &str)>,
    value: Value,
) {
    let _ = match extra {
        Some((label, v)) => writeln!(out, "{name}{{{labels},{label}=\"{v}\"}} {value}"),
        None => writeln!(out, "{name}{{{labels}}} {value}"),
    };
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
    fn an_untouched_key_renders_its_counters_at_zero() {
        let table = KeySeriesTable::default();
        table.key("p", "k");
        let text = rendered(&table);
        assert!(
            text.contains(r#"keyrelay_jobs_in_flight{pool="p",key="k"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keyrelay_upstream_requests_total{pool="p",key="k",outcome="success"} 0"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"keyrelay_tokens_total{pool="p",key="k",direction="output"} 0"#),
            "{text}"
        );
        // A state and a quota ratio only once there is one.
        assert!(
            !text.contains("keyrelay_key_state") && !text.contains("quota_used"),
            "{text}"
        );
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
    fn families_have_one_header_and_every_series() {
        let table = KeySeriesTable::default();
        let a = table.key("p", "a");
        let b = table.key("p", "b");
        a.upstream(OutcomeClass::Success);
        a.upstream(OutcomeClass::Success);
        b.upstream(OutcomeClass::RateLimited);
        a.tokens(10, 0);
        for _ in 0..4 {
            b.job_started();
        }
        b.job_ended();
        b.quota_used(QuotaWindow::Day, 0.25);
        let text = rendered(&table);
        for family in Family::ALL {
            let header = format!("# TYPE {} ", family.name());
            let headers = text.matches(&header).count();
            let expected = usize::from(family != Family::State);
            assert_eq!(headers, expected, "{header}: {text}");
        }
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} in {text}");
        has(r#"keyrelay_jobs_in_flight{pool="p",key="b"} 3"#);
        has(r#"keyrelay_jobs_in_flight{pool="p",key="a"} 0"#);
        has(r#"keyrelay_key_quota_used_ratio{pool="p",key="b",window="day"} 0.25"#);
        has(r#"keyrelay_upstream_requests_total{pool="p",key="a",outcome="success"} 2"#);
        has(r#"keyrelay_upstream_requests_total{pool="p",key="a",outcome="rate_limited"} 0"#);
        has(r#"keyrelay_upstream_requests_total{pool="p",key="b",outcome="rate_limited"} 1"#);
        has(r#"keyrelay_tokens_total{pool="p",key="a",direction="input"} 10"#);
        assert!(
            !text.contains(r#"quota_used_ratio{pool="p",key="a""#),
            "{text}"
        );
    }

    #[test]
    fn the_same_key_shares_its_series_and_label_values_are_escaped() {
        let table = KeySeriesTable::default();
        table.key("p", "k").upstream(OutcomeClass::Success);
        table.key("p", "k").upstream(OutcomeClass::Success);
        table.key("p\"q", "a\\b\nc").job_started();
        let upstream = lines_of(&table, UPSTREAM_REQUESTS_TOTAL);
        assert!(
            upstream.contains(
                &r#"keyrelay_upstream_requests_total{pool="p",key="k",outcome="success"} 2"#
                    .to_owned()
            ),
            "{upstream:?}"
        );
        let in_flight = lines_of(&table, JOBS_IN_FLIGHT);
        assert!(
            in_flight
                .contains(&r#"keyrelay_jobs_in_flight{pool="p\"q",key="a\\b\nc"} 1"#.to_owned()),
            "{in_flight:?}"
        );
    }
}
