//! A Server-Sent Events parser (the WHATWG event-stream format), fed the response body chunk by
//! chunk. Chunks split lines, and even UTF-8 characters, anywhere, so only complete lines are
//! decoded.
//!
//! The journal watch sends, per committed operation:
//!
//! ```text
//! event:operation
//! data:{"logIndex":2,"term":1,"operation":{"id":"d-0-2","type":"example.increment",...}}
//! id:2
//!
//! ```
//!
//! a comment line (`:`) every 15 s as keep-alive, and `event:error` with an error body before
//! it ends the stream on a problem (e.g. `COMPACTED`).

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `message` when absent.
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream so far (it carries over to later events).
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event-stream line exceeds {0} bytes")]
    LineTooLong(usize),
    #[error("an event-stream line is not UTF-8")]
    NotUtf8,
}

/// Incremental parser state.
#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    buf: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    last_id: Option<String>,
}

impl SseParser {
    /// `max_line` bounds the buffered partial line (a journal entry is one `data:` line; the
    /// sidecar caps operations at 4 MiB).
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            buf: Vec::new(),
            event: None,
            data: None,
            last_id: None,
        }
    }

    /// Feed one chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(offset) = self.buf[start..]
            .iter()
            .position(|b| *b == b'\n' || *b == b'\r')
        {
            let end = start + offset;
            // A line ends at CRLF, LF or CR. A CR at the very end of the buffer may be the first
            // half of a CRLF: wait for the next chunk to tell.
            let next = match self.buf[end] {
                b'\r' if end + 1 == self.buf.len() => break,
                b'\r' if self.buf[end + 1] == b'\n' => end + 2,
                _ => end + 1,
            };
            let line = std::str::from_utf8(&self.buf[start..end])
                .map_err(|_| SseError::NotUtf8)?
                .to_string();
            if let Some(event) = self.line(&line) {
                events.push(event);
            }
            start = next;
        }
        self.buf.drain(..start);
        if self.buf.len() > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        Ok(events)
    }

    /// Process one complete line; a blank line dispatches the event built so far.
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let event = self.event.take();
            // An event without data is not dispatched (the format's rule).
            let data = self.data.take()?;
            return Some(SseEvent {
                event: event.unwrap_or_else(|| "message".into()),
                data,
                id: self.last_id.clone(),
            });
        }
        if line.starts_with(':') {
            return None; // comment: the keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields do not matter here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: &str = "event:operation\ndata:{\"logIndex\":2}\nid:2\n\n:keep-alive\n\nevent:operation\ndata:{\"logIndex\":3}\nid:3\n\n";

    fn op(index: u64) -> SseEvent {
        SseEvent {
            event: "operation".into(),
            data: format!("{{\"logIndex\":{index}}}"),
            id: Some(index.to_string()),
        }
    }

    #[test]
    fn parses_the_journal_watch_format() {
        let mut p = SseParser::new(1024);
        assert_eq!(p.push(JOURNAL.as_bytes()).unwrap(), vec![op(2), op(3)]);
    }

    #[test]
    fn any_chunking_gives_the_same_events() {
        let bytes = JOURNAL.as_bytes();
        for size in 1..bytes.len() {
            let mut p = SseParser::new(1024);
            let mut events = Vec::new();
            for chunk in bytes.chunks(size) {
                events.extend(p.push(chunk).unwrap());
            }
            assert_eq!(events, vec![op(2), op(3)], "chunks of {size}");
        }
    }

    #[test]
    fn crlf_and_cr_line_ends_split_across_chunks() {
        let mut p = SseParser::new(1024);
        assert_eq!(p.push(b"data: a\r").unwrap(), vec![]);
        assert_eq!(p.push(b"\ndata: b\r\r").unwrap().len(), 0);
        // The CR ending "data: b" was followed by another CR: a blank line, so it dispatches
        // once the parser knows the second CR is not the start of a CRLF.
        let events = p.push(b"x").unwrap();
        assert_eq!(
            events,
            vec![SseEvent {
                event: "message".into(),
                data: "a\nb".into(),
                id: None
            }]
        );
    }

    #[test]
    fn utf8_split_inside_a_character_is_reassembled() {
        let text = "data:{\"id\":\"é€\"}\n\n".as_bytes();
        let mut p = SseParser::new(1024);
        let mut events = Vec::new();
        for b in text {
            events.extend(p.push(&[*b]).unwrap());
        }
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "{\"id\":\"é€\"}");
    }

    #[test]
    fn error_events_and_ids_carry_over() {
        let mut p = SseParser::new(1024);
        let events = p
            .push(b"id: 7\nevent: operation\ndata: x\n\nevent:error\ndata:{\"error\":{}}\n\n")
            .unwrap();
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[1].event, "error");
        assert_eq!(events[1].id.as_deref(), Some("7"));
        // An event without data is dropped.
        assert_eq!(p.push(b"event:operation\n\n").unwrap(), vec![]);
    }

    #[test]
    fn a_runaway_line_and_bad_utf8_are_errors() {
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data:0123456789"), Err(SseError::LineTooLong(8)));
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data:\xff\n"), Err(SseError::NotUtf8));
    }
}
