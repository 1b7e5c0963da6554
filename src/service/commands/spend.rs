//! `keyrelay spend`: what was spent, grouped by pool, key, user or model,
//! and every budget against what was spent of it, from the admin API.

use super::admin_client::{AdminArgs, AdminClient, encode};
use super::table;

/// How to group the spend.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpendBy {
    Pool,
    Key,
    User,
    Model,
}

impl SpendBy {
    fn as_str(self) -> &'static str {
        match self {
            SpendBy::Pool => "pool",
            SpendBy::Key => "key",
            SpendBy::User => "user",
            SpendBy::Model => "model",
        }
    }
}

/// Print the spend table, then the budgets.
pub async fn run(args: &AdminArgs, by: SpendBy, since: Option<&str>) -> anyhow::Result<()> {
    let client = AdminClient::new(args)?;
    let mut path = format!("/v1/stats?by={}&source=spend", by.as_str());
    if let Some(since) = since {
        path.push_str(&format!("&since={}", encode(since)));
    }
    let stats = client.get(&path).await?;
    print!("{}", spend_table(by, &stats));
    let budgets = client.get("/v1/budgets").await?;
    let table = budget_table(&budgets);
    if !table.is_empty() {
        println!();
        print!("{table}");
    }
    Ok(())
}

fn spend_table(by: SpendBy, stats: &serde_json::Value) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut total = 0.0;
    for (name, group) in stats["groups"].as_object().into_iter().flatten() {
        let cost = group["cost_usd"].as_f64().unwrap_or(0.0);
        total += cost;
        rows.push(vec![
            name.clone(),
            format!("${cost:.4}"),
            group["calls"].as_u64().unwrap_or(0).to_string(),
            group["unpriced_calls"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    rows.sort_by(|a, b| b[1].len().cmp(&a[1].len()).then_with(|| b[1].cmp(&a[1])));
    rows.push(vec![
        "total".into(),
        format!("${total:.4}"),
        String::new(),
        String::new(),
    ]);
    let since = stats["since"].as_str().unwrap_or("?");
    format!(
        "spend since {since}\n{}",
        table::render(&[by.as_str(), "cost", "calls", "unpriced calls"], &rows)
    )
}

fn budget_table(budgets: &serde_json::Value) -> String {
    let rows: Vec<Vec<String>> = budgets["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                format!(
                    "{} {}",
                    b["scope"].as_str().unwrap_or("?"),
                    b["name"].as_str().unwrap_or("?")
                ),
                b["period"].as_str().unwrap_or("?").to_owned(),
                format!("${:.2}", b["spent_usd"].as_f64().unwrap_or(0.0)),
                format!("${:.2}", b["limit_usd"].as_f64().unwrap_or(0.0)),
                format!("{:.0} %", b["share"].as_f64().unwrap_or(0.0) * 100.0),
                b["resets_at"].as_str().unwrap_or("?").to_owned(),
            ]
        })
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    table::render(
        &["budget", "period", "spent", "limit", "used", "resets"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spend_is_tabled_largest_first_with_a_total() {
        let stats = json!({"since": "2026-12-01T00:00:00Z", "groups": {
            "a": {"cost_usd": 0.5, "calls": 2, "unpriced_calls": 0},
            "b": {"cost_usd": 12.25, "calls": 40, "unpriced_calls": 1}}});
        let out = spend_table(SpendBy::Pool, &stats);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains("2026-12-01"), "{out}");
        assert!(
            lines[2].starts_with("b ") && lines[2].contains("$12.2500"),
            "{out}"
        );
        assert!(
            lines[4].starts_with("total") && lines[4].contains("$12.7500"),
            "{out}"
        );
    }

    #[test]
    fn budgets_show_their_share() {
        let budgets = json!({"budgets": [{"scope": "pool", "name": "g", "period": "day",
            "spent_usd": 4.0, "limit_usd": 5.0, "share": 0.8, "resets_at": "2026-12-07T00:00:00Z"}]});
        let out = budget_table(&budgets);
        assert!(
            out.contains("pool g") && out.contains("80 %") && out.contains("$5.00"),
            "{out}"
        );
    }
}
