//! Output for people (tables) and scripts (`--json`).

use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use serde_json::Value;

/// Prints a value as pretty JSON.
pub fn json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// Prints rows of JSON objects as a table with the given (header, field) columns.
pub fn table(rows: &[Value], columns: &[(&str, &str)]) {
    let mut table = Table::new();
    table.load_preset(UTF8_BORDERS_ONLY);
    table.set_header(columns.iter().map(|(h, _)| *h));
    for row in rows {
        table.add_row(columns.iter().map(|(_, field)| cell(row, field)));
    }
    println!("{table}");
}

/// Renders one field of an object for a table cell.
pub fn cell(row: &Value, field: &str) -> String {
    match row.get(field) {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// Prints `key: value` lines for one object.
pub fn details(obj: &Value) {
    if let Some(map) = obj.as_object() {
        let width = map.keys().map(String::len).max().unwrap_or(0);
        for (k, _) in map {
            println!("{k:<width$}  {}", cell(obj, k));
        }
    }
}
