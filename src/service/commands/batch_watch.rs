//! `keyrelay batch watch ID` and `keyrelay batch cancel ID`, through the
//! admin API: a batch someone else enqueued, followed to its end with a
//! progress bar, its rate and ETA (and the limit that binds it).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::admin_client::{AdminArgs, AdminClient, encode};

/// Follow batch `id` until every job is answered (or it is cancelled).
pub async fn watch(args: &AdminArgs, id: &str, every: Duration) -> anyhow::Result<Value> {
    let client = AdminClient::new(args)?;
    let path = format!("/v1/batches/{}", encode(id));
    let bar = bar();
    loop {
        let batch = client.get(&path).await?;
        let total = batch["total"].as_u64().unwrap_or(0);
        let done = batch["succeeded"].as_u64().unwrap_or(0)
            + batch["failed"]
                .as_object()
                .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
        bar.set_length(total);
        bar.set_position(done);
        bar.set_message(describe(&batch));
        let left = batch["queued"].as_u64().unwrap_or(0) + batch["running"].as_u64().unwrap_or(0);
        if (total > 0 && left == 0) || !batch["cancelled_at"].is_null() {
            bar.finish_and_clear();
            return Ok(batch);
        }
        tokio::time::sleep(every).await;
    }
}

/// Cancel batch `id` on every instance.
pub async fn cancel(args: &AdminArgs, id: &str) -> anyhow::Result<Value> {
    let client = AdminClient::new(args)?;
    client
        .post(&format!("/v1/batches/{}/cancel", encode(id)), None)
        .await
        .map_err(Into::into)
}

/// `12.5 jobs/s, ETA 2026-12-07T08:10:00Z (rpd of 3 keys; next reset ...)`.
pub fn describe(batch: &Value) -> String {
    let rate = batch["rate_per_s"]
        .as_f64()
        .map_or("rate unknown".to_owned(), |r| format!("{r:.2} jobs/s"));
    let eta = match (
        batch["eta"]["at"].as_str(),
        batch["eta"]["limited_by"].as_str(),
    ) {
        (Some(at), Some(why)) => format!(", ETA {at} ({why})"),
        _ => String::new(),
    };
    let cost = batch["cost_usd"].as_f64().unwrap_or(0.0);
    format!("{rate}{eta}, ${cost:.4} so far")
}

fn bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} answered  {msg}") {
        bar.set_style(style);
    }
    bar
}
