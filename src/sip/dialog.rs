//! Dialogs as the UAC that set them up sees them (RFC 3261 §12.1.2): an INVITE's 2xx
//! (an IM session, a call) or a SUBSCRIBE's (a subscription) fixes the Call-ID, both
//! tags, the remote target (the peer's Contact) and the route set (the Record-Route
//! headers, reversed); every later request in the dialog takes the next local CSeq and
//! goes to the remote target along the route set (§12.2.1.1). A target-refresh request
//! or response moves the remote target (§12.2.1.2).
//!
//! What it does not do: send anything, or keep a UAS-side dialog (the endpoint answers
//! requests inside dialogs it did not set up by their Call-ID).

use super::message::{self, Message, Transaction, BRANCH_COOKIE};

/// A dialog set up by a request of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// Call-ID.
    pub call_id: String,
    /// Our (From) tag.
    pub local_tag: String,
    /// The peer's (To) tag: absent only for a dialog of a peer that sends none (RFC
    /// 2543), which RFC 3261 §12.1.2 lets us keep.
    pub remote_tag: Option<String>,
    /// Where requests in the dialog go: the Contact of the peer.
    pub remote_target: String,
    /// Route headers for requests in the dialog, in order.
    pub route_set: Vec<String>,
    /// The CSeq number of our last request in the dialog.
    pub local_seq: u32,
}

/// Why a response cannot set up a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialogError {
    /// A 2xx to a dialog-creating request without a Contact.
    #[error("a 2xx to {0} without a Contact: no target for requests in the dialog")]
    NoContact(&'static str),
    /// Not a 2xx (or no status at all).
    #[error("{0} was answered {1}, which sets up no dialog")]
    NotSuccess(&'static str, u16),
}

impl Dialog {
    /// The dialog the 2xx `resp` to our request `tx` (sent with From tag `local_tag`)
    /// sets up.
    pub fn from_response(tx: &Transaction, local_tag: &str, resp: &Message) -> Result<Dialog, DialogError> {
        let code = resp.status().unwrap_or(0);
        if !(200..300).contains(&code) {
            return Err(DialogError::NotSuccess(tx.method, code));
        }
        let contact = resp.header("contact").ok_or(DialogError::NoContact(tx.method))?;
        let mut route_set: Vec<String> =
            resp.header_values("record-route").flat_map(split_list).map(str::to_owned).collect();
        route_set.reverse();
        Ok(Dialog {
            call_id: tx.call_id.clone(),
            local_tag: local_tag.to_owned(),
            remote_tag: resp.header("to").and_then(message::tag_of).map(str::to_owned),
            remote_target: message::addr_uri(contact).to_owned(),
            route_set,
            local_seq: tx.cseq,
        })
    }

    /// The transaction of our next request in the dialog: the next CSeq, a new branch.
    pub fn next(&mut self, method: &'static str) -> Transaction {
        self.local_seq = self.local_seq.saturating_add(1);
        Transaction {
            branch: format!("{BRANCH_COOKIE}{}", message::token(16)),
            call_id: self.call_id.clone(),
            cseq: self.local_seq,
            method,
        }
    }

    /// Notes a request sent in the dialog outside [`Dialog::next`] (the retry of a
    /// challenged request takes the next CSeq of its own).
    pub fn sent(&mut self, tx: &Transaction) {
        self.local_seq = self.local_seq.max(tx.cseq);
    }

    /// A target-refresh request or response from the peer (re-INVITE, UPDATE, NOTIFY,
    /// their 2xx) moves the remote target to its Contact.
    pub fn refresh_target(&mut self, m: &Message) {
        if let Some(c) = m.header("contact") {
            self.remote_target = message::addr_uri(c).to_owned();
        }
    }

    /// Whether `m` (a request the peer sent) belongs to this dialog: same Call-ID, our
    /// tag as its To tag and the peer's as its From tag.
    pub fn owns(&self, m: &Message) -> bool {
        let call_id = m.header("call-id").map(str::trim);
        let to_tag = m.header("to").and_then(message::tag_of);
        let from_tag = m.header("from").and_then(message::tag_of);
        call_id == Some(self.call_id.as_str())
            && to_tag == Some(self.local_tag.as_str())
            && (self.remote_tag.is_none() || from_tag == self.remote_tag.as_deref())
    }
}

/// The entries of a comma-separated header value, commas inside `<…>` or quotes kept.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => depth += 1,
            '>' if !quoted => depth -= 1,
            ',' if !quoted && depth <= 0 => {
                parts.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(value[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Parsed};

    fn msg(text: &str) -> Message {
        match parse(text.as_bytes(), false).unwrap() {
            Parsed::Complete(m, _) => m,
            Parsed::Incomplete => unreachable!(),
        }
    }

    fn invite_tx() -> Transaction {
        Transaction { branch: "z9hG4bK1".into(), call_id: "c1".into(), cseq: 7, method: "INVITE" }
    }

    #[test]
    fn a_2xx_sets_up_the_dialog_with_the_route_set_reversed() {
        // Two Record-Route headers, one of them a list, as two proxies write them.
        let ok = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
             Record-Route: <sip:p2.lync.test;lr;transport=tls>, <sip:p1.lync.test;lr>\r\n\
             Record-Route: <sip:p0.ocs.test;lr>\r\nFrom: <sip:a@x>;tag=ours\r\n\
             To: <sip:b@x>;tag=theirs\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\n\
             Contact: <sip:b@10.0.0.9:5061;transport=tls>;+sip.instance=\"<urn:uuid:1>\"\r\nContent-Length: 0\r\n\r\n");
        let mut d = Dialog::from_response(&invite_tx(), "ours", &ok).unwrap();
        assert_eq!(d.remote_tag.as_deref(), Some("theirs"));
        assert_eq!(d.remote_target, "sip:b@10.0.0.9:5061;transport=tls");
        assert_eq!(
            d.route_set,
            ["<sip:p0.ocs.test;lr>", "<sip:p1.lync.test;lr>", "<sip:p2.lync.test;lr;transport=tls>"]
        );
        let m = d.next("MESSAGE");
        let bye = d.next("BYE");
        assert_eq!((m.cseq, bye.cseq, bye.call_id.as_str()), (8, 9, "c1"));
        assert_ne!(m.branch, bye.branch);
        assert!(bye.branch.starts_with(BRANCH_COOKIE));
    }

    #[test]
    fn no_dialog_without_a_2xx_and_a_contact_and_requests_are_matched_by_both_tags() {
        let no_contact =
            msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nTo: <sip:b@x>;tag=t\r\n\
             Call-ID: c1\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            Dialog::from_response(&invite_tx(), "ours", &no_contact),
            Err(DialogError::NoContact("INVITE"))
        );
        let busy = msg("SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nCall-ID: c1\r\n\
             CSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            Dialog::from_response(&invite_tx(), "ours", &busy),
            Err(DialogError::NotSuccess("INVITE", 486))
        );

        let ok = msg("SIP/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\nTo: <sip:b@x>;tag=theirs\r\n\
             Call-ID: c1\r\nCSeq: 7 SUBSCRIBE\r\nContact: <sip:b@h1>\r\nContent-Length: 0\r\n\r\n");
        let mut d = Dialog::from_response(&invite_tx(), "ours", &ok).unwrap();
        let notify = |call: &str, to: &str, from: &str| {
            msg(&format!(
                "NOTIFY sip:a@h SIP/2.0\r\nVia: SIP/2.0/TLS p;branch=z9hG4bK2\r\nFrom: <sip:b@x>;tag={from}\r\n\
                 To: <sip:a@x>;tag={to}\r\nCall-ID: {call}\r\nCSeq: 1 NOTIFY\r\nContact: <sip:b@h2>\r\n\
                 Content-Length: 0\r\n\r\n"
            ))
        };
        assert!(d.owns(&notify("c1", "ours", "theirs")));
        assert!(!d.owns(&notify("c1", "ours", "other")), "another fork's dialog");
        assert!(!d.owns(&notify("c1", "stranger", "theirs")));
        assert!(!d.owns(&notify("c2", "ours", "theirs")));
        d.refresh_target(&notify("c1", "ours", "theirs"));
        assert_eq!(d.remote_target, "sip:b@h2");
    }
}
