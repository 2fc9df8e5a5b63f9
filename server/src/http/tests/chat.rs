//! `/v1/chat/completions`.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::fake::Mode;
use super::*;
use crate::engine::EngineError;

const CHAT: &str = "/v1/chat/completions";

fn image_message(url: &str, text: &str) -> Value {
    json!({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
        {"type": "text", "text": text},
    ]})
}

#[tokio::test]
async fn answers_text_and_data_url_images_with_usage() {
    let h = default_harness();
    let url = data_url(&png_bytes(30, 10));
    let body = json!({"model": "gpt-4o", "messages": [image_message(&url, "What is this?")], "max_tokens": 100});
    let r = send(&h.app, post_json(CHAT, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "fake/janus");
    let c = &v["choices"][0];
    assert_eq!(c["index"], 0);
    assert_eq!(c["message"]["role"], "assistant");
    assert_eq!(c["message"]["content"], "1 image(s). You said: What is this?");
    assert_eq!(c["finish_reason"], "stop");
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], seen.prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], 7);
    assert_eq!(v["usage"]["total_tokens"], seen.prompt_tokens + 7);
    // The reference's template, tokenized: the default system prompt, the image's slot, the text.
    let system = janus::text::conversation::DEFAULT_SYSTEM_PROMPT;
    assert_eq!(
        seen.prompt,
        format!("<｜begin▁of▁sentence｜>{system}\n\n<|User|>: <image>\nWhat is this?\n\n<|Assistant|>:")
    );
    assert_eq!(seen.images, vec![vec![3, 32, 32]], "the image as the model's input");
    assert_eq!(seen.held, super::fake::prompter().prepared_image_bytes().next_multiple_of(4096), "its pixels are held");
    assert_eq!(h.state.admission.memory().in_use(), 0, "and given back when the engine has them");
    assert_eq!((seen.params.max_new_tokens, seen.max_new), (Some(100), 100));
    assert_eq!(seen.params.sampling.temperature, 0.0, "greedy by default, as the reference");
}

#[tokio::test]
async fn system_messages_replace_the_default_prompt_and_turns_are_kept() {
    let h = default_harness();
    let body = json!({"messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello."}]},
        {"role": "user", "content": "Again", "name": "bob"},
    ], "temperature": 0.5, "top_p": 0.8, "seed": 3, "max_completion_tokens": 3, "max_tokens": 99,
       "user": "u", "frequency_penalty": 0, "presence_penalty": 0, "store": false, "n": 1, "stop": null,
       "logprobs": false, "metadata": {"a": "b"}, "service_tier": "auto", "parallel_tool_calls": false});
    let r = send(&h.app, post_json(CHAT, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length", "max_completion_tokens wins over max_tokens");
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.prompt,
        "<｜begin▁of▁sentence｜>Be terse.\n\n<|User|>: Hi\n\n<|Assistant|>: Hello.<｜end▁of▁sentence｜><|User|>: Again\n\n<|Assistant|>:"
    );
    assert_eq!(seen.params.max_new_tokens, Some(3));
    assert_eq!(seen.params.sampling.temperature, 0.5);
    assert_eq!(seen.params.sampling.top_p, Some(0.8));
    assert_eq!(seen.params.seed, 3);

    // an empty system message disables the system prompt
    let body = json!({"messages": [{"role": "developer", "content": ""}, {"role": "user", "content": "Hi"}]});
    assert_eq!(send(&h.app, post_json(CHAT, &body)).await.status, StatusCode::OK);
    assert_eq!(
        h.fake.last_chat.lock().unwrap().as_ref().unwrap().prompt,
        "<｜begin▁of▁sentence｜><|User|>: Hi\n\n<|Assistant|>:"
    );
}

#[tokio::test]
async fn streams_chunks_ending_with_done() {
    let h = default_harness();
    let body = json!({"messages": [{"role": "user", "content": "a b c"}], "stream": true,
                      "stream_options": {"include_usage": true}});
    let r = send(&h.app, post_json(CHAT, &body)).await;
    let events = r.sse();
    assert!(events.iter().all(|(e, _)| e.is_none()), "chat chunks are unnamed events");
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
    let id = chunks[0]["id"].as_str().unwrap();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["model"], "fake/janus");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0).and_then(|ch| ch["delta"]["content"].as_str())).collect();
    assert_eq!(text, "0 image(s). You said: a b c");
    let n = chunks.len();
    assert_eq!(chunks[n - 2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[n - 2]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[n - 1]["choices"], json!([]));
    assert_eq!(
        chunks[n - 1]["usage"]["prompt_tokens"],
        h.fake.last_chat.lock().unwrap().as_ref().unwrap().prompt_tokens
    );
    assert_eq!(chunks[n - 1]["usage"]["completion_tokens"], 7);
    assert!(chunks[..n - 1].iter().all(|c| c.get("usage").is_none()));

    // without include_usage: no usage chunk
    let body = json!({"messages": [{"role": "user", "content": "a"}], "stream": true});
    let events = send(&h.app, post_json(CHAT, &body)).await.sse();
    let last: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn a_failure_mid_stream_is_an_error_chunk_and_before_it_a_status() {
    let h = default_harness();
    h.fake.set_mode(Mode::FailLater(EngineError::Internal("kaput".into())));
    let body = json!({"messages": [{"role": "user", "content": "a"}], "stream": true});
    let events = send(&h.app, post_json(CHAT, &body)).await.sse();
    let last: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(last["error"]["code"], "internal_error");
    assert!(last["error"]["message"].as_str().unwrap().contains("kaput"));
    // not streamed: the status
    let body = json!({"messages": [{"role": "user", "content": "a"}]});
    send(&h.app, post_json(CHAT, &body)).await.assert_error(500, None, "kaput");
    // refused at submission, streamed or not: the status
    h.fake.set_mode(Mode::Reject(EngineError::QueueFull { queued: 3, retry_after_s: 2 }));
    let body = json!({"messages": [{"role": "user", "content": "a"}], "stream": true});
    let r = send(&h.app, post_json(CHAT, &body)).await;
    r.assert_error(429, None, "busy");
    assert_eq!(r.header("retry-after"), "2");
    h.fake.set_mode(Mode::Reject(EngineError::PromptTooLong { tokens: 5000, max: 4095 }));
    let body = json!({"messages": [{"role": "user", "content": "a"}]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(400, None, "5000 tokens");
    assert_eq!(e["code"], "context_length_exceeded");
    h.fake.set_status(crate::engine::EngineStatus::Loading);
    send(&h.app, post_json(CHAT, &body)).await.assert_error(503, None, "loading");
}

#[tokio::test]
async fn refuses_bad_requests_naming_the_field() {
    let h = default_harness();
    let user = json!({"role": "user", "content": "hi"});
    let cases: Vec<(Value, &str, u16, &str)> = vec![
        (json!({"messages": []}), "messages", 400, "at least one user message"),
        (json!({"messages": [{"role": "system", "content": "s"}]}), "messages", 400, "at least one user message"),
        (
            json!({"messages": [user, {"role": "assistant", "content": "x"}]}),
            "messages",
            400,
            "last message must be from the user",
        ),
        (json!({"messages": [user], "temperature": 3}), "temperature", 400, "between 0 and 2"),
        (json!({"messages": [user], "top_p": 1.5}), "top_p", 400, "(0, 1]"),
        // a negative seed is refused (as for images), not wrapped around to a huge one
        (json!({"messages": [user], "seed": -1, "temperature": 0.7}), "seed", 400, "must not be negative; got -1"),
        (json!({"messages": [user], "max_tokens": 0}), "max_tokens", 400, "between 1 and 4096"),
        (
            json!({"messages": [user], "max_completion_tokens": 5000}),
            "max_completion_tokens",
            400,
            "between 1 and 4096",
        ),
        (json!({"messages": [user], "n": 9}), "n", 400, "between 1 and 8"),
        (json!({"messages": [user], "n": 0}), "n", 400, "between 1 and 8"),
        (json!({"messages": [user], "stop": ["a", "b", "c", "d", "e"]}), "stop", 400, "at most 4"),
        (json!({"messages": [user], "stop": [1]}), "stop", 400, "a string or an array"),
        (json!({"messages": [user], "stop": [""]}), "stop", 400, "1 to 256 characters"),
        (json!({"messages": [user], "top_logprobs": 2}), "top_logprobs", 400, "logprobs: true"),
        (json!({"messages": [user], "logprobs": true, "top_logprobs": 21}), "top_logprobs", 400, "between 0 and 20"),
        (json!({"messages": [user], "frequency_penalty": 2.5}), "frequency_penalty", 400, "between -2 and 2"),
        (json!({"messages": [user], "presence_penalty": -3}), "presence_penalty", 400, "between -2 and 2"),
        (json!({"messages": [user], "repetition_penalty": 0}), "repetition_penalty", 400, "above 0"),
        (json!({"messages": [user], "response_format": {"type": "xml"}}), "response_format.type", 400, "not a format"),
        (
            json!({"messages": [user], "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}}),
            "response_format",
            400,
            "does not compile",
        ),
        (
            json!({"messages": [user], "structured_outputs": {"regex": "("}}),
            "structured_outputs",
            400,
            "does not compile",
        ),
        (
            json!({"messages": [user], "structured_outputs": {"choice": []}}),
            "structured_outputs",
            400,
            "does not compile",
        ),
        (json!({"messages": [user], "tools": []}), "tools", 400, "unknown field"),
        (json!({"messages": [{"role": "tool", "content": "x"}]}), "messages[0].role", 400, "unknown variant `tool`"),
        (json!({"messages": [{"role": "user"}]}), "messages[0].content", 400, "required"),
        (json!({"messages": [{"role": "user", "content": 5}]}), "messages[0].content", 400, "string or an array"),
        (
            json!({"messages": [{"role": "user", "content": "x", "colour": 1}]}),
            "messages[0].colour",
            400,
            "unknown field",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "messages[0].content[0].type",
            400,
            "`input_audio` is not supported",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]}),
            "messages[0].content[0].text",
            400,
            "required",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "a", "x": 1}]}]}),
            "messages[0].content[0].x",
            400,
            "unknown field",
        ),
        (
            json!({"messages": [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}, user]}),
            "messages[0].content[0]",
            400,
            "only accepted in user messages",
        ),
        (
            json!({"messages": [image_message("ftp://x/y.png", "q")]}),
            "messages[0].content[0].image_url.url",
            400,
            "data:image/",
        ),
        (
            json!({"messages": [image_message("data:text/plain;base64,AAAA", "q")]}),
            "messages[0].content[0].image_url.url",
            400,
            "not an image",
        ),
        (
            json!({"messages": [image_message("data:image/png,rawbytes", "q")]}),
            "messages[0].content[0].image_url.url",
            400,
            "not base64",
        ),
        (
            json!({"messages": [image_message("data:image/png;base64,!!!", "q")]}),
            "messages[0].content[0].image_url.url",
            400,
            "not valid base64",
        ),
        (
            json!({"messages": [image_message("data:image/png;base64,aGVsbG8gd29ybGQ=", "q")]}),
            "messages[0].content[0].image_url.url",
            415,
            "unrecognised image format",
        ),
    ];
    for (body, param, status, needle) in cases {
        let r = send(&h.app, post_json(CHAT, &body)).await;
        r.assert_error(status, Some(param), needle);
    }
    let nine: Vec<Value> = (0..9).map(|_| image_message(&data_url(&png_bytes(2, 2)), "q")).collect();
    send(&h.app, post_json(CHAT, &json!({"messages": nine}))).await.assert_error(
        400,
        Some("messages"),
        "at most 8 images",
    );
}

#[tokio::test]
async fn a_truncated_image_is_a_400_naming_the_part() {
    let h = default_harness();
    let png = png_bytes(16, 16);
    let body = json!({"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                                   image_message(&data_url(&png[..png.len() - 20]), "q")]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[2].content[0].image_url.url"),
        "cannot decode",
    );
    assert_eq!(e["code"], "invalid_image");
}

#[tokio::test]
async fn remote_image_urls_are_refused_with_a_clear_message() {
    let h = default_harness();
    let body = json!({"messages": [image_message("https://example.com/cat.png", "q")]});
    let e = send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "--allow-remote-images",
    );
    assert!(e["message"].as_str().unwrap().contains("data:image/<format>;base64,"));
    // Allowed, but a loopback (or private) destination is still refused, before connecting.
    let h = harness(HttpConfig { allow_remote_images: true, ..HttpConfig::default() });
    let body = json!({"messages": [image_message("http://127.0.0.1:9/cat.png", "q")]});
    send(&h.app, post_json(CHAT, &body)).await.assert_error(
        400,
        Some("messages[0].content[0].image_url.url"),
        "non-public",
    );
}

#[tokio::test]
async fn image_url_as_a_bare_string_and_unpadded_base64_are_accepted() {
    let h = default_harness();
    let url = data_url(&png_bytes(3, 3));
    let unpadded = url.trim_end_matches('=').to_string();
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": unpadded}, {"type": "text", "text": "q"}]}]});
    let r = send(&h.app, post_json(CHAT, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_answer() {
    let h = default_harness();
    h.fake.set_mode(Mode::Hang);
    let body = json!({"messages": [{"role": "user", "content": "a"}]});
    let fut = h.app.clone().oneshot(post_json(CHAT, &body));
    assert!(tokio::time::timeout(Duration::from_millis(100), fut).await.is_err());
    assert!(h.fake.held_chat.lock().unwrap().pop().unwrap().is_closed());

    let body = json!({"messages": [{"role": "user", "content": "a"}], "stream": true});
    let resp = h.app.clone().oneshot(post_json(CHAT, &body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let tx = h.fake.held_chat.lock().unwrap().pop().unwrap();
    assert!(!tx.is_closed());
    drop(resp);
    assert!(tx.is_closed());
}
