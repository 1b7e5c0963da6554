//! `keyrelay keys disable|enable|probe|reset POOL NAME`, through the admin API.

use super::admin_client::{AdminArgs, AdminClient, encode};

/// One key action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAction {
    Disable,
    Enable,
    Probe,
    Reset,
}

impl KeyAction {
    fn as_str(self) -> &'static str {
        match self {
            KeyAction::Disable => "disable",
            KeyAction::Enable => "enable",
            KeyAction::Probe => "probe",
            KeyAction::Reset => "reset",
        }
    }
}

/// Run the action; `Ok(false)` when a probe's request failed.
pub async fn run(
    args: &AdminArgs,
    action: KeyAction,
    pool: &str,
    name: &str,
    reason: Option<String>,
) -> anyhow::Result<bool> {
    let client = AdminClient::new(args)?;
    let path = format!(
        "/v1/keys/{}/{}/{}",
        encode(pool),
        encode(name),
        action.as_str()
    );
    let body = reason.map(|r| serde_json::json!({ "reason": r }));
    let answer = client.post(&path, body).await?;
    if action == KeyAction::Probe {
        let ok = answer["ok"].as_bool().unwrap_or(false);
        println!(
            "probe {pool}/{name}: {} in {} ms: {}",
            answer["outcome"].as_str().unwrap_or("?"),
            answer["latency_ms"],
            answer["message"].as_str().unwrap_or("")
        );
        return Ok(ok);
    }
    let key = &answer["key"];
    let mut line = format!(
        "{pool}/{name}: {}",
        key["state"].as_str().unwrap_or("unknown")
    );
    if let Some(reason) = key["reason"].as_str() {
        line.push_str(&format!(" ({reason})"));
    }
    println!("{line}");
    Ok(true)
}
