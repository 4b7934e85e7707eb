//! Target 5: DNS query bytes to the response bytes (`vipd::dns::respond`), on a fixed table.
//!
//! Input: byte 0 picks the transport (bit 0: UDP or TCP) and which frontends the data plane
//! reports as serving (bits 1-2: all, none, even ports, odd ports); the rest is the query message.
//! Properties:
//! - no reply only to a message shorter than a header or with QR set (no reflection);
//! - a reply decodes, carries the query's id, never offers recursion, and over UDP is never
//!   larger than the query allows: 512 bytes without EDNS, else the EDNS size clamped to
//!   512..=1232 (no amplification);
//! - no record in any section is outside the zone, and a question outside the zone is REFUSED
//!   with nothing in the answer.
#![no_main]

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::Name;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use vipd::dns::{parse_zone, respond, Transport, ZoneIndex, CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD};
use vipd::published::PublishedTable;
use vipd::table::{
    Backend, BackendState, Frontend, FrontendKey, FrontendKind, OwnerKind, Protocol, Table,
};

const ZONE: &str = "l4lb.thisdcos.directory";

fn frontend(protocol: Protocol, listen: &str, name: &str, port_name: Option<&str>) -> Frontend {
    Frontend {
        protocol,
        listen: listen.parse().expect("a socket address"),
        kind: FrontendKind::Vip,
        vip_name: Some(name.to_string()),
        app: "/fuzz".into(),
        owner_kind: OwnerKind::App,
        apps: vec!["/fuzz".into()],
        port_index: 0,
        port_name: port_name.map(str::to_string),
        options: Default::default(),
        backends: vec![Backend {
            address: "10.0.0.1:31000".parse().expect("a socket address"),
            task: "fuzz.1".into(),
            state: BackendState::Up,
        }]
        .into(),
    }
}

/// Small names, a name with 60 IPv4 and 20 IPv6 frontends (answers that need truncation), a
/// relative name, a name with no backends, a service-port frontend with a name (never answered),
/// a deep name (empty non-terminals) and a name near the 255-octet limit.
static INDEX: LazyLock<ZoneIndex> = LazyLock::new(|| {
    let acme = "acme.marathon.l4lb.thisdcos.directory";
    let big = "big.marathon.l4lb.thisdcos.directory";
    let mut fs = vec![
        frontend(Protocol::Tcp, "11.0.0.1:80", acme, Some("http")),
        frontend(Protocol::Udp, "11.0.0.1:80", acme, Some("dns")),
        frontend(Protocol::Tcp, "[fd00::1]:80", acme, None),
        frontend(Protocol::Tcp, "11.0.0.2:8080", "web.marathon", Some("HTTP")),
        frontend(
            Protocol::Tcp,
            "11.0.0.3:81",
            "a.b.c.marathon.l4lb.thisdcos.directory.",
            None,
        ),
        frontend(
            Protocol::Tcp,
            "0.0.0.0:10000",
            "svc.marathon.l4lb.thisdcos.directory",
            None,
        ),
        frontend(Protocol::Udp, "11.0.0.4:53", "pending.marathon", None),
    ];
    fs[5].kind = FrontendKind::ServicePort;
    fs[6].backends = Vec::new().into();
    for i in 0..60u16 {
        let port_name = if i % 2 == 0 { "https" } else { "alt" };
        fs.push(frontend(
            Protocol::Tcp,
            &format!("11.0.1.{i}:{}", 443 + i % 3),
            big,
            Some(port_name),
        ));
    }
    for i in 0..20u16 {
        fs.push(frontend(
            Protocol::Tcp,
            &format!("[fd00::1:{i:x}]:443"),
            big,
            None,
        ));
    }
    let long = format!(
        "{}.{}.{}.marathon",
        "x".repeat(63),
        "y".repeat(63),
        "z".repeat(63)
    );
    fs.push(frontend(Protocol::Tcp, "11.0.0.5:80", &long, Some("p")));
    fs.sort_by_key(|f| f.key());
    fs.dedup_by_key(|f| f.key());
    let table = Arc::new(PublishedTable {
        generation: 7,
        table: Table { frontends: fs },
        ..PublishedTable::default()
    });
    ZoneIndex::new(table, &apex())
});

fn apex() -> Name {
    parse_zone(ZONE).expect("the zone parses")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, query)) = data.split_first() else {
        return;
    };
    let transport = if mode & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let serving_mode = (mode >> 1) & 3;
    let serving = move |key: &FrontendKey| match serving_mode {
        0 => true,
        1 => false,
        2 => key.listen.port() % 2 == 0,
        _ => key.listen.port() % 2 == 1,
    };
    let mut out = Vec::new();
    let replied = respond(query, &INDEX, &serving, transport, &mut out);
    let qr = query.len() >= 3 && query[2] & 0x80 != 0;
    if !replied {
        assert!(
            query.len() < 12 || qr,
            "no reply to a {}-byte query without QR",
            query.len()
        );
        return;
    }
    assert!(
        query.len() >= 12 && !qr,
        "a reply to a response or a short message"
    );

    let request = Message::from_vec(query).ok();
    if transport == Transport::Udp {
        let limit = match request.as_ref().and_then(|r| r.extensions().as_ref()) {
            Some(edns) => edns
                .max_payload()
                .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
            None => CLASSIC_UDP_PAYLOAD,
        };
        assert!(
            out.len() <= usize::from(limit),
            "UDP response of {} bytes; the query allows {limit}",
            out.len()
        );
    }
    assert!(
        out.len() <= usize::from(u16::MAX),
        "a response over 65535 bytes"
    );

    let response = Message::from_vec(&out).expect("the response decodes");
    assert_eq!(
        response.id(),
        u16::from_be_bytes([query[0], query[1]]),
        "id not echoed"
    );
    assert_eq!(response.message_type(), MessageType::Response);
    assert!(!response.recursion_available(), "offers recursion");
    let apex = apex();
    for record in response
        .answers()
        .iter()
        .chain(response.name_servers())
        .chain(response.additionals())
    {
        assert!(
            apex.zone_of(record.name()),
            "a record outside the zone: {record}"
        );
    }
    if let Some(request) = &request {
        if let [q] = request.queries() {
            if !apex.zone_of(q.name())
                && request.op_code() == OpCode::Query
                && request
                    .extensions()
                    .as_ref()
                    .is_none_or(|e| e.version() == 0)
            {
                assert_eq!(
                    response.response_code(),
                    ResponseCode::Refused,
                    "{} (outside the zone) not refused",
                    q.name()
                );
                assert!(
                    response.answers().is_empty(),
                    "answers for a name outside the zone"
                );
            }
        }
    }
});
