//! The first hour of a new user, offline: every value a person can get wrong ends in one line that
//! names the field (and what it allows) and the exit code of its kind, never a panic, a report of
//! nothing, or a Rust type name. Exit 2 is a configuration error, 1 a capture that cannot be read.

use std::process::{Command, Output};

use tests::{agent::binary, shared_dir};

fn flagprobe(args: &[&str]) -> Output {
    Command::new(binary()).args(args).env_remove("FLAGPROBE_LOG").output().unwrap()
}

/// Exit `code`, nothing on stdout, and exactly one line on stderr containing every one of `words`
/// and none of the words a Rust program leaks (type names, "panicked").
fn one_line(out: &Output, code: i32, words: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "exit {code}: {stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    for w in words {
        assert!(stderr.contains(w), "`{w}` in: {stderr}");
    }
    for leak in ["panicked", "u32", "u64", "usize", "i128", "f64", "BufferTooSmall", "Duration"] {
        assert!(!stderr.contains(leak), "`{leak}` leaked: {stderr}");
    }
    stderr
}

fn config(name: &str, text: &str) -> String {
    let path = std::env::temp_dir().join(format!("flagprobe-bad-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn durations_too_large_or_too_small_name_their_key_and_range() {
    for (value, name) in [("99999999999999999h", "huge"), ("18446744073709551616s", "u64"), ("0s", "zero")] {
        let file = config(name, &format!("alert-window = \"{value}\"\n"));
        let e = one_line(&flagprobe(&["check-config", &file]), 2, &["alert-window", "(line 1)", "1s", "24h"]);
        assert!(e.contains(value), "{e}");
        let _ = std::fs::remove_file(&file);
    }
    let capture = shared_dir().join("pcaps/zeek/syn-synack.pcap");
    let capture = capture.to_str().unwrap();
    for value in ["99999999999999999h", "0s"] {
        one_line(&flagprobe(&["replay", capture, "--flow-idle", value]), 2, &["flow-idle", value, "168h"]);
    }
    one_line(&flagprobe(&["run", "--iface", "lo", "--set", "detectors.scan.window-secs=99999999999999"]), 2, &["window-secs", "86400"]);
}

#[test]
fn an_unknown_key_is_reported_on_its_own_line_number() {
    let file = config("line", &format!("{}foo-bar = 1\n", "# a comment\n".repeat(9)));
    one_line(&flagprobe(&["check-config", &file]), 2, &["foo-bar", "(line 10)"]);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn an_invalid_log_filter_is_an_error_not_ignored() {
    let file = config("log", "");
    one_line(&flagprobe(&["check-config", &file, "--log", "flagprobe=[[loud"]), 2, &["--log", "flagprobe=[[loud"]);
    let out = Command::new(binary()).args(["check-config", &file]).env("FLAGPROBE_LOG", "=nope=").output().unwrap();
    one_line(&out, 2, &["=nope="]);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_number_out_of_range_names_the_range_in_words() {
    let file = config("range", "flow-capacity = 99999999999999999999\n");
    one_line(&flagprobe(&["check-config", &file]), 2, &["flow-capacity", "a whole number from 0 to 4294967295"]);
    let _ = std::fs::remove_file(&file);
    // A value given through --set has no line (nobody wrote one).
    let e = one_line(&flagprobe(&["run", "--iface", "lo", "--set", "detectors.scan.min-ports=-1"]), 2, &["detectors.scan.min-ports"]);
    assert!(!e.contains("(line"), "{e}");
}

#[test]
fn a_missing_or_foreign_input_is_one_line_before_any_report() {
    let missing = std::env::temp_dir().join("flagprobe-no-such-capture.pcap");
    let missing = missing.to_str().unwrap();
    let e = one_line(&flagprobe(&["replay", missing]), 2, &[missing]);
    assert_eq!(e.matches(missing).count(), 1, "the path once: {e}");
    let junk = std::env::temp_dir().join(format!("flagprobe-junk-{}.pcap", std::process::id()));
    std::fs::write(&junk, b"this is a text file, not a capture\n".repeat(4)).unwrap();
    let junk_name = junk.to_str().unwrap();
    let e = one_line(&flagprobe(&["replay", junk_name]), 1, &[junk_name, "not a pcap or pcapng file"]);
    assert_eq!(e.matches(junk_name).count(), 1, "the path once: {e}");
    let _ = std::fs::remove_file(&junk);
}
