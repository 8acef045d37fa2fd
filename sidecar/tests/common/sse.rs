//! Reading Server-Sent Events as the journal watch sends them.

/// The value of field `name` (with its colon, e.g. `"data:"`) in one event's text.
pub fn field(event: &str, name: &str) -> Option<String> {
    event
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
        .map(str::to_string)
}
