//! The job decoder must turn any bytes and properties into a job or an
//! `InvalidJob` with a reason: never panic, never an empty reason.
#![no_main]

use std::collections::BTreeMap;

use keyrelay::config::TemplateConfig;
use keyrelay::job::{DecodeContext, JobProperties, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte picks which properties are set; the rest is the body.
    let (flags, body) = data.split_first().unwrap_or((&0, data));
    let text = |bit: u8, value: &str| (flags & bit != 0).then(|| value.to_owned());
    let props = JobProperties {
        message_id: text(1, "mid"),
        correlation_id: text(2, "corr"),
        reply_to: text(4, ""),
        content_type: text(8, "application/json; charset=utf-8"),
    };
    let mut templates = BTreeMap::new();
    templates.insert(
        "t".to_owned(),
        TemplateConfig {
            system: Some("s".into()),
            text: "{{input}} {{input.a}}".into(),
            response_format: None,
        },
    );
    let models = vec!["m1".to_owned()];
    let ctx = DecodeContext {
        pool: "p",
        default_model: "m1",
        models: (flags & 16 != 0).then_some(&models[..]),
        templates: &templates,
        max_body_bytes: 64 * 1024,
        results_queue: "results",
    };
    match decode(body, &props, &ctx, || "generated".into()) {
        Ok(job) => assert!(!job.id.is_empty() && job.id.len() <= 255),
        Err(invalid) => assert!(!invalid.reason.is_empty()),
    }
});
