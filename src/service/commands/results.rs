//! `keyrelay results`: export stored results as JSONL (one result per line,
//! newest first), filtered by time, user and status, paging through the admin API.

use std::io::Write;

use super::admin_client::{AdminArgs, AdminClient, encode};

/// Filters of an export.
#[derive(Debug, Clone, clap::Args)]
pub struct ResultsFilter {
    /// Completed at or after: RFC 3339 or a duration ago (30m, 6h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Completed at or before: RFC 3339 or a duration ago.
    #[arg(long)]
    pub until: Option<String>,
    /// Only this user's jobs.
    #[arg(long)]
    pub user: Option<String>,
    /// Only this pool's jobs.
    #[arg(long)]
    pub pool: Option<String>,
    /// Only this batch's jobs.
    #[arg(long)]
    pub batch: Option<String>,
    /// succeeded, failed or any.
    #[arg(long)]
    pub status: Option<String>,
    /// Stop after this many results.
    #[arg(long)]
    pub max: Option<usize>,
}

const PAGE: usize = 500;

/// Write every matching result to standard output; returns how many.
pub async fn run(args: &AdminArgs, filter: &ResultsFilter) -> anyhow::Result<usize> {
    let client = AdminClient::new(args)?;
    let mut base = format!("/v1/jobs?limit={PAGE}");
    for (name, value) in [
        ("since", &filter.since),
        ("until", &filter.until),
        ("user", &filter.user),
        ("pool", &filter.pool),
        ("batch", &filter.batch),
        ("status", &filter.status),
    ] {
        if let Some(v) = value {
            base.push_str(&format!("&{name}={}", encode(v)));
        }
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut written = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}&cursor={}", encode(c)),
            None => base.clone(),
        };
        let page = client.get(&path).await?;
        for job in page["jobs"].as_array().into_iter().flatten() {
            if filter.max.is_some_and(|m| written >= m) {
                return Ok(written);
            }
            writeln!(out, "{job}")?;
            written += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(written),
        }
    }
}
