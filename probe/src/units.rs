//! Settings written as text: durations (`1s`, `250ms`, `2m`) and networks (`192.0.2.0/24`, or a bare
//! address for one host). A leaf: the command line, the config file and replay all read values
//! with these, so `--poll-interval 1s` and `poll-interval = "1s"` mean the same thing.

use std::time::Duration;

use ipnet::IpNet;

/// `1s`, `250ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{text}` is not a duration like 1s or 500ms"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{text}` is not a duration"));
    }
    // `from_secs_f64` panics past u64::MAX seconds: a typo in a config file must be an error.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is longer than any duration flagprobe can use"))
}

/// The values a duration setting allows, as its error says them.
pub struct DurationRange {
    pub min: Duration,
    pub max: Duration,
    pub text: &'static str,
}

/// How often the kernel's maps are read.
pub const POLL_INTERVAL: DurationRange =
    DurationRange { min: Duration::from_millis(10), max: Duration::from_secs(3600), text: "between 10ms and 1h" };
/// How long a quiet flow keeps its slot (live and in replay alike): under a second a connection's
/// own pauses would end it; over a week no table would hold what it keeps.
pub const FLOW_IDLE: DurationRange =
    DurationRange { min: Duration::from_secs(1), max: Duration::from_secs(7 * 86400), text: "between 1s and 168h" };
/// How long one alert stands for its detector and key before an update.
pub const ALERT_WINDOW: DurationRange =
    DurationRange { min: Duration::from_secs(1), max: Duration::from_secs(86400), text: "between 1s and 24h" };
/// The live summary's interval; 0s turns it off.
pub const SUMMARY_INTERVAL: DurationRange =
    DurationRange { min: Duration::ZERO, max: Duration::from_secs(86400), text: "between 0s (off) and 24h" };

/// How often a long connection's record so far is written: at least a minute (each is a line per
/// open connection), at most a week.
pub const SESSIONS_INTERVAL: DurationRange =
    DurationRange { min: Duration::ZERO, max: Duration::from_secs(7 * 86400), text: "0s (off), or between 1m and 7d" };

/// A duration within `range`; out of it, an error that says the range.
pub fn parse_duration_in(text: &str, range: &DurationRange) -> Result<Duration, String> {
    let out_of_range = || format!("`{}` must be {}", text.trim(), range.text);
    // Too long to be a duration at all is out of range too: say the range, not the limit of time.
    let d = parse_duration(text).map_err(|e| if e.contains("longer than any") { out_of_range() } else { e })?;
    if d < range.min || d > range.max {
        return Err(out_of_range());
    }
    Ok(d)
}

/// A CIDR, or a bare address meaning a host route.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| format!("`{text}` is not a CIDR like 192.0.2.0/24"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("1d").is_err());
        assert!(parse_duration("99999999999999999h").is_err());
        assert!(parse_duration("18446744073709551616s").is_err());
    }

    #[test]
    fn ranges_are_checked_where_durations_are_read() {
        assert_eq!(parse_duration_in("2m", &FLOW_IDLE).unwrap(), Duration::from_secs(120));
        assert!(parse_duration_in("0s", &FLOW_IDLE).unwrap_err().contains("between 1s and 168h"));
        assert!(parse_duration_in("0s", &ALERT_WINDOW).is_err());
        assert!(parse_duration_in("99999999999999999h", &ALERT_WINDOW).is_err());
        assert_eq!(parse_duration_in("0s", &SUMMARY_INTERVAL).unwrap(), Duration::ZERO);
    }

    #[test]
    fn bare_address_is_a_host_net() {
        assert_eq!(parse_net("192.0.2.7").unwrap(), "192.0.2.7/32".parse::<IpNet>().unwrap());
        assert_eq!(parse_net("192.0.2.7/24").unwrap(), "192.0.2.0/24".parse::<IpNet>().unwrap());
    }
}
