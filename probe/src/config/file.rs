//! The TOML file: loading it (`--config`, else the default path if it exists), `--set KEY=VALUE`
//! overrides on top, and turning a table into [`Settings`] with errors that name the key and line.

use std::path::{Path, PathBuf};

use super::{ConfigError, DEFAULT_CONFIG_PATH, Settings, invalid};

/// Parse config text; errors name the key path (`detectors.scan.min-ports`) and the line.
pub fn parse(text: &str, path: &str) -> Result<Settings, ConfigError> {
    parse_text(text, path, true)
}

/// `with_lines`: whether a line number means anything to the reader (not for text rendered from
/// `--set` and flags, whose lines nobody wrote).
fn parse_text(text: &str, path: &str, with_lines: bool) -> Result<Settings, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::File { path: path.into(), problem: one_line(&e.to_string()) })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // Newlines before the span, plus one: `lines()` would not count the line a span starts at
        // when it starts at the line's first byte (an unknown key), one too low.
        let line = inner.span().map(|s| text.as_bytes()[..s.start.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1);
        let at = line.filter(|_| with_lines).map(|l| format!(" (line {l})")).unwrap_or_default();
        if key.is_empty() || key == "." {
            ConfigError::File { path: path.into(), problem: format!("{}{at}", one_line(inner.message())) }
        } else {
            ConfigError::Invalid { field: format!("{key}{at}"), problem: one_line(inner.message()) }
        }
    })
}

/// A table (file, `--set` and flags merged) as settings; `what` names where it came from.
pub fn from_table(table: toml::Table, what: &str) -> Result<Settings, ConfigError> {
    let text = toml::to_string(&table).map_err(|e| ConfigError::File { path: what.into(), problem: one_line(&e.to_string()) })?;
    parse_text(&text, what, false)
}

fn one_line(s: &str) -> String {
    plain(&s.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "))
}

/// The deserializer's words for a person who never wrote Rust: no `u32` or `i128`, the range or
/// form instead.
fn plain(message: &str) -> String {
    const WORDS: &[(&str, &str)] = &[
        (" as i128", ""),
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list, like [\"a\", \"b\"]"),
    ];
    WORDS.iter().fold(message.to_string(), |m, (rust, words)| m.replace(rust, words))
}

/// The file named by `--config` (must exist), else the default path if it exists, else nothing;
/// then `--set KEY=VALUE` overrides on top. The file alone is checked first, so its errors keep
/// their line numbers.
/// `run`'s file: the one named, else the default one if it exists. (Replay reads only a file it
/// is given: its output must not depend on the machine it runs on.)
pub fn run_path(explicit: Option<&Path>) -> Option<PathBuf> {
    match explicit {
        Some(p) => Some(p.to_path_buf()),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => Some(PathBuf::from(DEFAULT_CONFIG_PATH)),
        None => None,
    }
}

/// The file at `path` (none: no file) with `--set` applied.
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<Loaded, ConfigError> {
    let path = path.map(Path::to_path_buf);
    let (text, name) = match &path {
        Some(p) => {
            let name = p.display().to_string();
            (std::fs::read_to_string(p).map_err(|e| ConfigError::File { path: name.clone(), problem: e.to_string() })?, name)
        }
        None => (String::new(), "(no config file)".to_string()),
    };
    parse(&text, &name)?;
    let file: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError::File { path: name.clone(), problem: one_line(&e.to_string()) })?;
    let mut table = file.clone();
    for set in sets {
        apply_set(&mut table, set)?;
    }
    if !sets.is_empty() {
        from_table(table.clone(), "--set")?;
    }
    Ok(Loaded { table, path, text, file })
}

/// The file's table with `--set` applied, where it came from, and the file's own text and table
/// (to place a later error on its line).
#[derive(Debug)]
pub struct Loaded {
    pub table: toml::Table,
    pub path: Option<PathBuf>,
    text: String,
    file: toml::Table,
}

impl Loaded {
    /// An error found after the table became settings (a range, a combination) names its key but
    /// no line: add the file's line when the value came from the file, not from a flag or `--set`
    /// (`merged`: the table the settings were made from).
    pub fn place(&self, e: ConfigError, merged: &toml::Table) -> ConfigError {
        let ConfigError::Invalid { field, problem } = e else { return e };
        let from_file =
            !field.contains("(line") && lookup(&self.file, &field).is_some() && lookup(&self.file, &field) == lookup(merged, &field);
        match line_of(&self.text, &field).filter(|_| from_file) {
            Some(line) => ConfigError::Invalid { field: format!("{field} (line {line})"), problem },
            None => ConfigError::Invalid { field, problem },
        }
    }
}

/// The value at dotted `key` in `table`.
fn lookup<'t>(table: &'t toml::Table, key: &str) -> Option<&'t toml::Value> {
    let mut parts = key.split('.');
    let first = table.get(parts.next()?)?;
    parts.try_fold(first, |v, k| v.get(k))
}

/// The line (from 1) where dotted `key` is assigned in TOML `text`: `a.b.c` is `c = ...` under
/// `[a.b]`; a top-level key comes before any section header.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim().to_string();
        } else if current == section
            && let Some(rest) = line.strip_prefix(name)
            && rest.trim_start().starts_with('=')
        {
            return Some(i + 1);
        }
    }
    None
}

/// `a.b.c=VALUE`: VALUE as TOML (number, boolean, array, quoted string), else as a bare string.
fn apply_set(table: &mut toml::Table, set: &str) -> Result<(), ConfigError> {
    let bad = |problem: &str| invalid(format!("--set {set}"), problem.to_string());
    let (key, raw) = set.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad("empty key segment"));
    }
    let mut at = table;
    for p in &parts[..parts.len() - 1] {
        let entry = at.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry.as_table_mut().ok_or_else(|| bad(&format!("`{p}` is not a section")))?;
    }
    at.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::XdpMode;

    #[test]
    fn a_full_file_parses() {
        let f = parse(
            r#"
            iface = ["eth1"]
            home-net = ["192.0.2.0/24"]
            poll-interval = "2s"
            xdp-mode = "generic"
            [detectors.scan]
            min-ports = 30
            [[detectors.rst-payload.signatures]]
            name = "acme"
            pattern = "ACME reset"
            severity = "high"
            explanation = "Our ACME appliance resets idle sessions with this text."
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(f.xdp_mode, Some(XdpMode::Generic));
        let d = f.detectors.unwrap();
        assert_eq!(d.scan.min_ports, 30);
        assert_eq!(d.rst_payload.signatures[0].name, "acme");
    }

    #[test]
    fn set_overrides_any_key_and_names_it_when_wrong() {
        let sets = ["detectors.scan.min-ports=7".to_string(), "poll-interval=250ms".to_string()];
        let f = from_table(load(None, &sets).unwrap().table, "--set").unwrap();
        assert_eq!(f.detectors.unwrap().scan.min_ports, 7);
        assert_eq!(f.poll_interval.as_deref(), Some("250ms"));
        let e = load(None, &["detectors.scan.min-ports=lots".to_string()]).unwrap_err().to_string();
        assert!(e.starts_with("invalid detectors.scan.min-ports:"), "no line number for a --set: {e}");
        let e = load(None, &["nonsense".to_string()]).unwrap_err().to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }

    #[test]
    fn a_range_error_is_placed_on_the_files_line_unless_a_flag_set_it() {
        let dir = std::env::temp_dir().join(format!("flagprobe-place-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.toml");
        std::fs::write(&path, "# site\nalert-window = \"0s\"\n\n[detectors.scan]\nwindow-secs = 0\n").unwrap();
        let loaded = load(Some(&path), &[]).unwrap();
        let placed = |field: &str, merged: &toml::Table| loaded.place(super::super::invalid(field, "bad"), merged).to_string();
        assert_eq!(placed("alert-window", &loaded.table), "invalid alert-window (line 2): bad");
        assert_eq!(placed("detectors.scan.window-secs", &loaded.table), "invalid detectors.scan.window-secs (line 5): bad");
        let mut flagged = loaded.table.clone();
        flagged.insert("alert-window".into(), toml::Value::String("0ms".into()));
        assert_eq!(placed("alert-window", &flagged), "invalid alert-window: bad", "a flag's value has no line");
        assert_eq!(placed("poll-interval", &loaded.table), "invalid poll-interval: bad", "not in the file");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_are_one_line_naming_the_key() {
        let e = parse("poll-interval = 5\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid poll-interval (line 1):"), "{e}");
        let e = parse("[detectors.scan]\nmin-ports = \"many\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid detectors.scan.min-ports (line 2):"), "{e}");
        let e = parse("colour = \"blue\"\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("colour") && !e.contains('\n'), "{e}");
        // An unknown key on line 10 is on line 10, not 9.
        let e = parse(&format!("{}foo-bar = 1\n", "# comment\n".repeat(9)), "t.toml").unwrap_err().to_string();
        assert!(e.contains("(line 10)"), "{e}");
        let e = parse("flow-capacity = 99999999999999999999\n", "t.toml").unwrap_err().to_string();
        assert!(e.contains("a whole number from 0 to 4294967295") && !e.contains("i128") && !e.contains("u32"), "{e}");
        let e = parse("[detectors]\nscan = 3\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("invalid detectors.scan"), "{e}");
        let e = parse("iface = [\n", "t.toml").unwrap_err().to_string();
        assert!(e.starts_with("t.toml:") && !e.contains('\n'), "{e}");
    }
}
