//! flagprobe's integration tests, in one test binary (as aya does): the 2-core build links probe,
//! aya, tokio and axum once instead of once per file. One module per subject; names read as
//! `pcap_verdicts::s03_...`, so `cargo xtask test pcap_verdicts` still picks a subject.
//!
//! Tests in one binary run in parallel. Each network test has its own namespaces (no shared
//! state), and a test that would disturb the others' timing (a max-rate flood, the demo with its
//! own labs) holds the labs exclusively: see `tests::lab::exclusive`.

mod bad_input;
mod capabilities;
mod config_reload;
mod demo;
mod deploy;
mod detect_live;
mod external;
mod flood;
mod inline_drop;
mod kernel_load;
mod kernel_test_run;
mod layout;
mod live_traffic;
mod package;
mod pcap_verdicts;
mod pcap_wire;
mod prometheus_scrape;
mod replay;
mod replay_mutations;
mod replay_settings;
mod sensor;
mod sessions;
mod state_files;
mod syslog;
mod tunnels;
mod under_systemd;
