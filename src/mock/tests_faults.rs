//! Over-the-wire tests of fault injection: `[[mock:...]]` directives and `fault_rate`.

use std::time::Duration;

use serde_json::Value;

use super::tests::{ALL, MODEL, P, call, header, start, start_with, text_of};
use super::tests_keys::check_exhausted;
use super::*;

#[actix_web::test]
async fn status_directive_uses_each_providers_error_body() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let r = call(&mock, P::Gemini, Some("s"), "[[mock:status=503]]", false).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_u64(),
            body["error"]["status"].as_str()
        ),
        (Some(503), Some("UNAVAILABLE"))
    );

    let r = call(&mock, P::Openai, Some("s"), "[[mock:status=500]]", false).await;
    assert_eq!(r.status(), 500);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "server_error"
    );

    let r = call(&mock, P::Anthropic, Some("s"), "[[mock:status=529]]", false).await;
    assert_eq!(r.status(), 529);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        (body["type"].as_str(), body["error"]["type"].as_str()),
        (Some("error"), Some("overloaded_error"))
    );

    let r = call(&mock, P::Anthropic, Some("s"), "[[mock:status=400]]", false).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(mock.stats().key("k").faults, 4);
    mock.stop().await;
}

#[actix_web::test]
async fn invalid_json_is_a_success_whose_text_is_not_json() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    for p in ALL {
        let prompt = "[[mock:invalid_json]] job";
        let r = call(&mock, p, Some("s"), prompt, true).await;
        assert_eq!(r.status(), 200);
        let text = text_of(p, &r.json().await.unwrap()).unwrap();
        assert!(
            serde_json::from_str::<Value>(&text).is_err(),
            "{p:?}: {text}"
        );
    }
    assert_eq!(mock.stats().successes_for("[[mock:invalid_json]] job"), 3);
    mock.stop().await;
}

#[actix_web::test]
async fn malformed_and_missing_fields_are_broken_200s() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    for p in ALL {
        let r = call(&mock, p, Some("s"), "[[mock:malformed]]", false).await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        assert!(!bytes.is_empty());
        assert!(serde_json::from_slice::<Value>(&bytes).is_err(), "{p:?}");

        let r = call(&mock, p, Some("s"), "[[mock:missing_fields]]", false).await;
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert!(body.is_object());
        assert_eq!(text_of(p, &body), None, "{p:?}: {body}");
    }
    let stats = mock.stats().key("k");
    assert_eq!((stats.faults, stats.successes), (6, 0));
    mock.stop().await;
}

#[actix_web::test]
async fn reset_closes_without_an_answer() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    for p in ALL {
        let url = match p {
            P::Gemini => format!(
                "{}/v1beta/models/{MODEL}:generateContent",
                mock.gemini_base_url()
            ),
            P::Openai => format!("{}/chat/completions", mock.openai_base_url()),
            P::Anthropic => format!("{}/v1/messages", mock.anthropic_base_url()),
        };
        let body = serde_json::json!({
            "model": MODEL, "max_tokens": 5,
            "contents": [{ "parts": [{ "text": "[[mock:reset]]" }] }],
            "messages": [{ "role": "user", "content": "[[mock:reset]]" }]
        });
        let result = super::tests::client()
            .post(url)
            .header("x-goog-api-key", "s")
            .bearer_auth("s")
            .header("x-api-key", "s")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await;
        let error = result.expect_err("a reset must not produce a response");
        assert!(error.status().is_none(), "{p:?}: {error}");
    }
    assert_eq!(mock.stats().key("k").faults, 3);
    mock.stop().await;
}

#[actix_web::test]
async fn truncate_declares_more_than_it_sends() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    for p in ALL {
        let r = call(&mock, p, Some("s"), "[[mock:truncate]]", false).await;
        assert_eq!(r.status(), 200);
        let declared: usize = header(&r, "content-length").parse().unwrap();
        assert!(declared > 0);
        assert!(r.bytes().await.is_err(), "{p:?}: the body must end early");
    }
    mock.stop().await;
}

#[actix_web::test]
async fn huge_body_is_twelve_mebibytes_of_valid_json() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let r = call(&mock, P::Openai, Some("s"), "[[mock:huge]]", false).await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    assert!(bytes.len() >= 12 * 1024 * 1024, "{}", bytes.len());
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(
        text_of(P::Openai, &body)
            .unwrap()
            .starts_with("mock answer: [[mock:huge]] xxx")
    );
    mock.stop().await;
}

#[actix_web::test]
async fn slow_body_and_sleep_still_deliver_a_complete_body() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let r = call(
        &mock,
        P::Anthropic,
        Some("s"),
        "[[mock:slow_body=200]]",
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    let declared: usize = header(&r, "content-length").parse().unwrap();
    let bytes = r.bytes().await.unwrap();
    assert_eq!(bytes.len(), declared);
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        text_of(P::Anthropic, &body).unwrap(),
        "mock answer: [[mock:slow_body=200]]"
    );

    let r = call(
        &mock,
        P::Gemini,
        Some("s"),
        "[[mock:sleep_ms=20]] nap",
        false,
    )
    .await;
    assert_eq!(r.status(), 200);
    let stats = mock.stats().key("k");
    assert_eq!((stats.faults, stats.successes), (1, 1));
    mock.stop().await;
}

#[actix_web::test]
async fn forced_limits_use_no_quota() {
    let mock = start(vec![MockKey::new("k", "s").with_rpm(1).with_rpd(5)]).await;
    for p in ALL {
        let r = call(&mock, p, Some("s"), "[[mock:rate_limit=1500]]", false).await;
        assert_eq!(r.status(), 429, "{p:?}");
        check_exhausted(
            p,
            call(&mock, p, Some("s"), "[[mock:exhausted]]", false).await,
        )
        .await;
    }
    let r = call(
        &mock,
        P::Openai,
        Some("s"),
        "[[mock:rate_limit=1500]]",
        false,
    )
    .await;
    assert_eq!(header(&r, "retry-after"), "2");
    assert_eq!(header(&r, "retry-after-ms"), "1500");
    // Seven rejections later the single-request minute window is still free.
    assert_eq!(
        call(&mock, P::Openai, Some("s"), "real", false)
            .await
            .status(),
        200
    );
    let stats = mock.stats().key("k");
    assert_eq!(
        (stats.rate_limited, stats.exhausted, stats.successes),
        (4, 3, 1)
    );
    mock.stop().await;
}

#[actix_web::test]
async fn unknown_directive_is_a_bad_request() {
    let mock = start(vec![MockKey::new("k", "s")]).await;
    let r = call(&mock, P::Openai, Some("s"), "[[mock:stauts=500]]", false).await;
    assert_eq!(r.status(), 400);
    let message = r.json::<Value>().await.unwrap()["error"]["message"].clone();
    assert!(message.as_str().unwrap().contains("unknown mock directive"));
    mock.stop().await;
}

#[actix_web::test]
async fn fault_rate_one_faults_every_plain_request() {
    let settings = MockSettings {
        keys: vec![MockKey::new("k", "s")],
        fault_rate: 1.0,
        latency: Duration::from_millis(1),
        ..MockSettings::default()
    };
    let mock = start_with(settings).await;
    let http = super::tests::client();
    for i in 0..12 {
        let body = serde_json::json!({ "model": MODEL, "max_tokens": 5, "messages": [{ "role": "user", "content": format!("n{i}") }] });
        let result = http
            .post(format!("{}/v1/messages", mock.anthropic_base_url()))
            .header("x-api-key", "s")
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await;
        if let Ok(r) = result {
            assert!(matches!(r.status().as_u16(), 500 | 529), "{}", r.status());
        }
    }
    let stats = mock.stats().key("k");
    assert_eq!((stats.requests, stats.faults, stats.successes), (12, 12, 0));
    mock.stop().await;
}
