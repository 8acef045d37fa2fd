//! What a daemon may submit: the rules every operation meets before it is proposed, whichever
//! way it came (the daemon API on this node, or a write forwarded by a follower, which is
//! checked again here rather than trusted: a peer holding the token could otherwise commit an
//! entry that every daemon's journal read stops at).

use raft_api::ErrorCode;
use raft_api::daemon::Operation;
use serde_json::Value;

use crate::journal::StoredOperation;

/// Longest accepted operation id, in bytes.
pub const MAX_ID_BYTES: usize = 256;

/// Why an operation is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OperationError {
    #[error("operation is {size} bytes; the limit (--max-operation-bytes) is {max}")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Invalid(String),
}

impl OperationError {
    pub fn code(&self) -> ErrorCode {
        match self {
            OperationError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            OperationError::Invalid(_) => ErrorCode::InvalidOperation,
        }
    }
}

/// Parse and validate a submitted operation's JSON body (`max_bytes`: `--max-operation-bytes`,
/// which bounds both the body as sent and the operation as stored, see [`stored_len`]). The
/// payload is stored as canonical JSON.
pub fn parse(body: &[u8], max_bytes: usize) -> Result<StoredOperation, OperationError> {
    if body.len() > max_bytes {
        return Err(OperationError::TooLarge {
            size: body.len(),
            max: max_bytes,
        });
    }
    let op: Operation = serde_json::from_slice(body)
        .map_err(|e| OperationError::Invalid(format!("malformed operation JSON: {e}")))?;
    if op.id.is_empty() {
        return Err(OperationError::Invalid("`id` must not be empty".into()));
    }
    if op.id.len() > MAX_ID_BYTES {
        return Err(OperationError::Invalid(format!(
            "`id` is {} bytes; at most {MAX_ID_BYTES} allowed",
            op.id.len()
        )));
    }
    if op.op_type.is_empty() {
        return Err(OperationError::Invalid("`type` must not be empty".into()));
    }
    let stored = StoredOperation {
        payload: op.payload.as_ref().map(canonical_json),
        id: op.id,
        op_type: op.op_type,
        daemon_id: op.daemon_id,
        timestamp: op.timestamp,
    };
    check_stored_len(&stored, max_bytes)?;
    Ok(stored)
}

/// The bytes an operation takes as stored: its strings (the payload in canonical form) and
/// its timestamp. Never more than the JSON body it came in, except where re-encoding lengthens
/// a number (`1e9` is stored as `1000000000.0`); the limit applies to both, so a follower and
/// its leader judge an operation's size alike.
pub fn stored_len(op: &StoredOperation) -> usize {
    op.id.len()
        + op.op_type.len()
        + op.payload.as_ref().map_or(0, String::len)
        + op.daemon_id.as_ref().map_or(0, String::len)
        + op.timestamp.map_or(0, |_| 8)
}

fn check_stored_len(op: &StoredOperation, max_bytes: usize) -> Result<(), OperationError> {
    let size = stored_len(op);
    if size > max_bytes {
        return Err(OperationError::TooLarge {
            size,
            max: max_bytes,
        });
    }
    Ok(())
}

/// Check an operation that arrived already parsed (a follower's forward) as [`parse`] checks a
/// daemon's body: within the size limit as stored, and exactly what `parse` makes of its own
/// JSON form, payload in canonical form included.
pub fn check_parsed(op: &StoredOperation, max_bytes: usize) -> Result<(), OperationError> {
    check_stored_len(op, max_bytes)?;
    let payload = match op.payload.as_deref() {
        None => None,
        Some(text) => Some(
            serde_json::from_str::<Value>(text)
                .map_err(|e| OperationError::Invalid(format!("payload is not valid JSON: {e}")))?,
        ),
    };
    let body = serde_json::to_vec(&Operation {
        id: op.id.clone(),
        op_type: op.op_type.clone(),
        payload,
        daemon_id: op.daemon_id.clone(),
        timestamp: op.timestamp,
    })
    .map_err(|e| OperationError::Invalid(format!("cannot encode the operation: {e}")))?;
    if parse(&body, usize::MAX)? != *op {
        return Err(OperationError::Invalid(
            "payload is not in canonical JSON form".into(),
        ));
    }
    Ok(())
}

/// JSON text with object keys sorted at every level and no whitespace: two payloads are the
/// same operation content exactly when these strings are equal.
pub fn canonical_json(value: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(inner) = map.get(k) {
                        write(inner, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": null}}"#)
                .unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[1,{"c":3,"d":2}]},"b":1}"#
        );
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": null, "y": [1, {"c": 3, "d": 2}]}, "b": 1}"#)
                .unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(canonical_json(&Value::String("q\"".into())), r#""q\"""#);
    }

    #[test]
    fn operations_are_validated_with_clear_reasons() {
        let ok = parse(br#"{"id":"t-1","type":"x","payload":{"b":2,"a":1}}"#, 1024).unwrap();
        assert_eq!(ok.payload.as_deref(), Some(r#"{"a":1,"b":2}"#));
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "malformed"),
            (br#"{"type":"x"}"#, "malformed"),
            (br#"{"id":"","type":"x"}"#, "`id`"),
            (br#"{"id":"a","type":""}"#, "`type`"),
            (br#"{"id":"a"}"#, "malformed"),
        ];
        for (body, needle) in cases {
            let err = parse(body, 1024).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidOperation);
            assert!(err.to_string().contains(needle), "{err}");
        }
        let long_id = format!(r#"{{"id":"{}","type":"x"}}"#, "a".repeat(257));
        let err = parse(long_id.as_bytes(), 4096).unwrap_err();
        assert!(err.to_string().contains("256"), "{err}");
        let big = parse(&[b' '; 2048], 1024).unwrap_err();
        assert_eq!(big.code(), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn a_forwarded_operation_passes_only_what_a_daemon_submit_would() {
        let ok = parse(
            br#"{"id":"t-1","type":"x","payload":{"b":2,"a":[1,{"d":null}]},"daemonId":"d"}"#,
            1024,
        )
        .unwrap();
        assert_eq!(check_parsed(&ok, 1024), Ok(()));
        let refused = |op: StoredOperation| check_parsed(&op, 1024).unwrap_err();
        let with = |f: &dyn Fn(&mut StoredOperation)| {
            let mut op = ok.clone();
            f(&mut op);
            op
        };
        for bad in [
            with(&|o| o.id.clear()),
            with(&|o| o.id = "i".repeat(MAX_ID_BYTES + 1)),
            with(&|o| o.op_type.clear()),
            with(&|o| o.payload = Some("{not json".into())),
            with(&|o| o.payload = Some(r#"{ "b": 1, "a": 2 }"#.into())),
            with(&|o| o.payload = Some(format!("{}{}", "[".repeat(500), "]".repeat(500)))),
        ] {
            assert_eq!(refused(bad).code(), ErrorCode::InvalidOperation);
        }
        let big = with(&|o| o.payload = Some(format!("\"{}\"", "y".repeat(2048))));
        assert_eq!(refused(big).code(), ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn the_size_limit_is_judged_alike_on_the_body_and_as_stored() {
        // Compact JSON: stored smaller than sent, so whatever a follower accepted passes again.
        let body = br#"{"id":"a","type":"t","payload":{"k":"v"}}"#;
        let op = parse(body, body.len()).unwrap();
        assert!(stored_len(&op) < body.len());
        assert_eq!(check_parsed(&op, body.len()), Ok(()));
        // Numbers that lengthen when stored are refused on both paths alike.
        let numbers = format!(
            r#"{{"id":"a","type":"t","payload":[{}1e9]}}"#,
            "1e9,".repeat(100)
        );
        let err = parse(numbers.as_bytes(), numbers.len()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PayloadTooLarge);
        let op = parse(numbers.as_bytes(), usize::MAX).unwrap();
        assert_eq!(
            check_parsed(&op, numbers.len()).unwrap_err().code(),
            ErrorCode::PayloadTooLarge
        );
    }
}
