//! TOML for engine configs: a renderer in the layout upstream's go-toml writes (keys sorted, plain
//! keys before tables, each table header after a blank line and indented two spaces per level),
//! table navigation by key path, and a comment-keeping edit of one top-level key.
//!
//! The `toml` crate parses into plain tables and forgets comments, so a file we only need to add
//! one top-level key to (containerd's `imports`) is edited as text instead, and the edit is
//! accepted only if the result parses to exactly the expected table.

use anyhow::{Result, anyhow, bail};
use toml::{Table, Value};

/// Parse TOML text; `what` names the source in the error.
pub fn parse(text: &str, what: &str) -> Result<Table> {
    text.parse::<Table>()
        .map_err(|e| anyhow!("unable to parse {what}: {}", first_line(&e.to_string())))
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// The whole document, ending in a newline (or empty for an empty table).
pub fn render(table: &Table) -> String {
    let mut out = String::new();
    render_into(&mut out, table, "", 0);
    match out.strip_prefix('\n') {
        Some(rest) => rest.to_owned(),
        None => out,
    }
}

fn render_into(out: &mut String, table: &Table, prefix: &str, depth: usize) {
    let indent = "  ".repeat(depth);
    for (k, v) in table {
        if !is_table(v) && !is_table_array(v) {
            out.push_str(&format!("{indent}{} = {v}\n", key_text(k)));
        }
    }
    for (k, v) in table {
        let name = if prefix.is_empty() {
            key_text(k)
        } else {
            format!("{prefix}.{}", key_text(k))
        };
        match v {
            Value::Table(t) => {
                out.push_str(&format!("\n{indent}[{name}]\n"));
                render_into(out, t, &name, depth + 1);
            }
            Value::Array(a) if is_table_array(v) => {
                for item in a {
                    if let Value::Table(t) = item {
                        out.push_str(&format!("\n{indent}[[{name}]]\n"));
                        render_into(out, t, &name, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_table(v: &Value) -> bool {
    matches!(v, Value::Table(_))
}

fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::Array(a) if !a.is_empty() && a.iter().all(is_table))
}

/// A key as TOML writes it: bare when it can be, quoted otherwise.
pub fn key_text(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

/// The value at a key path, if every step exists.
pub fn get<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut t = table;
    for p in parents {
        t = t.get(*p)?.as_table()?;
    }
    t.get(*last)
}

/// The table at a key path, if every step exists and is a table.
pub fn get_table<'a>(table: &'a Table, path: &[&str]) -> Option<&'a Table> {
    match path.is_empty() {
        true => Some(table),
        false => get(table, path)?.as_table(),
    }
}

/// The table at a key path, created where missing; a non-table on the way is an error.
pub fn table_mut<'a>(table: &'a mut Table, path: &[&str]) -> Result<&'a mut Table> {
    let mut t = table;
    for (i, p) in path.iter().enumerate() {
        let entry = t
            .entry((*p).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        t = match entry {
            Value::Table(next) => next,
            _ => bail!("{} is not a table", path[..=i].join(".")),
        };
    }
    Ok(t)
}

/// Remove the value at a key path, then every table on the path that this left empty.
pub fn remove_pruning(table: &mut Table, path: &[&str]) -> Option<Value> {
    let (first, rest) = path.split_first()?;
    if rest.is_empty() {
        return table.remove(*first);
    }
    let child = table.get_mut(*first)?.as_table_mut()?;
    let removed = remove_pruning(child, rest);
    if removed.is_some() && child.is_empty() {
        table.remove(*first);
    }
    removed
}

/// `text` with the top-level key `key` set to `value` (None: removed), keeping every comment and
/// every other line; None when the text cannot be edited safely (the caller then re-renders).
pub fn set_root_key(text: &str, key: &str, value: Option<&Value>) -> Option<String> {
    let mut expected = text.parse::<Table>().ok()?;
    match value {
        Some(v) => expected.insert(key.to_owned(), v.clone()),
        None => expected.remove(key),
    };
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    if let Some(last) = lines.last_mut()
        && !last.ends_with('\n')
    {
        last.push('\n');
    }
    let root_end = lines
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .unwrap_or(lines.len());
    let new_line = value.map(|v| format!("{} = {v}\n", key_text(key)));
    match lines[..root_end]
        .iter()
        .position(|l| line_key(l) == Some(key))
    {
        Some(start) => {
            // A multi-line value ends at the first line that completes it.
            let end =
                (start..root_end).find(|&j| lines[start..=j].concat().parse::<Table>().is_ok())?;
            lines.splice(start..=end, new_line);
        }
        None => {
            let line = new_line?;
            let after = lines[..root_end]
                .iter()
                .position(|l| line_key(l) == Some("version"))
                .map_or(0, |i| i + 1);
            lines.insert(after, line);
        }
    }
    let edited = lines.concat();
    (edited.parse::<Table>().ok()? == expected).then_some(edited)
}

/// The key a `key = value` line defines, bare or quoted.
fn line_key(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    let k = k
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .unwrap_or(k);
    (!k.is_empty() && !k.starts_with('#')).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_quoted_only_when_needed() {
        assert_eq!(key_text("runc"), "runc");
        assert_eq!(
            key_text("io.containerd.grpc.v1.cri"),
            "\"io.containerd.grpc.v1.cri\""
        );
        assert_eq!(key_text(""), "\"\"");
    }

    #[test]
    fn render_round_trips_arrays_of_tables_and_odd_values() {
        let text = "a = 1\nb = \"x\\\"y\"\nd = 1979-05-27T07:32:00Z\n[[t.list]]\nk = 1\n[[t.list]]\nk = 2\n[u]\nv = [{x = 1}]\n";
        let t = parse(text, "t").unwrap();
        assert_eq!(parse(&render(&t), "t").unwrap(), t);
    }

    #[test]
    fn set_root_key_refuses_what_it_cannot_edit_safely() {
        // A key inside a multi-line string looks like a root key line: the check catches it.
        let text = "s = \"\"\"\nimports = 1\n\"\"\"\n";
        let v = Value::Integer(2);
        let out = set_root_key(text, "imports", Some(&v));
        if let Some(out) = out {
            let t = parse(&out, "t").unwrap();
            assert_eq!(t["imports"].as_integer(), Some(2));
            assert_eq!(t["s"].as_str(), Some("imports = 1\n"));
        }
        assert!(set_root_key("not toml [", "k", Some(&v)).is_none());
    }

    #[test]
    fn remove_pruning_drops_emptied_parents_only() {
        let mut t = parse("[a.b]\nc = 1\n[a.d]\ne = 2\n", "t").unwrap();
        assert!(remove_pruning(&mut t, &["a", "b", "c"]).is_some());
        assert_eq!(render(&t), "[a]\n\n  [a.d]\n    e = 2\n");
        assert!(remove_pruning(&mut t, &["a", "x"]).is_none());
    }
}
