//! `keyrelay demo`: the whole product in one command. Starts the bundled mock
//! provider and keyrelay (three Gemini keys, one OpenAI, one Anthropic) against
//! the local RabbitMQ, publishes sample jobs like any producer would, prints each
//! result, and shows the primary Gemini key running out of daily quota mid-run
//! while its jobs move to the next key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use serde_json::json;

use super::mock_process::MockProcess;
use crate::actors::messages::GetKeys;
use crate::amqp::{Broker, Publisher};
use crate::app::App;
use keyrelay_core::config::Config;
use keyrelay_core::job::JobResult;

/// Daily requests the mock grants the primary Gemini key: small, so it runs out.
const PRIMARY_RPD: u32 = 5;

/// One key the mock knows: its pool, label, secret and (for the primary) a daily limit.
struct DemoKey {
    pool: &'static str,
    label: &'static str,
    secret: String,
    rpd: Option<u32>,
}

/// Runs the demo; `mock_bin` is the `keyrelay-mock` binary (None: next to this one).
pub async fn run(amqp_url: &str, jobs: usize, mock_bin: Option<&Path>) -> anyhow::Result<()> {
    let run_id = uuid::Uuid::now_v7().simple().to_string()[24..].to_string();
    let dir = std::env::temp_dir().join(format!("keyrelay-demo-{run_id}"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mock_bin = mock_bin.map_or_else(MockProcess::default_binary, Path::to_path_buf);
    let result = run_in(amqp_url, jobs.max(6), &run_id, &dir, &mock_bin).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    amqp_url: &str,
    jobs: usize,
    run_id: &str,
    dir: &Path,
    mock_bin: &Path,
) -> anyhow::Result<()> {
    let keys = demo_keys(run_id);
    let settings = dir.join("mock-provider.toml");
    std::fs::write(&settings, mock_settings(&keys))
        .with_context(|| format!("cannot write {}", settings.display()))?;
    let mock = MockProcess::start(mock_bin, &settings).await?;
    println!("mock provider listening on {}", mock.base_url());
    let config = match demo_config(amqp_url, run_id, dir, &mock, &keys) {
        Ok(config) => config,
        Err(e) => {
            mock.stop().await;
            return Err(e);
        }
    };
    let app = match App::start(config.clone()).await {
        Ok(app) => app,
        Err(e) => {
            mock.stop().await;
            return Err(anyhow::Error::new(e).context(
                "keyrelay could not start (is RabbitMQ running? `scripts/ensure-rabbitmq.sh` starts it)",
            ));
        }
    };
    println!(
        "keyrelay running; metrics at http://{}/metrics\n",
        app.http_addr()
    );

    let outcome = exchange_jobs(&config, run_id, jobs).await;
    if let Ok(results) = &outcome {
        print_results(results);
        print_keys(&app, &mock).await;
    }
    let stopped = app.shutdown(Duration::from_secs(10)).await;
    mock.stop().await;
    cleanup(&config, run_id).await;
    stopped?;
    outcome.map(|_| ())
}

/// The keys the mock knows, with their limits.
fn demo_keys(run_id: &str) -> Vec<DemoKey> {
    let key = |pool, label, rpd| DemoKey {
        pool,
        label,
        secret: format!("demo-{label}-{run_id}"),
        rpd,
    };
    vec![
        key("gemini", "gemini-primary", Some(PRIMARY_RPD)),
        key("gemini", "gemini-secondary", None),
        key("gemini", "gemini-backup", None),
        key("openai", "openai-main", None),
        key("anthropic", "anthropic-main", None),
    ]
}

/// The mock's settings file (the format of `config/mock-provider.toml`).
fn mock_settings(keys: &[DemoKey]) -> String {
    let mut text = String::from("latency_ms = 40\n");
    for k in keys {
        text += &format!(
            "\n[[keys]]\nlabel = \"{}\"\nsecret = \"{}\"\n",
            k.label, k.secret
        );
        if let Some(rpd) = k.rpd {
            text += &format!("rpd = {rpd}\n");
        }
    }
    text
}

fn demo_config(
    amqp_url: &str,
    run_id: &str,
    dir: &Path,
    mock: &MockProcess,
    keys: &[DemoKey],
) -> anyhow::Result<Config> {
    let key_file = |key: &DemoKey| -> anyhow::Result<PathBuf> {
        let path = dir.join(key.label);
        std::fs::write(&path, &key.secret)?;
        restrict(&path)?;
        Ok(path)
    };
    let mut pools = String::new();
    let pool_defs = [
        (
            "gemini",
            "gemini",
            mock.base_url().to_owned(),
            "gemini-2.0-flash",
        ),
        ("openai", "openai", mock.openai_base_url(), "gpt-4o-mini"),
        (
            "anthropic",
            "anthropic",
            mock.base_url().to_owned(),
            "claude-3-5-haiku-latest",
        ),
    ];
    for (pool, provider, base_url, model) in pool_defs {
        pools += &format!(
            "[[pools]]\nname = \"{pool}\"\nprovider = \"{provider}\"\nbase_url = \"{base_url}\"\ndefault_model = \"{model}\"\n"
        );
        for (priority, key) in keys.iter().filter(|k| k.pool == pool).enumerate() {
            let name = key
                .label
                .trim_start_matches(&format!("{pool}-"))
                .to_string();
            pools += &format!(
                "  [[pools.keys]]\n  name = \"{name}\"\n  api_key_file = \"{}\"\n  priority = {}\n  concurrency = 2\n",
                key_file(key)?.display(),
                priority + 1
            );
        }
    }
    let text = format!(
        r#"
[broker]
url = "{amqp_url}"
queue_prefix = "keyrelay.demo.{run_id}"

[store]
path = "{store}"

[metrics]
listen = "127.0.0.1:0"

[jobs]
results_queue = "keyrelay.demo.{run_id}.results"
dead_letter_queue = "keyrelay.demo.{run_id}.dead"

[templates.fitness_analysis]
system = "You are a fitness coach. Answer with JSON only."
text = "Analyse this workout and answer as JSON with keys summary and advice: {{{{input}}}}"
response_format = "json"

{pools}"#,
        store = dir.join("store").display(),
    );
    Config::from_toml_str(&text, std::iter::empty()).context("demo config")
}

#[cfg(unix)]
fn restrict(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn restrict(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// The sample jobs: mostly Gemini prompts, one template job, one per other
/// provider, and one broken job that must come back as `invalid_job`.
fn sample_jobs(jobs: usize) -> Vec<(&'static str, serde_json::Value)> {
    let mut out: Vec<(&str, serde_json::Value)> = (1..=jobs - 4)
        .map(|i| ("gemini", json!({"id": format!("gemini-{i:02}"), "prompt": format!("Summarise workout #{i} in one line"), "user": "demo"})))
        .collect();
    out.push(("gemini", json!({"id": "template-01", "template": "fitness_analysis", "input": {"steps": 12040, "sleep_hours": 6.5}, "metadata": {"source": "demo"}})));
    out.push(("openai", json!({"id": "openai-01", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plan a rest day"}]})));
    out.push(("anthropic", json!({"id": "anthropic-01", "prompt": "Suggest a stretching routine", "max_output_tokens": 200})));
    out.push(("gemini", json!({"id": "broken-01", "prompt": 42})));
    out
}

/// Publish the sample jobs with a private reply queue and collect one result each.
async fn exchange_jobs(
    config: &Config,
    run_id: &str,
    jobs: usize,
) -> anyhow::Result<Vec<JobResult>> {
    let broker = Arc::new(Broker::connect(&config.broker.url).await?);
    let channel = broker.channel().await?;
    let replies = format!("keyrelay.demo.{run_id}.replies");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(replies.as_str().into(), exclusive, FieldTable::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            replies.as_str().into(),
            "demo".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let publisher = Publisher::new(broker.clone()).await?;
    let jobs = sample_jobs(jobs);
    for (pool, body) in &jobs {
        let id = body["id"].as_str().unwrap_or_default();
        let props = BasicProperties::default()
            .with_message_id(id.into())
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_reply_to(replies.as_str().into());
        publisher
            .publish(
                &config.job_queue(pool),
                body.to_string().as_bytes(),
                props,
                true,
            )
            .await?;
    }
    println!(
        "published {} jobs; waiting for their results...",
        jobs.len()
    );
    let mut results = Vec::with_capacity(jobs.len());
    while results.len() < jobs.len() {
        let next = tokio::time::timeout(Duration::from_secs(60), consumer.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            bail!(
                "only {} of {} results arrived within 60 s",
                results.len(),
                jobs.len()
            );
        };
        delivery.ack(BasicAckOptions::default()).await?;
        results.push(
            serde_json::from_slice::<JobResult>(&delivery.data)
                .context("result is not contract JSON")?,
        );
    }
    // The work is done and confirmed; a close that fails changes nothing.
    let _ = broker.close().await;
    results.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(results)
}

fn print_results(results: &[JobResult]) {
    println!(
        "{:<14} {:<10} {:<10} {:<10} {:>8}  answer",
        "job", "pool", "key", "status", "latency"
    );
    for r in results {
        let answer = match (&r.json, &r.text, &r.error) {
            (Some(json), _, _) => json.to_string(),
            (_, Some(text), _) => text.clone(),
            (_, _, Some(e)) => format!("{}: {}", e.kind.as_str(), e.message),
            _ => String::new(),
        };
        let answer: String = answer.chars().take(70).collect();
        println!(
            "{:<14} {:<10} {:<10} {:<10} {:>6}ms  {}",
            r.id,
            r.pool,
            r.key.as_deref().unwrap_or("-"),
            r.outcome_label(),
            r.latency_ms,
            answer
        );
    }
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for r in results.iter().filter(|r| r.is_success()) {
        *by_key
            .entry(format!("{}/{}", r.pool, r.key.as_deref().unwrap_or("-")))
            .or_default() += 1;
    }
    println!("\nsucceeded per key: {by_key:?}");
    for r in results.iter().filter(|r| r.attempts > 1) {
        println!(
            "{} needed {} provider calls: its first key ran out of quota mid-job and it moved to `{}`",
            r.id,
            r.attempts,
            r.key.as_deref().unwrap_or("-")
        );
    }
}

async fn print_keys(app: &App, mock: &MockProcess) {
    let Ok(keys) = app.supervisor().send(GetKeys).await else {
        return;
    };
    println!("\nkey states (the primary Gemini key had {PRIMARY_RPD} requests a day):");
    for k in keys {
        let until = k
            .state
            .until()
            .map(|t| format!(" until {t}"))
            .unwrap_or_default();
        let name = format!("{}/{}", k.pool, k.name);
        println!(
            "  {name:<18} [{}] {}{}",
            k.fingerprint,
            k.state.label(),
            until
        );
    }
    let Ok(stats) = mock.key_stats().await else {
        return;
    };
    println!("\nprovider calls seen by the mock:");
    for (label, s) in &stats {
        println!(
            "  {label:<18} requests {:>3}, successes {:>3}, exhausted {:>2}",
            s.requests, s.successes, s.exhausted
        );
    }
}

/// Remove the demo's queues so repeated runs leave nothing behind.
async fn cleanup(config: &Config, run_id: &str) {
    let Ok(broker) = Broker::connect(&config.broker.url).await else {
        return;
    };
    if let Ok(channel) = broker.channel().await {
        for q in crate::amqp::topology::declared_queues(config) {
            let _ = channel
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    // The work is done and confirmed; a close that fails changes nothing.
    let _ = broker.close().await;
    let _ = run_id;
}
