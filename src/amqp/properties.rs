//! AMQP properties in and out: what a job's delivery says, what a reply carries.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable};

use crate::job::{JobProperties, ReplyAddress};

/// The properties the job decoder looks at.
pub fn job_properties(props: &BasicProperties) -> JobProperties {
    let text = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.as_str().to_owned());
    JobProperties {
        message_id: text(props.message_id()),
        correlation_id: text(props.correlation_id()),
        reply_to: text(props.reply_to()),
        content_type: text(props.content_type()),
    }
}

/// Properties of a result message: persistent JSON with the job's correlation id.
pub fn reply_properties(reply: &ReplyAddress, job_id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_correlation_id(reply.correlation_id.as_str().into())
        .with_message_id(job_id.into())
        .with_app_id("keyrelay".into())
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
    original.clone().with_headers(headers).with_delivery_mode(2)
}

fn insert_text(headers: &mut FieldTable, name: &str, value: &str) {
    headers.insert(name.into(), AMQPValue::LongString(value.into()));
}
