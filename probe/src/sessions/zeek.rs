//! A flow in Zeek's `conn.log` words: who the originator is, the `history` letters and the
//! `conn_state`, worked out from what the flow table holds (the letter log, per-side counts), with
//! Zeek's rules as its source states them, so users who know `conn.log` read our records with the
//! knowledge they have.

use probe_common::flow::{
    FlowEntry, LETTER_A as A, LETTER_CLASSES, LETTER_D as D, LETTER_F as F, LETTER_H as H, LETTER_R as R, LETTER_S as S, Side, letters,
};

/// Ports Zeek treats as "likely server ports" with its default scripts: the well-known range and
/// the ports its analyzers register above it (SOCKS, MQTT, squid, LDAP's global catalog, MySQL,
/// RDP, XMPP, PostgreSQL, Redis, IRC, HTTP's alternates, DNP3). A connection first seen from such
/// a port, without a SYN, had its roles guessed wrong: the server spoke first in the capture.
fn likely_server_port(port: u16) -> bool {
    port < 1024 || matches!(port, 1080 | 1883 | 3128 | 3268 | 3306 | 3389 | 5223 | 5432 | 6379 | 6666..=6669 | 8000 | 8080 | 8888 | 20000)
}

/// The originator and whether it had to be inferred (Zeek's `^`): the sender of the first packet,
/// unless that packet was not a SYN and came from a likely server port (with both ports likely,
/// only when it was not a SYN/ACK and its port is the lower), or it was a SYN/ACK answered by a
/// pure ACK or data (a handshake whose SYN the capture missed).
pub fn originator(e: &FlowEntry) -> (Side, bool) {
    // The first letter's side sent the first packet (every packet but flagless oddities has a
    // letter). Live, a flow kept in two CPUs' partitions whose first packets fell in the same
    // jiffy has its `initiator` from either; its merged letters still start with the SYN.
    let first = letters(e).next().map_or(Side::from_index(e.initiator), |(side, _)| side);
    let peer = first.other();
    let first_letter = |side: Side| letters(e).find(|(s, _)| *s == side).map(|(_, c)| c);
    let opened_with = first_letter(first);
    if opened_with == Some(S) {
        return (first, false);
    }
    let (sp, dp) = (e.key.endpoint(first).1, e.key.endpoint(peer).1);
    let from_server_port = likely_server_port(sp) && (!likely_server_port(dp) || (opened_with != Some(H) && sp < dp));
    let answered_syn_ack = opened_with == Some(H) && matches!(first_letter(peer), Some(A) | Some(D));
    if from_server_port || answered_syn_ack { (peer, true) } else { (first, false) }
}

/// Zeek's `history`: each side's first SYN (`S`), SYN/ACK (`H`), pure ACK (`A`), payload (`D`),
/// FIN (`F`) and RST (`R`) in the order they happened, upper case for the originator, after a `^`
/// when the originator was inferred.
pub fn history(e: &FlowEntry, orig: Side, flipped: bool) -> String {
    let mut out = String::with_capacity(13);
    if flipped {
        out.push('^');
    }
    for (side, class) in letters(e) {
        let c = LETTER_CLASSES[class as usize];
        out.push(if side == orig { c } else { c.to_ascii_lowercase() });
    }
    out
}

/// An endpoint's state when the connection is logged, as Zeek's TCP analyzer keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Inactive,
    SynSent,
    SynAckSent,
    /// Sent something without a SYN we saw.
    Partial,
    Established,
    Closed,
    Reset,
}

fn state(e: &FlowEntry, side: Side) -> State {
    let mine: Vec<u8> = letters(e).filter(|(s, _)| *s == side).map(|(_, c)| c).collect();
    let theirs: Vec<u8> = letters(e).filter(|(s, _)| *s != side).map(|(_, c)| c).collect();
    let pos = |v: &[u8], c: u8| v.iter().position(|x| *x == c);
    let has = |v: &[u8], c: u8| v.contains(&c);
    if let Some(r) = pos(&mine, R) {
        // A RST after this side's own FIN, when the peer closed too, leaves both closed: Zeek
        // logs such a connection SF (a stack resetting what the application already closed).
        if pos(&mine, F).is_some_and(|f| f < r) && has(&theirs, F) {
            return State::Closed;
        }
        return State::Reset;
    }
    if has(&mine, F) {
        return State::Closed;
    }
    let opened = has(&mine, S) || has(&mine, H);
    if opened && (has(&theirs, S) || has(&theirs, H)) {
        return State::Established;
    }
    if has(&mine, S) {
        return State::SynSent;
    }
    if has(&mine, H) {
        return State::SynAckSent;
    }
    if e.sides[side.index()].packets > 0 { State::Partial } else { State::Inactive }
}

/// Zeek's `conn_state` (S0, S1, SF, REJ, S2, S3, RSTO, RSTR, RSTOS0, RSTRH, SH, SHR, OTH), from
/// the two endpoints' states as Zeek's `conn_state` function reads them.
pub fn conn_state(e: &FlowEntry, orig: Side, history: &str) -> &'static str {
    let (os, rs) = (state(e, orig), state(e, orig.other()));
    let inactive = |s: State| matches!(s, State::Inactive | State::Partial);
    let no_payload = e.sides[0].data + e.sides[1].data == 0;
    match (os, rs) {
        (os, State::Reset) => {
            if matches!(os, State::SynSent | State::SynAckSent) || (os == State::Reset && no_payload) {
                "REJ"
            } else if inactive(os) {
                "RSTRH"
            } else {
                "RSTR"
            }
        }
        (State::Reset, rs) if inactive(rs) && syn_then_reset(history) => "RSTOS0",
        (State::Reset, rs) if inactive(rs) => "OTH",
        (State::Reset, _) => "RSTO",
        (State::Closed, State::Closed) => "SF",
        (State::Closed, rs) => {
            if inactive(rs) {
                "SH"
            } else {
                "S2"
            }
        }
        (os, State::Closed) => {
            if inactive(os) {
                "SHR"
            } else {
                "S3"
            }
        }
        (State::SynSent, State::Inactive) => "S0",
        (State::Established, State::Established) => "S1",
        _ => "OTH",
    }
}

/// Zeek's test for RSTOS0, `/\^?S[^HAFGIQ]*R.*/`: the originator's SYN, then its RST before it
/// sent a SYN/ACK, an ACK or a FIN.
fn syn_then_reset(history: &str) -> bool {
    let h = history.strip_prefix('^').unwrap_or(history);
    let Some(rest) = h.strip_prefix('S') else { return false };
    rest.find('R').is_some_and(|r| !rest[..r].contains(['H', 'A', 'F', 'G', 'I', 'Q']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::flags::{ACK, FIN, PSH, RST, SYN};
    use probe_common::flow::{Endpoints, FAMILY_V4, FlowKey, Segment, v4_bytes};

    /// A flow from `script`: (from client?, flags, payload) in order; the client is 10.0.0.2:40000,
    /// the server 10.0.0.1:`port`.
    fn flow(port: u16, script: &[(bool, u8, u32)]) -> (FlowEntry, Side) {
        let c = Endpoints { src: v4_bytes([10, 0, 0, 2]), dst: v4_bytes([10, 0, 0, 1]), sport: 40000, dport: port, family: FAMILY_V4 };
        let (key, client) = FlowKey::canonical(&c);
        let mut e = FlowEntry::default();
        for (i, (from_client, f, len)) in script.iter().enumerate() {
            let side = if *from_client { client } else { client.other() };
            if i == 0 {
                e.start(&key, side, 1);
            }
            e.apply(side, &Segment { flags: *f, ttl: 64, payload_len: *len, ip_len: 40 + len, now: 1 + i as u64, ..Default::default() });
        }
        (e, client)
    }

    fn zeek(e: &FlowEntry) -> (String, &'static str) {
        let (orig, flipped) = originator(e);
        let h = history(e, orig, flipped);
        let s = conn_state(e, orig, &h);
        (h, s)
    }

    #[test]
    fn a_whole_connection_is_sf_with_its_letters_in_order() {
        let (e, _) = flow(
            80,
            &[
                (true, SYN, 0),
                (false, SYN | ACK, 0),
                (true, ACK, 0),
                (true, ACK | PSH, 100),
                (false, ACK, 0),
                (false, ACK | PSH, 900),
                (true, FIN | ACK, 0),
                (false, FIN | ACK, 0),
                (true, ACK, 0),
            ],
        );
        assert_eq!(zeek(&e), ("ShADadFf".into(), "SF"));
    }

    #[test]
    fn refused_half_open_and_reset_connections() {
        assert_eq!(zeek(&flow(80, &[(true, SYN, 0), (false, RST | ACK, 0)]).0), ("Sr".into(), "REJ"));
        assert_eq!(zeek(&flow(80, &[(true, SYN, 0), (true, SYN, 0)]).0), ("S".into(), "S0"));
        assert_eq!(zeek(&flow(80, &[(true, SYN, 0), (false, SYN | ACK, 0), (true, RST, 0)]).0), ("ShR".into(), "RSTO"));
        assert_eq!(zeek(&flow(80, &[(true, SYN, 0), (true, RST, 0)]).0), ("SR".into(), "RSTOS0"));
        let reset_by_server = [(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0), (true, ACK | PSH, 5), (false, RST | ACK, 0)];
        assert_eq!(zeek(&flow(80, &reset_by_server).0), ("ShADr".into(), "RSTR"));
        assert_eq!(zeek(&flow(502, &[(true, ACK | PSH, 10), (false, RST, 0)]).0), ("Dr".into(), "RSTRH"));
    }

    /// The backscatter story: a SYN/ACK nobody here asked for, and our RST. From a port that is
    /// no likely server port, Zeek keeps the SYN/ACK's sender as originator: `Hr`, REJ. From one
    /// that is (the IRC port of the story), it makes us the originator: `^hR`, RSTO.
    #[test]
    fn backscatter_is_rej_or_rsto_by_the_senders_port() {
        let (e, _) = flow(44444, &[(false, SYN | ACK, 0), (true, RST, 0)]);
        assert_eq!(zeek(&e), ("Hr".into(), "REJ"));
        let (e, client) = flow(6667, &[(false, SYN | ACK, 0), (true, RST, 0)]);
        assert_eq!(zeek(&e), ("^hR".into(), "RSTO"));
        assert_eq!(originator(&e).0, client);
    }

    #[test]
    fn a_missed_syn_is_inferred() {
        let (e, client) = flow(
            44444,
            &[
                (false, SYN | ACK, 0),
                (true, ACK, 0),
                (true, ACK | PSH, 10),
                (false, ACK | PSH, 10),
                (true, FIN | ACK, 0),
                (false, FIN | ACK, 0),
            ],
        );
        assert_eq!(zeek(&e), ("^hADdFf".into(), "SF"));
        assert_eq!(originator(&e), (client, true));
    }

    #[test]
    fn a_reset_after_both_fins_leaves_the_connection_closed() {
        let script = [(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0), (true, FIN | ACK, 0), (false, FIN | ACK, 0), (true, RST, 0)];
        assert_eq!(zeek(&flow(80, &script).0), ("ShAFfR".into(), "SF"));
        let script = [(true, SYN, 0), (false, SYN | ACK, 0), (true, ACK, 0), (true, FIN | ACK, 0), (true, RST, 0)];
        assert_eq!(zeek(&flow(80, &script).0), ("ShAFR".into(), "RSTO"));
    }
}
