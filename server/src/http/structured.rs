//! Structured-output requests → [`ConstraintSpec`]: OpenAI's chat `response_format`, the
//! Responses API's `text.format` (the same with the `json_schema` fields flattened), and vLLM's
//! `structured_outputs` extension. Each is parsed here with errors naming the exact field; the
//! spec is compiled when the request is prepared (a spec that does not compile is a 400 there).

use janus::text::constraint::ConstraintSpec;
use serde_json::{Map, Value};

use super::ApiError;

/// OpenAI's `response_format` (chat; `flat`: the Responses API's `text.format`, whose
/// `json_schema` fields sit beside `type`). `None` for plain text.
pub fn response_format(v: Value, param: &str, flat: bool) -> Result<Option<ConstraintSpec>, ApiError> {
    let mut obj = object(v, param, "an object such as {\"type\": \"json_object\"}")?;
    let kind = match obj.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(ApiError::field(&format!("{param}.type"), "required: `text`, `json_object` or `json_schema`")),
    };
    let spec = match kind.as_str() {
        "text" => None,
        "json_object" => Some(ConstraintSpec::JsonObject),
        "json_schema" if flat => Some(json_schema(obj, param)?),
        "json_schema" => {
            let inner = obj
                .remove("json_schema")
                .ok_or_else(|| ApiError::field(&format!("{param}.json_schema"), "required with `type: json_schema`"))?;
            let inner_param = format!("{param}.json_schema");
            Some(json_schema(object(inner, &inner_param, "an object with `name` and `schema`")?, &inner_param)?)
        }
        other => {
            let why = format!("`{other}` is not a format; use `text`, `json_object` or `json_schema`");
            return Err(ApiError::field(&format!("{param}.type"), why));
        }
    };
    Ok(spec)
}

/// `{"name", "schema", "strict", "description"}`: the schema (any JSON object when absent).
fn json_schema(mut obj: Map<String, Value>, param: &str) -> Result<ConstraintSpec, ApiError> {
    for (key, kind) in [("name", "a string"), ("description", "a string")] {
        if obj.get(key).is_some_and(|v| !v.is_string() && !v.is_null()) {
            return Err(ApiError::field(&format!("{param}.{key}"), format!("must be {kind}")));
        }
    }
    if obj.get("strict").is_some_and(|v| !v.is_boolean() && !v.is_null()) {
        return Err(ApiError::field(&format!("{param}.strict"), "must be a boolean"));
    }
    match obj.remove("schema") {
        None | Some(Value::Null) => Ok(ConstraintSpec::JsonObject),
        Some(schema @ Value::Object(_)) => Ok(ConstraintSpec::JsonSchema(schema)),
        Some(_) => Err(ApiError::field(&format!("{param}.schema"), "must be a JSON Schema object")),
    }
}

/// vLLM's `structured_outputs`: exactly one of `choice`, `regex`, `grammar`, `json`,
/// `json_object`.
pub fn structured_outputs(v: Value, param: &str) -> Result<Option<ConstraintSpec>, ApiError> {
    let obj = object(v, param, "an object such as {\"choice\": [\"yes\", \"no\"]}")?;
    let mut specs = Vec::new();
    for (key, value) in obj {
        let p = format!("{param}.{key}");
        let spec = match (key.as_str(), value) {
            (_, Value::Null) => continue,
            ("choice", Value::Array(items)) => {
                let choices = (items.into_iter())
                    .map(|c| match c {
                        Value::String(s) => Ok(s),
                        _ => Err(ApiError::field(&p, "must be an array of strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                ConstraintSpec::Choice(choices)
            }
            ("regex", Value::String(r)) => ConstraintSpec::Regex(r),
            ("grammar", Value::String(g)) => ConstraintSpec::Lark(g),
            ("json", schema @ Value::Object(_)) => ConstraintSpec::JsonSchema(schema),
            ("json", Value::String(text)) => match serde_json::from_str(&text) {
                Ok(schema @ Value::Object(_)) => ConstraintSpec::JsonSchema(schema),
                _ => return Err(ApiError::field(&p, "must be a JSON Schema (an object, or its text)")),
            },
            ("json_object", Value::Bool(true)) => ConstraintSpec::JsonObject,
            ("json_object", Value::Bool(false)) => continue,
            ("choice" | "regex" | "grammar" | "json" | "json_object", _) => {
                return Err(ApiError::field(&p, "has the wrong type"));
            }
            (other, _) => {
                let why =
                    format!("`{other}` is not supported; use `choice`, `regex`, `grammar`, `json` or `json_object`");
                return Err(ApiError::field(&p, why));
            }
        };
        specs.push(spec);
    }
    match specs.len() {
        0 | 1 => Ok(specs.pop()),
        _ => Err(ApiError::field(param, "must hold only one of `choice`, `regex`, `grammar`, `json`, `json_object`")),
    }
}

fn object(v: Value, param: &str, expected: &str) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(obj) => Ok(obj),
        _ => Err(ApiError::field(param, format!("must be {expected}"))),
    }
}

/// The one constraint of a chat request: `response_format` or `structured_outputs`, not both;
/// and the field it came from (a spec that does not compile is that field's fault).
pub fn chat_constraint(
    format: Option<Value>,
    structured: Option<Value>,
) -> Result<(Option<ConstraintSpec>, &'static str), ApiError> {
    let format = match format {
        None | Some(Value::Null) => None,
        Some(v) => response_format(v, "response_format", false)?,
    };
    let structured = match structured {
        None | Some(Value::Null) => None,
        Some(v) => structured_outputs(v, "structured_outputs")?,
    };
    match (format, structured) {
        (Some(_), Some(_)) => Err(ApiError::field("structured_outputs", "cannot be combined with a `response_format`")),
        (None, Some(s)) => Ok((Some(s), "structured_outputs")),
        (f, None) => Ok((f, "response_format")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn openai_and_vllm_shapes() {
        let f = |v| chat_constraint(Some(v), None).unwrap().0;
        assert_eq!(f(json!({"type": "text"})), None);
        assert_eq!(f(json!({"type": "json_object"})), Some(ConstraintSpec::JsonObject));
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let got = f(json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}));
        assert_eq!(got, Some(ConstraintSpec::JsonSchema(schema.clone())));
        let flat = response_format(json!({"type": "json_schema", "name": "x", "schema": schema}), "text.format", true);
        assert_eq!(flat.unwrap(), Some(ConstraintSpec::JsonSchema(schema)));
        let s = |v| chat_constraint(None, Some(v)).unwrap().0;
        assert_eq!(s(json!({"choice": ["yes", "no"]})), Some(ConstraintSpec::Choice(vec!["yes".into(), "no".into()])));
        assert_eq!(s(json!({"regex": "[0-9]+"})), Some(ConstraintSpec::Regex("[0-9]+".into())));
        assert_eq!(s(json!({"grammar": "start: \"a\""})), Some(ConstraintSpec::Lark("start: \"a\"".into())));
        assert_eq!(
            s(json!({"json": "{\"type\": \"object\"}"})),
            Some(ConstraintSpec::JsonSchema(json!({"type": "object"})))
        );
    }

    #[test]
    fn errors_name_the_field() {
        let param = |r: Result<(Option<ConstraintSpec>, &str), ApiError>| r.unwrap_err().param.unwrap_or_default();
        assert_eq!(param(chat_constraint(Some(json!({"type": "yaml"})), None)), "response_format.type");
        assert_eq!(param(chat_constraint(Some(json!({"type": "json_schema"})), None)), "response_format.json_schema");
        let bad_schema = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 5}});
        assert_eq!(param(chat_constraint(Some(bad_schema), None)), "response_format.json_schema.schema");
        assert_eq!(param(chat_constraint(None, Some(json!({"choice": [1]})))), "structured_outputs.choice");
        assert_eq!(param(chat_constraint(None, Some(json!({"regex": "a", "choice": ["b"]})))), "structured_outputs");
        assert_eq!(param(chat_constraint(None, Some(json!({"xml": "a"})))), "structured_outputs.xml");
        let both = chat_constraint(Some(json!({"type": "json_object"})), Some(json!({"regex": "a"})));
        assert_eq!(param(both), "structured_outputs");
    }
}
