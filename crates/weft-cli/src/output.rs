//! How commands print what the API answered: an aligned table for people (the default),
//! or the JSON value itself as JSON or YAML for scripts (`-o json|yaml`).

use serde_json::Value;

/// `-o`: the output format of a command that prints records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns (a few key fields per record).
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
    /// The API's JSON as YAML.
    Yaml,
}

/// One column of a table: its header and the JSON path (dot-separated keys) of its value.
#[derive(Clone, Copy, Debug)]
pub struct Column {
    /// Header text (upper case by convention).
    pub header: &'static str,
    /// Where the value is in a record, e.g. `primary.cert.allowed`.
    pub path: &'static str,
}

/// Shorthand for a [`Column`] in the static column lists.
pub const fn col(header: &'static str, path: &'static str) -> Column {
    Column { header, path }
}

/// The value at a dot-separated `path` of `record` (`Null` when missing).
pub fn lookup<'a>(record: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(record, |v, k| &v[k])
}

/// One table cell: strings as they are, lists joined with commas, objects as compact
/// JSON, null or missing as empty. Line breaks and other control characters become
/// spaces, so one record stays on one line.
pub fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Object(_) | Value::Bool(_) | Value::Number(_) => v.to_string(),
    };
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Renders rows under headers in columns two spaces apart, each as wide as its widest
/// cell (counted in characters); the last column is not padded, so no line ends in
/// spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, w) in widths.iter().enumerate() {
            let c = row.get(i).map(String::as_str).unwrap_or("");
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(c);
            if i + 1 < widths.len() {
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(c.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table of `records` with `columns`.
pub fn records_table(columns: &[Column], records: &[Value]) -> String {
    let headers: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| columns.iter().map(|c| cell(lookup(r, c.path))).collect())
        .collect();
    table(&headers, &rows)
}

/// One record as a two-column FIELD / VALUE table of its top-level fields.
pub fn record_fields(record: &Value) -> String {
    let rows: Vec<Vec<String>> = match record.as_object() {
        Some(m) => m.iter().map(|(k, v)| vec![k.clone(), cell(v)]).collect(),
        None => vec![vec![String::new(), cell(record)]],
    };
    table(&["FIELD", "VALUE"], &rows)
}

/// `v` as JSON or YAML text (for [`Format::Table`] the caller prints its own table).
pub fn document(v: &Value, format: Format) -> String {
    match format {
        Format::Yaml => crate::yaml::to_yaml(v),
        Format::Json | Format::Table => {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            s.push('\n');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_and_lines_do_not_end_in_spaces() {
        let t = table(
            &["ID", "NAME", "ROLES"],
            &[
                vec!["1".into(), "web".into(), "".into()],
                vec!["22".into(), "a-longer-name".into(), "eng,ops".into()],
            ],
        );
        assert_eq!(
            t,
            "ID  NAME           ROLES\n1   web\n22  a-longer-name  eng,ops\n"
        );
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let t = table(
            &["A", "B"],
            &[vec!["ü".into(), "x".into()], vec!["ab".into(), "y".into()]],
        );
        assert_eq!(t, "A   B\nü   x\nab  y\n");
    }

    #[test]
    fn cells_render_every_json_type_on_one_line() {
        assert_eq!(cell(&json!(null)), "");
        assert_eq!(cell(&json!("a\nb\tc")), "a b c");
        assert_eq!(cell(&json!(["#eng", "@x"])), "#eng,@x");
        assert_eq!(cell(&json!(true)), "true");
        assert_eq!(cell(&json!(7)), "7");
        assert_eq!(cell(&json!({"k": "v"})), r#"{"k":"v"}"#);
    }

    #[test]
    fn records_pick_nested_paths_and_leave_missing_ones_empty() {
        let cols = [
            col("ID", "id"),
            col("CERT", "primary.cert.allowed"),
            col("X", "nope.x"),
        ];
        let recs = [json!({"id": "a", "primary": {"cert": {"allowed": false}}})];
        assert_eq!(records_table(&cols, &recs), "ID  CERT   X\na   false\n");
    }

    #[test]
    fn a_record_shows_as_fields() {
        let t = record_fields(&json!({"name": "web", "id": "s1"}));
        assert_eq!(t, "FIELD  VALUE\nid     s1\nname   web\n");
    }
}
