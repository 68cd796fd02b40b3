//! `flagprobe sessions`: the record files read back (the live one, its rotated `.N.gz` files, or
//! any named), filtered, as a table or JSON lines. The 2007 analyst's question — which sessions
//! involved this address, and what flags did each side send? — is `flagprobe sessions --host ADDR`.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::IpAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use clap::{Args, ValueEnum};
use ipnet::IpNet;

use super::{SessionRecord, rotate::RotatingFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    Table,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct SessionsArgs {
    /// Record files (gzip'd too). Default: the `sessions` file of the config and its rotated files.
    pub files: Vec<PathBuf>,
    /// Sessions with this address (or inside this network) at either end.
    #[arg(long)]
    pub host: Option<String>,
    /// Sessions with this port at either end.
    #[arg(long)]
    pub port: Option<u16>,
    /// Sessions that started at or after this: a duration ago (`2h`) or a time (`2026-12-06T10:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Sessions in this Zeek conn_state (`REJ`, `SF`, ...; comma-separated for several).
    #[arg(long, value_delimiter = ',')]
    pub state: Vec<String>,
    /// Sessions whose history holds every one of these letters (upper case: the originator's).
    #[arg(long)]
    pub flags: Option<String>,
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
    /// The config file whose `sessions` key names the default file.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("invalid {field}: {problem}")]
    Invalid { field: &'static str, problem: String },
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("no record files: name them, or set `sessions` in the config file (--config)")]
    NoFiles,
}

/// What a record must match.
struct Filter {
    host: Option<IpNet>,
    port: Option<u16>,
    since: Option<f64>,
    states: Vec<String>,
    letters: String,
}

impl Filter {
    fn from(args: &SessionsArgs, now: SystemTime) -> Result<Self, QueryError> {
        let host = match &args.host {
            Some(h) => Some(match h.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => h
                    .parse::<IpNet>()
                    .map_err(|_| QueryError::Invalid { field: "host", problem: format!("`{h}` is not an address or a network") })?,
            }),
            None => None,
        };
        let since = match &args.since {
            Some(s) => Some(since(s, now).ok_or_else(|| QueryError::Invalid {
                field: "since",
                problem: format!("`{s}` is neither a duration (`90m`) nor a time (`2026-12-06T10:00:00Z`)"),
            })?),
            None => None,
        };
        Ok(Filter { host, port: args.port, since, states: args.state.clone(), letters: args.flags.clone().unwrap_or_default() })
    }

    fn matches(&self, r: &SessionRecord) -> bool {
        let addr_in = |h: &str| h.parse::<IpAddr>().is_ok_and(|ip| self.host.is_some_and(|n| n.contains(&ip)));
        (self.host.is_none() || addr_in(&r.orig_h) || addr_in(&r.resp_h))
            && self.port.is_none_or(|p| r.orig_p == p || r.resp_p == p)
            && self.since.is_none_or(|t| r.ts >= t)
            && (self.states.is_empty() || self.states.iter().any(|s| s.eq_ignore_ascii_case(&r.conn_state)))
            && self.letters.chars().all(|c| r.history.contains(c))
    }
}

/// Seconds since the epoch of `text`: a duration before `now`, or an RFC 3339 time.
fn since(text: &str, now: SystemTime) -> Option<f64> {
    let at = match humantime::parse_duration(text) {
        Ok(d) => now.checked_sub(d)?,
        Err(_) => humantime::parse_rfc3339_weak(text).ok()?,
    };
    Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

/// The files to read: those named (a live file brings its rotated ones), else `configured` (the
/// config file's `sessions`) and its rotated ones.
fn files(args: &SessionsArgs, configured: Option<&Path>) -> Result<Vec<PathBuf>, QueryError> {
    if !args.files.is_empty() {
        return Ok(args
            .files
            .iter()
            .flat_map(|f| if f.extension().is_some_and(|e| e == "gz") { vec![f.clone()] } else { RotatingFile::all_files(f) })
            .collect());
    }
    match configured {
        Some(p) => Ok(RotatingFile::all_files(p)),
        None => Err(QueryError::NoFiles),
    }
}

fn open(path: &Path) -> Result<Box<dyn BufRead>, QueryError> {
    let f = std::fs::File::open(path).map_err(|source| QueryError::Read { path: path.display().to_string(), source })?;
    let r: Box<dyn Read> =
        if path.extension().is_some_and(|e| e == "gz") { Box::new(flate2::read::MultiGzDecoder::new(f)) } else { Box::new(f) };
    Ok(Box::new(BufReader::new(r)))
}

/// `flagprobe sessions`: print the matching records to `out`; returns how many matched.
/// `configured`: the config file's `sessions` file, read when no files are named.
pub fn run(args: &SessionsArgs, configured: Option<&Path>, out: &mut dyn Write) -> Result<u64, QueryError> {
    let filter = Filter::from(args, SystemTime::now())?;
    let files = files(args, configured)?;
    let mut matched = 0;
    let mut skipped = 0;
    if args.format == QueryFormat::Table {
        let _ = writeln!(
            out,
            "{:<27} {:<12} {:<22} {:<22} {:<6} {:<12} {:>11} {:<11} FLAGS orig / resp",
            "TS", "UID", "ORIG", "RESP", "STATE", "HISTORY", "PKTS o/r", "CLOSE"
        );
    }
    for path in files {
        for line in open(&path)?.lines() {
            let line = line.map_err(|source| QueryError::Read { path: path.display().to_string(), source })?;
            let Ok(r) = serde_json::from_str::<SessionRecord>(&line) else {
                skipped += u64::from(!line.trim().is_empty());
                continue;
            };
            if !filter.matches(&r) {
                continue;
            }
            matched += 1;
            let _ = match args.format {
                QueryFormat::Json => writeln!(out, "{line}"),
                QueryFormat::Table => writeln!(out, "{}", row(&r)),
            };
        }
    }
    if skipped > 0 {
        eprintln!("flagprobe: {skipped} lines skipped: not session records");
    }
    Ok(matched)
}

fn endpoint(h: &str, p: u16) -> String {
    if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") }
}

fn flags(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(" ")
}

fn row(r: &SessionRecord) -> String {
    let ts = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_secs_f64(r.ts.max(0.0))).to_string();
    let mut s = format!(
        "{:<27} {:<12} {:<22} {:<22} {:<6} {:<12} {:>11} {:<11} {} / {}",
        ts,
        r.uid,
        endpoint(&r.orig_h, r.orig_p),
        endpoint(&r.resp_h, r.resp_p),
        r.conn_state,
        r.history,
        format!("{}/{}", r.orig_pkts, r.resp_pkts),
        r.close,
        flags(&r.orig_flags),
        flags(&r.resp_flags)
    );
    if let Some(c) = &r.reset_cause {
        s.push_str(&format!("\n{:<27} reset: {c}", ""));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(since("1h", now), Some(6400.0));
        assert_eq!(since("1970-01-01T00:00:05Z", now), Some(5.0));
        assert_eq!(since("yesterday", now), None);
    }
}
