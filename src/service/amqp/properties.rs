//! AMQP properties in and out: what a job's delivery says, what a reply carries.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use keyrelay_core::job::{JobProperties, ReplyAddress};

/// The properties the job decoder looks at.
pub fn job_properties(props: &BasicProperties) -> JobProperties {
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    JobProperties {
        message_id: text(props.message_id()),
        correlation_id: text(props.correlation_id()),
        reply_to: text(props.reply_to()),
        content_type: text(props.content_type()),
        batch_total: batch_total(props),
    }
}

/// The AMQP header a producer declares its batch's size in.
pub const BATCH_TOTAL_HEADER: &str = "x-keyrelay-batch-total";

fn batch_total(props: &BasicProperties) -> Option<u64> {
    use lapin::types::AMQPValue;
    let value = props.headers().as_ref()?.inner().get(BATCH_TOTAL_HEADER)?;
    match value {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongUInt(n) => Some(u64::from(*n)),
        AMQPValue::ShortInt(n) => u64::try_from(*n).ok(),
        AMQPValue::LongString(s) => s.to_string().parse().ok(),
        _ => None,
    }
}

/// Properties of a result message: persistent JSON with the job's correlation id.
pub fn reply_properties(reply: &ReplyAddress, job_id: &str) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_app_id("keyrelay".into());
    // Both fit a short string when they come from a validated job; never panic
    // on one that does not.
    if let Ok(correlation_id) = ShortString::try_new(reply.correlation_id.as_str()) {
        props = props.with_correlation_id(correlation_id);
    }
    if let Ok(message_id) = ShortString::try_new(job_id) {
        props = props.with_message_id(message_id);
    }
    props
}

/// Properties of a dead letter: the original ones plus the reason headers.
pub fn dead_letter_properties(
    original: &BasicProperties,
    pool: &str,
    kind: &str,
    reason: &str,
) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    insert_text(&mut headers, "x-keyrelay-reason", reason);
    insert_text(&mut headers, "x-keyrelay-error-kind", kind);
    insert_text(&mut headers, "x-keyrelay-pool", pool);
    let now = jiff::Timestamp::now().to_string();
    insert_text(&mut headers, "x-keyrelay-dead-lettered-at", &now);
    original.clone().with_headers(headers).with_delivery_mode(2)
}

fn insert_text(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(name.into(), AMQPValue::LongString(value.into()));
}
