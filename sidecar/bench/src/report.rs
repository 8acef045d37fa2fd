//! Output of the results: the JSON report every subcommand ends with (also written to
//! `--json FILE`). The Markdown table of `compare` is in `table`.

use std::path::Path;

use serde::Serialize;

use crate::Failure;

pub(crate) fn report(value: &impl Serialize, json: Option<&Path>) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::runtime(e.to_string()))?;
    println!("{text}");
    if let Some(path) = json {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
