//! `/v1/responses`.

use axum::http::StatusCode;
use janus::text::constraint::ConstraintSpec;
use janus::text::conversation::DEFAULT_SYSTEM_PROMPT;
use serde_json::{json, Value};

use super::super::RequestLimits;
use super::fake::Mode;
use super::*;
use crate::engine::EngineError;

const RESPONSES: &str = "/v1/responses";
const BOS: &str = "<｜begin▁of▁sentence｜>";
const EOS: &str = "<｜end▁of▁sentence｜>";

fn seen_prompt(h: &Harness) -> String {
    h.fake.last_chat.lock().unwrap().as_ref().unwrap().prompt.clone()
}

/// A successful response's JSON.
async fn create(h: &Harness, body: Value) -> Value {
    let r = send(&h.app, post_json(RESPONSES, &body)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.json()
}

fn output_text(v: &Value) -> &str {
    v["output"][0]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no output text in {v}"))
}

#[tokio::test]
async fn answers_a_string_and_messages_with_an_image_with_usage() {
    let h = default_harness();
    let v = create(&h, json!({"model": "gpt-4.1", "input": "Hello there"})).await;
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["incomplete_details"], Value::Null);
    assert_eq!(v["error"], Value::Null);
    assert_eq!(v["model"], "fake/janus");
    let item = &v["output"][0];
    assert_eq!(
        (item["type"].as_str(), item["role"].as_str(), item["status"].as_str()),
        (Some("message"), Some("assistant"), Some("completed"))
    );
    assert!(item["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(
        item["content"][0],
        json!({"type": "output_text", "text": "0 image(s). You said: Hello there", "annotations": [], "logprobs": []})
    );
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(seen.prompt, format!("{BOS}{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: Hello there\n\n<|Assistant|>:"));
    let usage = &v["usage"];
    assert_eq!(usage["input_tokens"], seen.prompt_tokens);
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens"], 6);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    assert_eq!(usage["total_tokens"], seen.prompt_tokens + 6);
    // the request's settings echoed, as OpenAI does
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    assert_eq!(
        (v["store"].as_bool(), v["temperature"].as_f64(), v["top_p"].as_f64()),
        (Some(true), Some(0.0), Some(1.0))
    );
    assert_eq!(
        (v["tools"].clone(), v["tool_choice"].clone(), v["metadata"].clone()),
        (json!([]), json!("none"), json!({}))
    );

    let url = data_url(&png_bytes(30, 10));
    let input = json!([{"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": url, "detail": "auto"},
        {"type": "input_text", "text": "What is this?"},
    ]}]);
    let v = create(
        &h,
        json!({"input": input, "max_output_tokens": 100, "metadata": {"k": "v"}, "user": "u",
                              "truncation": "disabled", "parallel_tool_calls": false, "service_tier": "auto",
                              "tool_choice": "none", "tools": []}),
    )
    .await;
    assert_eq!(output_text(&v), "1 image(s). You said: What is this?");
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.prompt,
        format!("{BOS}{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: <image>\nWhat is this?\n\n<|Assistant|>:")
    );
    assert_eq!(seen.images, vec![vec![3, 32, 32]], "the image as the model's input");
    assert_eq!((seen.params.max_new_tokens, seen.max_new), (Some(100), 100));
    assert_eq!(v["usage"]["input_tokens"], seen.prompt_tokens);
    assert_eq!(
        (v["max_output_tokens"].as_i64(), v["metadata"].clone(), v["user"].clone()),
        (Some(100), json!({"k": "v"}), json!("u"))
    );
}

#[tokio::test]
async fn instructions_replace_the_system_prompt_and_history_items_are_kept() {
    let h = default_harness();
    // An answer passed back as input, as clients do with `response.output`.
    let input = json!([
        {"role": "user", "content": "Hi"},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant", "phase": null,
         "content": [{"type": "output_text", "text": "Hello.", "annotations": [], "logprobs": null}]},
        {"role": "user", "content": [{"type": "input_text", "text": "Again"}]},
    ]);
    let v = create(&h, json!({"instructions": "Be terse.", "input": input, "temperature": 0.5, "top_p": 0.8})).await;
    assert_eq!(v["instructions"], "Be terse.");
    assert_eq!((v["temperature"].as_f64(), v["top_p"].as_f64()), (Some(0.5), Some(0.8)), "f32s are written as typed");
    assert_eq!(
        seen_prompt(&h),
        format!("{BOS}Be terse.\n\n<|User|>: Hi\n\n<|Assistant|>: Hello.{EOS}<|User|>: Again\n\n<|Assistant|>:")
    );
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!((seen.params.sampling.temperature, seen.params.sampling.top_p), (0.5, Some(0.8)));
    // a developer message in the input joins the instructions
    let input = json!([{"role": "developer", "content": "Use French."}, {"role": "user", "content": "Hi"}]);
    create(&h, json!({"instructions": "Be terse.", "input": input})).await;
    assert_eq!(seen_prompt(&h), format!("{BOS}Be terse.\nUse French.\n\n<|User|>: Hi\n\n<|Assistant|>:"));
}

#[tokio::test]
async fn text_format_reaches_the_constraint_and_a_bad_one_is_named() {
    let h = default_harness();
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
    let format = json!({"type": "json_schema", "name": "thing", "schema": schema, "strict": true});
    let v = create(&h, json!({"input": "Give me a", "text": {"format": format}})).await;
    assert_eq!(v["text"]["format"], format, "echoed as asked");
    let seen = h.fake.last_chat.lock().unwrap().clone().unwrap();
    assert_eq!(seen.params.constraint, Some(ConstraintSpec::JsonSchema(schema)));
    create(&h, json!({"input": "x", "text": {"format": {"type": "json_object"}}})).await;
    assert_eq!(h.fake.last_chat.lock().unwrap().as_ref().unwrap().params.constraint, Some(ConstraintSpec::JsonObject));
    create(&h, json!({"input": "x", "text": {"format": {"type": "text"}, "verbosity": "low"}})).await;
    assert_eq!(h.fake.last_chat.lock().unwrap().as_ref().unwrap().params.constraint, None);

    let cases = [
        (json!({"type": "json_schema", "name": "x", "schema": 5}), "text.format.schema", "JSON Schema object"),
        (json!({"type": "yaml"}), "text.format.type", "not a format"),
        (json!({"type": "json_schema", "name": 3}), "text.format.name", "must be a string"),
        (json!("json"), "text.format", "must be an object"),
    ];
    for (format, param, needle) in cases {
        let r = send(&h.app, post_json(RESPONSES, &json!({"input": "x", "text": {"format": format}}))).await;
        r.assert_error(400, Some(param), needle);
    }
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "x", "text": {"style": "x"}}))).await;
    r.assert_error(400, Some("text.style"), "unknown field");
}

#[tokio::test]
async fn previous_response_id_continues_the_kept_conversation() {
    let h = default_harness();
    let first = create(&h, json!({"instructions": "Be terse.", "input": "Hi"})).await;
    let id = first["id"].as_str().unwrap();
    let second = create(&h, json!({"previous_response_id": id, "input": "Again"})).await;
    assert_eq!(second["previous_response_id"], id);
    assert_eq!(output_text(&second), "0 image(s). You said: Again");
    // The first exchange, then the new input; the instructions are not inherited.
    assert_eq!(
        seen_prompt(&h),
        format!(
            "{BOS}{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: Hi\n\n<|Assistant|>: 0 image(s). You said: Hi{EOS}\
             <|User|>: Again\n\n<|Assistant|>:"
        )
    );
    // A third turn holds both before it, images included.
    let url = data_url(&png_bytes(8, 8));
    let input = json!([{"role": "user", "content": [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "And this?"}]}]);
    let third =
        create(&h, json!({"previous_response_id": second["id"], "input": input, "instructions": "Short."})).await;
    let fourth = create(&h, json!({"previous_response_id": third["id"], "input": "Last"})).await;
    assert_eq!(output_text(&fourth), "1 image(s). You said: Last");
    let prompt = seen_prompt(&h);
    assert!(prompt.starts_with(&format!("{BOS}{DEFAULT_SYSTEM_PROMPT}\n\n<|User|>: Hi")), "{prompt}");
    assert!(
        prompt.contains("You said: Again{EOS}<|User|>: <image>\nAnd this?".replace("{EOS}", EOS).as_str()),
        "{prompt}"
    );
    assert!(prompt.ends_with("You said: And this?<｜end▁of▁sentence｜><|User|>: Last\n\n<|Assistant|>:"), "{prompt}");

    // unknown: a 404 in OpenAI's envelope
    let r = send(&h.app, post_json(RESPONSES, &json!({"previous_response_id": "resp_nope", "input": "x"}))).await;
    let e = r.assert_error(404, Some("previous_response_id"), "resp_nope");
    assert_eq!(e["code"], "previous_response_not_found");
    assert_eq!(e["type"], "invalid_request_error");

    // store: false is not kept
    let unkept = create(&h, json!({"input": "secret", "store": false})).await;
    assert_eq!(unkept["store"], false);
    let r = send(&h.app, post_json(RESPONSES, &json!({"previous_response_id": unkept["id"], "input": "x"}))).await;
    r.assert_error(404, Some("previous_response_id"), "not found");
    // a failed request is not kept either, and a refused one keeps nothing
    h.fake.set_mode(Mode::Reject(EngineError::Internal("kaput".into())));
    send(&h.app, post_json(RESPONSES, &json!({"input": "x"}))).await.assert_error(500, None, "kaput");
    assert_eq!(h.state.responses.len(), 4);
}

#[tokio::test]
async fn the_store_evicts_the_least_recently_used_beyond_its_size() {
    let h = harness(HttpConfig { response_store_size: 2, ..HttpConfig::default() });
    let a = create(&h, json!({"input": "a"})).await;
    let b = create(&h, json!({"input": "b"})).await;
    // continuing from a uses it: b is now the least recently used
    let c = create(&h, json!({"input": "c", "previous_response_id": a["id"]})).await;
    assert_eq!(h.state.responses.len(), 2);
    let r = send(&h.app, post_json(RESPONSES, &json!({"previous_response_id": b["id"], "input": "x"}))).await;
    r.assert_error(404, Some("previous_response_id"), "--response-store-size");
    create(&h, json!({"previous_response_id": a["id"], "input": "x", "store": false})).await;
    create(&h, json!({"previous_response_id": c["id"], "input": "x"})).await;
    // none kept
    let h = harness(HttpConfig { response_store_size: 0, ..HttpConfig::default() });
    let a = create(&h, json!({"input": "a"})).await;
    let r = send(&h.app, post_json(RESPONSES, &json!({"previous_response_id": a["id"], "input": "x"}))).await;
    r.assert_error(404, Some("previous_response_id"), "not found");
}

/// The events as (name, data), checking that each is named by its `type` and that the sequence
/// numbers count up from 0.
fn events(r: &Resp) -> Vec<(String, Value)> {
    let events: Vec<(String, Value)> = (r.sse().into_iter())
        .map(|(name, data)| (name.expect("every event is named"), serde_json::from_str(&data).unwrap()))
        .collect();
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

#[tokio::test]
async fn streams_the_response_events_in_order() {
    let h = default_harness();
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "a b c", "stream": true, "instructions": "I."}))).await;
    let events = events(&r);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names.iter().filter(|n| **n == "response.output_text.delta").count();
    assert_eq!(deltas, 7);
    let mut expected =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);

    let created = &events[0].1["response"];
    assert_eq!(
        (created["status"].as_str(), created["output"].clone(), created["usage"].clone()),
        (Some("in_progress"), json!([]), Value::Null)
    );
    assert_eq!(created["instructions"], "I.");
    let added = &events[2].1;
    assert_eq!(
        (added["output_index"].as_u64(), added["item"]["status"].as_str(), added["item"]["content"].clone()),
        (Some(0), Some("in_progress"), json!([]))
    );
    let item_id = added["item"]["id"].as_str().unwrap();
    assert_eq!(events[3].1["part"], json!({"type": "output_text", "text": "", "annotations": [], "logprobs": []}));
    let text: String = (events.iter())
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| {
            assert_eq!(
                (d["item_id"].as_str(), d["output_index"].as_u64(), d["content_index"].as_u64()),
                (Some(item_id), Some(0), Some(0))
            );
            assert_eq!(d["logprobs"], json!([]));
            d["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "0 image(s). You said: a b c");
    let n = events.len();
    assert_eq!(events[n - 4].1["text"], text.as_str());
    assert_eq!(events[n - 3].1["part"]["text"], text.as_str());
    assert_eq!(events[n - 2].1["item"]["status"], "completed");
    let done = &events[n - 1].1["response"];
    assert_eq!(done["id"], created["id"]);
    assert_eq!(done["status"], "completed");
    assert_eq!(output_text(done), text);
    assert_eq!(done["output"][0]["id"], item_id);
    assert_eq!(done["usage"]["input_tokens"], h.fake.last_chat.lock().unwrap().as_ref().unwrap().prompt_tokens);
    assert_eq!(done["usage"]["output_tokens"], 7);

    // a streamed response is kept too
    create(&h, json!({"previous_response_id": done["id"], "input": "more"})).await;
    assert!(seen_prompt(&h).contains("You said: a b c<｜end▁of▁sentence｜><|User|>: more"));
}

#[tokio::test]
async fn an_answer_cut_by_max_output_tokens_is_incomplete() {
    let h = default_harness();
    let v = create(&h, json!({"input": "a b c", "max_output_tokens": 2})).await;
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(output_text(&v), "0 image(s). ");
    assert_eq!(v["usage"]["output_tokens"], 2);

    let r =
        send(&h.app, post_json(RESPONSES, &json!({"input": "a b c", "max_output_tokens": 2, "stream": true}))).await;
    let events = events(&r);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(last["response"]["incomplete_details"]["reason"], "max_output_tokens");
}

#[tokio::test]
async fn a_failure_mid_stream_is_response_failed_and_before_it_a_status() {
    let h = default_harness();
    h.fake.set_mode(Mode::FailLater(EngineError::Internal("kaput".into())));
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "a", "stream": true}))).await;
    let events = events(&r);
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(last["response"]["status"], "failed");
    assert_eq!(last["response"]["error"]["code"], "internal_error");
    assert!(last["response"]["error"]["message"].as_str().unwrap().contains("kaput"));
    assert_eq!(h.state.responses.len(), 0, "a failed response is not kept");
    send(&h.app, post_json(RESPONSES, &json!({"input": "a"}))).await.assert_error(500, None, "kaput");
    h.fake.set_mode(Mode::Reject(EngineError::QueueFull { queued: 3, retry_after_s: 2 }));
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "a", "stream": true}))).await;
    r.assert_error(429, None, "busy");
    assert_eq!(r.header("retry-after"), "2");
}

#[tokio::test]
async fn refuses_what_janus_pro_cannot_do_and_bad_input_naming_the_field() {
    let h = default_harness();
    let image = |url: &str| json!({"type": "input_image", "image_url": url});
    let tool = json!([{"type": "function", "name": "f", "parameters": {}}]);
    let cases: Vec<(Value, &str, u16, &str)> = vec![
        (json!({"input": "x", "tools": tool}), "tools", 400, "tools are not supported"),
        (json!({"input": "x", "tool_choice": "required"}), "tool_choice", 400, "only `none` or `auto`"),
        (json!({"input": "x", "reasoning": {"effort": "high"}}), "reasoning", 400, "not a reasoning model"),
        (json!({"input": "x", "include": ["message.output_text.logprobs"]}), "include", 400, "no extra output"),
        (json!({"input": "x", "background": true}), "background", 400, "not supported"),
        (json!({"input": "x", "prompt": {"id": "pmpt_1"}}), "prompt", 400, "templates"),
        (json!({"input": "x", "truncation": "auto"}), "truncation", 400, "only `disabled`"),
        (json!({"input": "x", "seed": 1}), "seed", 400, "unknown field"),
        (json!({"input": "x", "metadata": [1]}), "metadata", 400, "must be an object"),
        (json!({}), "input", 400, "required"),
        (json!({"input": 5}), "input", 400, "a string or an array"),
        (json!({"input": []}), "input", 400, "at least one user message"),
        (
            json!({"input": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
            "input",
            400,
            "last message must be from the user",
        ),
        (json!({"input": "x", "max_output_tokens": 0}), "max_output_tokens", 400, "between 1 and 4096"),
        (json!({"input": "x", "temperature": 3}), "temperature", 400, "between 0 and 2"),
        (
            json!({"input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]}),
            "input[0].type",
            400,
            "`function_call_output` is not supported",
        ),
        (json!({"input": [{"role": "tool", "content": "x"}]}), "input[0].role", 400, "not a role"),
        (json!({"input": [{"content": "x"}]}), "input[0].role", 400, "required"),
        (json!({"input": [{"role": "user"}]}), "input[0].content", 400, "required"),
        (json!({"input": [{"role": "user", "content": "x", "name": "bob"}]}), "input[0].name", 400, "unknown field"),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
            "input[0].content[0].type",
            400,
            "`input_file` is not supported",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}),
            "input[0].content[0].text",
            400,
            "required",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a", "x": 1}]}]}),
            "input[0].content[0].x",
            400,
            "unknown field",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
            "input[0].content[0].file_id",
            400,
            "file ids are not supported",
        ),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}),
            "input[0].content[0].image_url",
            400,
            "required",
        ),
        (
            json!({"input": [{"role": "user", "content": "a"}, {"role": "user", "content": [image("ftp://x/y.png")]}]}),
            "input[1].content[0].image_url",
            400,
            "data:image/",
        ),
        (
            json!({"input": [{"role": "user", "content": [image("data:image/png;base64,aGVsbG8gd29ybGQ=")]}]}),
            "input[0].content[0].image_url",
            415,
            "unrecognised image format",
        ),
        (
            json!({"input": [{"role": "system", "content": [image("data:image/png;base64,AA")]}, {"role": "user", "content": "x"}]}),
            "input[0].content[0]",
            400,
            "only accepted in user messages",
        ),
        (
            json!({"input": [{"role": "user", "content": [image("https://example.com/cat.png")]}]}),
            "input[0].content[0].image_url",
            400,
            "--allow-remote-images",
        ),
    ];
    for (body, param, status, needle) in cases {
        let r = send(&h.app, post_json(RESPONSES, &body)).await;
        let e = r.assert_error(status, Some(param), needle);
        assert!(e["message"].as_str().unwrap().contains(&format!("`{param}`")) || param == "seed", "{e}");
    }
    // An image that does not decode is found while preparing: named all the same.
    let png = png_bytes(16, 16);
    let body = json!({"input": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                                {"role": "user", "content": [image(&data_url(&png[..png.len() - 20]))]}]});
    let e = send(&h.app, post_json(RESPONSES, &body)).await.assert_error(
        400,
        Some("input[2].content[0].image_url"),
        "cannot decode",
    );
    assert_eq!(e["code"], "invalid_image");
    // The instructions count against the limits like a system message.
    let limits = RequestLimits { max_message_chars: 10, ..RequestLimits::default() };
    let h = harness(HttpConfig { limits, ..HttpConfig::default() });
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "x", "instructions": "far too long a prompt"}))).await;
    r.assert_error(400, Some("instructions"), "--max-message-chars");
    let r = send(&h.app, post_json(RESPONSES, &json!({"input": "far too long a question"}))).await;
    r.assert_error(400, Some("input"), "--max-message-chars");
}
