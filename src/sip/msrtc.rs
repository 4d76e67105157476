//! Microsoft's presence dialect on the wire, as Office Communicator 2007 R2 and Lync
//! clients speak it to OCS 2007 R2 and Lync Server (MS-PRES, MS-SIP; pidgin-sipe, the one
//! open client, for what the specifications leave open):
//!
//! - **Publishing** is a `SERVICE` request to the user's own URI carrying an
//!   `application/msrtc-category-publish+xml` document: `publication` elements, each a
//!   category (`state`, `note`) with an instance, a container (who may see it: 2 and 3
//!   are the inputs of the state the server aggregates, 200/300/400 the company, team
//!   and personal access levels) and the `version` the client last saw. A stale version
//!   is answered `409` with an `application/msrtc-fault+xml` body naming, per failed
//!   operation (its position, from 1), the server's current version.
//! - **Watching** is a *batched* `SUBSCRIBE` to the watcher's own URI
//!   (`Require: adhoclist, categoryList`, `Supported: eventlist`) whose
//!   `application/msrtc-adrl-categorylist+xml` body lists the contacts and the categories
//!   wanted. The server answers with NOTIFYs of `application/msrtc-event-categories+xml`
//!   documents, or `multipart/related` ones indexed by an `application/rlmi+xml` list.
//! - **Another pool**: a contact homed on a pool that cannot serve the subscription comes
//!   back in the rlmi list with `state="resubscribe"` and that pool's `poolFqdn`; the
//!   client subscribes again, with the pool as Request-URI and To, through its own
//!   connection.
//!
//! Wire layer: builders and small, bounded scanners of these documents (no general XML
//! parser: attribute values are read as written, text is escaped and unescaped for the
//! five predefined entities). Both the user agent ([`crate::kinds::sip_presence`]) and
//! the demo lab's pools use it.

/// `Content-Type` of a category publication.
pub const PUBLISH_TYPE: &str = "application/msrtc-category-publish+xml";
/// `Content-Type` of a batched subscription's body.
pub const BATCH_TYPE: &str = "application/msrtc-adrl-categorylist+xml";
/// `Content-Type` of a categories document.
pub const CATEGORIES_TYPE: &str = "application/msrtc-event-categories+xml";
/// `Content-Type` of a fault (a `409` to a publication).
pub const FAULT_TYPE: &str = "application/msrtc-fault+xml";
/// The containers a personal note is published to (company, team, personal).
pub const NOTE_CONTAINERS: [u32; 3] = [200, 300, 400];
/// The containers a user-set state is published to (the aggregation's inputs).
pub const STATE_CONTAINERS: [u32; 2] = [2, 3];
/// The instance of a user-set state.
pub const USER_STATE_INSTANCE: u32 = 0x2000_0000;
/// Availability "Available".
pub const AVAILABLE: u32 = 3500;
/// Elements read from one document, at most.
const MAX_ELEMENTS: usize = 256;

/// One `publication` of a category publication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// `categoryName`.
    pub category: String,
    /// `instance`.
    pub instance: u32,
    /// `container`.
    pub container: u32,
    /// `version`.
    pub version: u32,
    /// The category document inside.
    pub content: String,
}

impl Publication {
    /// What the server keeps versions by: category, instance, container.
    pub fn key(&self) -> String {
        key(&self.category, self.instance, self.container)
    }
}

/// The version key of a publication.
pub fn key(category: &str, instance: u32, container: u32) -> String {
    format!("{category}/{instance}/{container}")
}

/// Escapes `text` for XML character data and attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '&' => s.push_str("&amp;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            c => s.push(c),
        }
    }
    s
}

/// The publications a test user makes: its state "Available" (user-set, containers 2
/// and 3) and `note` (containers 200, 300, 400), each at the version `version(key)`
/// says; with the keys in the order of the document (a fault's indexes refer to them).
pub fn publish_body(uri: &str, note: &str, version: impl Fn(&str) -> u32) -> (String, Vec<String>) {
    let mut keys = Vec::new();
    let mut s = format!(
        "<publish xmlns=\"http://schemas.microsoft.com/2006/09/sip/rich-presence\"><publications uri=\"{}\">",
        escape(uri)
    );
    for c in STATE_CONTAINERS {
        let k = key("state", USER_STATE_INSTANCE, c);
        s.push_str(&format!(
            "<publication categoryName=\"state\" instance=\"{USER_STATE_INSTANCE}\" container=\"{c}\" version=\"{}\" expireType=\"static\">\
             <state xmlns=\"http://schemas.microsoft.com/2006/09/sip/state\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
             manual=\"true\" xsi:type=\"userState\"><availability>{AVAILABLE}</availability></state></publication>",
            version(&k)
        ));
        keys.push(k);
    }
    for c in NOTE_CONTAINERS {
        let k = key("note", 0, c);
        s.push_str(&format!(
            "<publication categoryName=\"note\" instance=\"0\" container=\"{c}\" version=\"{}\" expireType=\"static\">\
             <note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\"><body type=\"personal\" uri=\"\">{}</body></note></publication>",
            version(&k),
            escape(note)
        ));
        keys.push(k);
    }
    s.push_str("</publications></publish>");
    (s, keys)
}

/// The value of attribute `name` in the start tag `tag` (as written, quotes removed).
fn attr<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = tag;
    while let Some(i) = rest.find(name) {
        let before_ok = i == 0 || rest.as_bytes()[i - 1].is_ascii_whitespace();
        let after = &rest[i + name.len()..];
        if before_ok {
            if let Some(v) = after.strip_prefix("=\"") {
                return v.split('"').next();
            }
        }
        rest = &rest[i + name.len()..];
    }
    None
}

/// The start tags `<element …>` in `doc`, each with what follows it up to the next
/// `</element>` (at most [`MAX_ELEMENTS`]).
fn elements<'a>(doc: &'a str, element: &str) -> Vec<(&'a str, &'a str)> {
    let open = format!("<{element}");
    let close = format!("</{element}>");
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if !after.starts_with([' ', '>', '/', '\t', '\r', '\n']) {
            rest = after;
            continue;
        }
        let Some(end) = after.find('>') else { break };
        let tag = &after[..end];
        let body_start = &after[end + 1..];
        let body = if tag.ends_with('/') {
            ""
        } else {
            body_start.find(&close).map_or(body_start, |j| &body_start[..j])
        };
        out.push((tag, body));
        if out.len() >= MAX_ELEMENTS {
            break;
        }
        rest = body_start;
    }
    out
}

/// The publications of a category publication document (the lab's pools read them).
pub fn parse_publications(doc: &str) -> Vec<Publication> {
    elements(doc, "publication")
        .into_iter()
        .filter_map(|(tag, content)| {
            let num = |n: &str| attr(tag, n).and_then(|v| v.trim().parse::<u32>().ok());
            Some(Publication {
                category: attr(tag, "categoryName")?.to_owned(),
                instance: num("instance")?,
                container: num("container")?,
                version: num("version").unwrap_or(0),
                content: content.to_owned(),
            })
        })
        .collect()
}

/// A fault for stale versions: `(index from 1, version sent, current version)` each.
pub fn fault_body(operations: &[(usize, u32, u32)]) -> String {
    let mut s = String::from("<Fault><Faultcode>Client.BadCall.WrongDelta</Faultcode><details>");
    for (i, v, cur) in operations {
        s.push_str(&format!("<operation index=\"{i}\" version=\"{v}\" curVersion=\"{cur}\"/>"));
    }
    s.push_str("</details></Fault>");
    s
}

/// The operations of a `WrongDelta` fault: `(index from 1, current version)`; empty for
/// any other fault.
pub fn parse_fault(doc: &str) -> Vec<(usize, u32)> {
    if !doc.contains("Client.BadCall.WrongDelta") {
        return Vec::new();
    }
    elements(doc, "operation")
        .into_iter()
        .filter_map(|(tag, _)| {
            Some((attr(tag, "index")?.parse().ok()?, attr(tag, "curVersion")?.parse().ok()?))
        })
        .collect()
}

/// A batched subscription of `watcher` to the state and note of `resources`.
pub fn batch_body(watcher: &str, resources: &[&str]) -> String {
    let mut s = format!(
        "<batchSub xmlns=\"http://schemas.microsoft.com/2006/01/sip/batch-subscribe\" uri=\"{}\" name=\"\">\
         <action name=\"subscribe\" id=\"63792024\"><adhocList>",
        escape(watcher)
    );
    for r in resources {
        s.push_str(&format!("<resource uri=\"{}\"/>", escape(r)));
    }
    s.push_str(
        "</adhocList><categoryList xmlns=\"http://schemas.microsoft.com/2006/09/sip/categorylist\">\
         <category name=\"note\"/><category name=\"state\"/></categoryList></action></batchSub>",
    );
    s
}

/// The resources a batched subscription lists (the lab's pools read them).
pub fn parse_batch_resources(doc: &str) -> Vec<String> {
    elements(doc, "resource").into_iter().filter_map(|(tag, _)| attr(tag, "uri").map(str::to_owned)).collect()
}

/// A categories document for `uri`: its aggregated availability and its note.
pub fn categories_doc(uri: &str, availability: u32, note: Option<&str>) -> String {
    let mut s = format!(
        "<categories xmlns=\"http://schemas.microsoft.com/2006/09/sip/categories\" uri=\"{}\">\
         <category name=\"state\" instance=\"0\"><state xmlns=\"http://schemas.microsoft.com/2006/09/sip/state\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"aggregateState\">\
         <availability>{availability}</availability></state></category>",
        escape(uri)
    );
    if let Some(n) = note {
        s.push_str(&format!(
            "<category name=\"note\" instance=\"0\"><note xmlns=\"http://schemas.microsoft.com/2006/09/sip/note\">\
             <body type=\"personal\" uri=\"\">{}</body></note></category>",
            escape(n)
        ));
    }
    s.push_str("</categories>");
    s
}

/// The text of the personal note in a category publication's or categories
/// document's `note` (unescaped).
pub fn note_text(doc: &str) -> Option<String> {
    let (_, body) = elements(doc, "body").into_iter().next()?;
    Some(unescape(body))
}

/// How a batched subscription's server answers for one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// Served here: its categories document.
    Active(String),
    /// Homed on another pool: subscribe there.
    Resubscribe(String),
}

/// The `multipart/related` NOTIFY body of a batched subscription of `watcher`: the rlmi
/// index, then a categories part per active resource. `(Content-Type, body)`.
pub fn rlmi_multipart(watcher: &str, resources: &[(String, Resource)]) -> (String, String) {
    let boundary = "coexistdLabBoundary";
    let mut rlmi = format!(
        "<list xmlns=\"urn:ietf:params:xml:ns:rlmi\" uri=\"{}\" version=\"0\" fullState=\"true\">",
        escape(watcher)
    );
    let mut parts = String::new();
    for (i, (uri, r)) in resources.iter().enumerate() {
        match r {
            Resource::Active(doc) => {
                let cid = format!("resource{i}");
                rlmi.push_str(&format!(
                    "<resource uri=\"{}\"><instance id=\"{i}\" state=\"active\" cid=\"{cid}\"/></resource>",
                    escape(uri)
                ));
                parts.push_str(&format!(
                    "--{boundary}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: {cid}\r\n\
                     Content-Type: {CATEGORIES_TYPE}\r\n\r\n{doc}\r\n"
                ));
            }
            Resource::Resubscribe(pool) => rlmi.push_str(&format!(
                "<resource uri=\"{}\"><instance id=\"{i}\" state=\"resubscribe\" poolFqdn=\"{}\"/></resource>",
                escape(uri),
                escape(pool)
            )),
        }
    }
    rlmi.push_str("</list>");
    let body = format!(
        "--{boundary}\r\nContent-Transfer-Encoding: binary\r\nContent-ID: resourceList\r\n\
         Content-Type: application/rlmi+xml\r\n\r\n{rlmi}\r\n{parts}--{boundary}--\r\n"
    );
    (
        format!("multipart/related; type=\"application/rlmi+xml\"; start=resourceList; boundary={boundary}"),
        body,
    )
}

/// The first start tag `<element …>` in `doc` (its attributes), without looking for
/// its end.
fn first_tag<'a>(doc: &'a str, element: &str) -> Option<&'a str> {
    let open = format!("<{element}");
    let mut rest = doc;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        if after.starts_with([' ', '>', '/', '\t', '\r', '\n']) {
            return after.find('>').map(|end| &after[..end]);
        }
        rest = after;
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The host a NOTIFY's rlmi index sends `resource` to (`state="resubscribe"` with a
/// `poolFqdn`; the resource compared without case, after unescaping). Only a host name
/// is taken (a `sip:` prefix dropped): no port, no parameters, no other scheme.
pub fn resubscribe_to(doc: &str, resource: &str) -> Option<String> {
    elements(doc, "resource").into_iter().find_map(|(tag, body)| {
        if !unescape(attr(tag, "uri")?).eq_ignore_ascii_case(resource) {
            return None;
        }
        let inst = first_tag(body, "instance")?;
        if attr(inst, "state")? != "resubscribe" {
            return None;
        }
        let pool = unescape(attr(inst, "poolFqdn")?);
        let pool = pool.trim();
        let host = pool.strip_prefix("sip:").unwrap_or(pool).trim_end_matches('.');
        let valid = host.len() <= 253
            && host.contains('.')
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        valid.then(|| host.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_reads_back_and_a_fault_names_the_versions() {
        let (doc, keys) = publish_body("sip:alice@contoso.test", "out <to> lunch & back", |k| {
            if k == "note/0/300" {
                7
            } else {
                0
            }
        });
        let pubs = parse_publications(&doc);
        assert_eq!(pubs.len(), 5);
        assert_eq!(pubs.iter().map(Publication::key).collect::<Vec<_>>(), keys);
        assert_eq!(pubs[3].version, 7);
        assert_eq!(note_text(&pubs[3].content).as_deref(), Some("out <to> lunch & back"));
        assert_eq!(parse_fault(&fault_body(&[(4, 7, 9), (1, 0, 2)])), vec![(4, 9), (1, 2)]);
        assert!(parse_fault("<Fault><Faultcode>Server.Busy</Faultcode></Fault>").is_empty());
    }

    #[test]
    fn a_batch_lists_its_resources_and_the_index_sends_one_to_another_pool() {
        let body = batch_body("sip:beth@contoso.test", &["sip:alice@contoso.test", "sip:bob@contoso.test"]);
        assert_eq!(parse_batch_resources(&body), ["sip:alice@contoso.test", "sip:bob@contoso.test"]);
        let (ctype, multipart) = rlmi_multipart(
            "sip:beth@contoso.test",
            &[
                (
                    "sip:bob@contoso.test".into(),
                    Resource::Active(categories_doc("sip:bob@contoso.test", 3500, Some("hi"))),
                ),
                ("sip:alice@contoso.test".into(), Resource::Resubscribe("ocspool.contoso.test".into())),
            ],
        );
        assert!(ctype.starts_with("multipart/related"));
        assert_eq!(
            resubscribe_to(&multipart, "sip:alice@contoso.test").as_deref(),
            Some("ocspool.contoso.test")
        );
        assert_eq!(
            resubscribe_to(&multipart, "SIP:Alice@Contoso.test").as_deref(),
            Some("ocspool.contoso.test")
        );
        assert_eq!(resubscribe_to(&multipart, "sip:bob@contoso.test"), None);
        assert!(multipart.contains("<body type=\"personal\" uri=\"\">hi</body>"));
        // Nothing but a host name is followed.
        for pool in ["a b@c", "x.evil;maddr=10.0.0.5", "x.evil:5060", "sips:x.evil", "nodots"] {
            let evil = format!(
                "<resource uri=\"sip:a@b\"><instance id=\"0\" state=\"resubscribe\" poolFqdn=\"{pool}\"/></resource>"
            );
            assert_eq!(resubscribe_to(&evil, "sip:a@b"), None, "{pool}");
        }
        // Many resources, instances without ends: bounded work.
        let hostile = "<resource uri=\"sip:a@b\">".repeat(300) + &"<instance x".repeat(2000) + "resubscribe";
        assert_eq!(resubscribe_to(&hostile, "sip:a@b"), None);
    }
}
