//! Where alerts go: stdout (text or JSON lines), an appended JSON-lines file, syslog, and the
//! recent list behind `/alerts`. A reload swaps the outputs in place, and reopens the file (what
//! logrotate's `postrotate` relies on).

use std::{collections::VecDeque, io::Write, path::Path, sync::Mutex};

use serde::{Deserialize, Serialize};

use prometheus::IntCounterVec;

use super::{
    Alert,
    syslog::{SyslogConfig, SyslogSender},
};

/// The `alert-format` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertFormat {
    /// Text on a terminal, JSON lines otherwise.
    #[default]
    Auto,
    Text,
    Json,
    Off,
}

impl AlertFormat {
    pub fn resolve(self) -> TerminalFormat {
        use std::io::IsTerminal;
        match self {
            AlertFormat::Auto if std::io::stdout().is_terminal() => TerminalFormat::Text,
            AlertFormat::Auto | AlertFormat::Json => TerminalFormat::Json,
            AlertFormat::Text => TerminalFormat::Text,
            AlertFormat::Off => TerminalFormat::Off,
        }
    }
}

/// How the terminal sink writes alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalFormat {
    Text,
    Json,
    Off,
}

/// Where alerts go: stdout, an appended JSON-lines file, syslog, and the recent list for `/alerts`.
pub struct AlertSinks {
    outputs: Mutex<Outputs>,
    recent: Mutex<VecDeque<Alert>>,
    recent_max: usize,
    /// `flagprobe_syslog_messages_total`, handed to each syslog sender.
    syslog_outcomes: IntCounterVec,
}

struct Outputs {
    terminal: TerminalFormat,
    file: Option<std::fs::File>,
    syslog: Option<(SyslogConfig, SyslogSender)>,
}

impl AlertSinks {
    /// `file` is opened for appending (created if missing, never truncated); the syslog sender
    /// connects on the first alert.
    pub fn new(
        terminal: TerminalFormat,
        file: Option<&Path>,
        syslog: Option<&SyslogConfig>,
        syslog_outcomes: IntCounterVec,
    ) -> std::io::Result<Self> {
        let file = file.map(crate::owned_files::open_append).transpose()?;
        let syslog = syslog.map(|c| (c.clone(), SyslogSender::start(c, syslog_outcomes.clone())));
        Ok(AlertSinks {
            outputs: Mutex::new(Outputs { terminal, file, syslog }),
            recent: Mutex::new(VecDeque::new()),
            recent_max: 1000,
            syslog_outcomes,
        })
    }

    /// Switch outputs (a reload): the file is opened again (first, so a failure changes nothing);
    /// a syslog target that did not change keeps its sender and connection.
    pub fn reconfigure(&self, terminal: TerminalFormat, file: Option<&Path>, syslog: Option<&SyslogConfig>) -> std::io::Result<()> {
        let file = file.map(crate::owned_files::open_append).transpose()?;
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        let running = outputs.syslog.take();
        let (kept, replaced) = match running {
            Some((config, sender)) if Some(&config) == syslog => (Some((config, sender)), None),
            other => (None, other),
        };
        let syslog = kept.or_else(|| syslog.map(|c| (c.clone(), SyslogSender::start(c, self.syslog_outcomes.clone()))));
        *outputs = Outputs { terminal, file, syslog };
        drop(outputs);
        // A replaced sender drains its queue for a moment: not while alerts wait for the lock.
        drop(replaced);
        Ok(())
    }

    pub fn emit(&self, alert: &Alert) {
        let mut outputs = self.outputs.lock().unwrap_or_else(|e| e.into_inner());
        match outputs.terminal {
            TerminalFormat::Text => {
                let _ = std::io::stdout().lock().write_all(alert.to_text().as_bytes());
            }
            TerminalFormat::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", alert.to_json_line());
                let _ = out.flush();
            }
            TerminalFormat::Off => {}
        }
        if let Some(f) = outputs.file.as_mut()
            && let Err(e) = writeln!(f, "{}", alert.to_json_line())
        {
            tracing::warn!(error = %e, "writing the alerts file");
        }
        if let Some((_, sender)) = &outputs.syslog {
            sender.send(alert);
        }
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= self.recent_max {
            recent.pop_front();
        }
        recent.push_back(alert.clone());
    }

    /// The most recent alerts, oldest first, as a JSON array.
    pub fn recent_json(&self) -> String {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::to_string(&recent.iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
    }
}
