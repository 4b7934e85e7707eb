//! Unit tests of the zone logic: no sockets, tables built by hand.

use super::*;
use crate::table::{Backend, BackendState, Frontend, Table};
use hickory_proto::op::Query;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

fn backend(addr: &str) -> Backend {
    Backend {
        address: addr.parse().unwrap(),
        task: format!("app.{addr}").into(),
        state: BackendState::Up,
    }
}

fn vip(protocol: Protocol, listen: &str, name: Option<&str>, backends: usize) -> Frontend {
    Frontend {
        protocol,
        listen: listen.parse().unwrap(),
        kind: FrontendKind::Vip,
        vip_name: name.map(str::to_string),
        app: "/acme".into(),
        owner_kind: crate::table::OwnerKind::App,
        apps: vec!["/acme".into()],
        port_index: 0,
        port_name: None,
        options: Default::default(),
        backends: (0..backends)
            .map(|i| backend(&format!("10.0.0.{}:3100{i}", i + 1)))
            .collect(),
    }
}

fn table(mut frontends: Vec<Frontend>) -> Arc<PublishedTable> {
    frontends.sort_by_key(|f| f.key());
    Arc::new(PublishedTable {
        generation: 42,
        table: Table { frontends },
        ..PublishedTable::default()
    })
}

/// acme: v4 tcp+udp on port 80 plus v6 tcp on 80; web: v4 only, port 8080 named "http";
/// service-port frontend with a vip_name (must be ignored); pending: no backends.
fn sample() -> Arc<PublishedTable> {
    let mut web = vip(
        Protocol::Tcp,
        "11.0.0.2:8080",
        Some("web.marathon.l4lb.thisdcos.directory"),
        2,
    );
    web.port_name = Some("HTTP".into());
    let mut svc = vip(
        Protocol::Tcp,
        "0.0.0.0:10000",
        Some("svc.marathon.l4lb.thisdcos.directory"),
        1,
    );
    svc.kind = FrontendKind::ServicePort;
    table(vec![
        vip(
            Protocol::Tcp,
            "11.0.0.1:80",
            Some("acme.marathon.l4lb.thisdcos.directory"),
            2,
        ),
        vip(
            Protocol::Udp,
            "11.0.0.1:80",
            Some("acme.marathon.l4lb.thisdcos.directory"),
            2,
        ),
        vip(
            Protocol::Tcp,
            "[fd01:c::1]:80",
            Some("acme.marathon.l4lb.thisdcos.directory"),
            2,
        ),
        web,
        svc,
        vip(
            Protocol::Tcp,
            "11.0.0.3:5432",
            Some("pending.marathon.l4lb.thisdcos.directory"),
            0,
        ),
        vip(Protocol::Tcp, "10.9.9.9:443", None, 1),
    ])
}

fn zone() -> Name {
    parse_zone("l4lb.thisdcos.directory").unwrap()
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn ask(name: &str, qtype: RecordType) -> Message {
    answer(&query(name, qtype), sample(), &AlwaysServing, &zone())
}

fn ips(m: &Message) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

fn assert_soa_authority(m: &Message) {
    assert_eq!(m.name_servers().len(), 1, "{m}");
    let soa = &m.name_servers()[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.ttl(), NEGATIVE_TTL);
    assert_eq!(soa.name(), &zone());
}

#[test]
fn a_record_for_a_named_vip_with_ttl_5_and_aa() {
    let m = ask("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(m.message_type(), MessageType::Response);
    assert_eq!(m.id(), 4242);
    assert!(m.recursion_desired());
    assert!(!m.recursion_available());
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1))]);
    assert!(m.answers().iter().all(|r| r.ttl() == TTL && TTL == 5));
    assert_eq!(m.queries().len(), 1);
}

#[test]
fn aaaa_record_from_a_v6_listen() {
    let m = ask("acme.marathon.l4lb.thisdcos.directory.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        ips(&m),
        vec![IpAddr::V6("fd01:c::1".parse::<Ipv6Addr>().unwrap())]
    );
}

#[test]
fn aaaa_for_a_v4_only_name_is_nodata_with_soa() {
    let m = ask("web.marathon.l4lb.thisdcos.directory.", RecordType::AAAA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert!(m.answers().is_empty());
    assert_soa_authority(&m);
}

#[test]
fn other_types_on_an_existing_name_are_nodata() {
    for qtype in [RecordType::TXT, RecordType::MX, RecordType::CNAME] {
        let m = ask("web.marathon.l4lb.thisdcos.directory.", qtype);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{qtype}");
        assert!(m.answers().is_empty());
        assert_soa_authority(&m);
    }
}

#[test]
fn any_returns_both_address_families() {
    let m = ask("acme.marathon.l4lb.thisdcos.directory.", RecordType::ANY);
    assert_eq!(ips(&m).len(), 2, "{m}");
}

#[test]
fn unknown_name_in_zone_is_nxdomain_with_soa() {
    let m = ask("nope.marathon.l4lb.thisdcos.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert!(m.authoritative());
    assert!(m.answers().is_empty());
    assert_soa_authority(&m);
    // Below an existing name is still NXDOMAIN.
    let m = ask("x.acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[test]
fn empty_non_terminals_are_nodata_not_nxdomain() {
    for name in [
        "marathon.l4lb.thisdcos.directory.",
        "_tcp.acme.marathon.l4lb.thisdcos.directory.",
    ] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert!(m.answers().is_empty());
        assert_soa_authority(&m);
    }
}

#[test]
fn names_outside_the_zone_are_refused_without_aa() {
    for name in [
        "example.com.",
        "thisdcos.directory.",
        "l4lb.thisdcos.directory.evil.",
    ] {
        let m = ask(name, RecordType::A);
        assert_eq!(m.response_code(), ResponseCode::Refused, "{name}");
        assert!(!m.authoritative());
        assert!(m.answers().is_empty());
    }
}

#[test]
fn matching_is_case_insensitive_and_echoes_the_question() {
    let m = ask("AcMe.MARATHON.l4lb.ThisDCOS.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1))]);
    assert_eq!(
        m.queries()[0].name().to_string(),
        "AcMe.MARATHON.l4lb.ThisDCOS.directory."
    );
    assert!(m.answers()[0]
        .name()
        .eq_case(&Name::from_ascii("AcMe.MARATHON.l4lb.ThisDCOS.directory.").unwrap()));
}

#[test]
fn zone_and_vip_names_accept_trailing_dots_and_relative_names() {
    let zone = parse_zone("L4LB.thisdcos.directory.").unwrap();
    assert_eq!(zone.to_string(), "l4lb.thisdcos.directory.");
    let t = table(vec![
        vip(
            Protocol::Tcp,
            "11.0.0.7:80",
            Some("dotted.marathon.l4lb.thisdcos.directory."),
            1,
        ),
        vip(Protocol::Tcp, "11.0.0.8:80", Some("relative.marathon"), 1),
        vip(Protocol::Tcp, "11.0.0.9:80", Some(""), 1),
        vip(
            Protocol::Tcp,
            "11.0.0.10:80",
            Some("l4lb.thisdcos.directory"),
            1,
        ),
    ]);
    let index = ZoneIndex::new(t, &zone);
    assert_eq!(
        index.names(),
        vec![
            "dotted.marathon.l4lb.thisdcos.directory.",
            "relative.marathon.l4lb.thisdcos.directory."
        ]
    );
    let m = index.answer(
        &query("relative.marathon.l4lb.thisdcos.directory", RecordType::A),
        &AlwaysServing,
    );
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(11, 0, 0, 8))]);
}

#[test]
fn invalid_zones_are_errors() {
    for bad in ["", ".", "a..b"] {
        let e = parse_zone(bad).unwrap_err();
        assert!(e.to_string().contains("invalid DNS zone"), "{bad}: {e}");
    }
}

#[test]
fn service_ports_and_unnamed_vips_are_not_in_the_zone() {
    let m = ask("svc.marathon.l4lb.thisdcos.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let index = ZoneIndex::new(sample(), &zone());
    assert_eq!(index.names().len(), 3, "{:?}", index.names());
}

#[test]
fn a_name_without_backends_is_servfail_not_nxdomain() {
    let m = ask("pending.marathon.l4lb.thisdcos.directory.", RecordType::A);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(m.answers().is_empty());
    assert!(!m.authoritative());
}

#[test]
fn a_name_whose_listener_is_not_bound_is_servfail_with_ede_not_ready() {
    let nothing_bound = |_: &FrontendKey| false;
    let mut q = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    q.set_edns(Edns::new());
    let m = answer(&q, sample(), &nothing_bound, &zone());
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert!(m.answers().is_empty());
    let opt = m.extensions().as_ref().expect("OPT in the response");
    match opt.option(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(EDE_OPTION)) {
        Some(EdnsOption::Unknown(15, data)) => assert_eq!(&data[..2], &[0, 14]),
        other => panic!("no EDE option: {other:?}"),
    }
}

#[test]
fn a_name_is_answered_when_one_of_its_frontends_serves() {
    // Only the UDP frontend of acme is bound: acme answers, with its v4 address only, because the
    // v6 TCP frontend is not serving.
    let udp_only = |k: &FrontendKey| k.protocol == Protocol::Udp;
    let m = answer(
        &query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A),
        sample(),
        &udp_only,
        &zone(),
    );
    assert_eq!(ips(&m), vec![IpAddr::V4(Ipv4Addr::new(11, 0, 0, 1))]);
    let m = answer(
        &query("acme.marathon.l4lb.thisdcos.directory.", RecordType::AAAA),
        sample(),
        &udp_only,
        &zone(),
    );
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty(), "v6 frontend is not serving: {m}");
}

#[test]
fn soa_at_the_apex_with_generation_as_serial() {
    let m = ask("l4lb.thisdcos.directory.", RecordType::SOA);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative());
    assert_eq!(m.answers().len(), 1);
    let RData::SOA(soa) = m.answers()[0].data() else {
        panic!("not a SOA: {m}")
    };
    assert_eq!(soa.serial(), 42);
    assert_eq!(soa.minimum(), NEGATIVE_TTL);
    assert_eq!(soa.mname().to_string(), "ns.l4lb.thisdcos.directory.");
}

#[test]
fn ns_and_a_at_the_apex_are_nodata_with_soa() {
    for qtype in [RecordType::NS, RecordType::A] {
        let m = ask("l4lb.thisdcos.directory.", qtype);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative());
        assert!(m.answers().is_empty());
        assert_soa_authority(&m);
    }
}

#[test]
fn srv_by_port_number_and_by_port_name() {
    for name in [
        "_port-8080._tcp.web.marathon.l4lb.thisdcos.directory.",
        "_http._tcp.web.marathon.l4lb.thisdcos.directory.",
    ] {
        let m = ask(name, RecordType::SRV);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        assert!(m.authoritative());
        assert_eq!(m.answers().len(), 1);
        let RData::SRV(srv) = m.answers()[0].data() else {
            panic!("not SRV: {m}")
        };
        assert_eq!(srv.port(), 8080);
        assert_eq!(
            srv.target().to_string(),
            "web.marathon.l4lb.thisdcos.directory."
        );
        assert_eq!(m.answers()[0].ttl(), TTL);
        assert_eq!(m.additionals().len(), 1, "target address in additional");
    }
    // Protocol matters: web has no UDP frontend.
    let m = ask(
        "_port-8080._udp.web.marathon.l4lb.thisdcos.directory.",
        RecordType::SRV,
    );
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    let m = ask(
        "_port-80._udp.acme.marathon.l4lb.thisdcos.directory.",
        RecordType::SRV,
    );
    assert_eq!(m.answers().len(), 1);
    // A on an SRV name: NODATA.
    let m = ask(
        "_port-80._udp.acme.marathon.l4lb.thisdcos.directory.",
        RecordType::A,
    );
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.answers().is_empty());
}

#[test]
fn formerr_for_zero_or_two_questions_and_notimp_for_other_opcodes() {
    let index = ZoneIndex::new(sample(), &zone());
    let mut none = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    none.take_queries();
    assert_eq!(
        index.answer(&none, &AlwaysServing).response_code(),
        ResponseCode::FormErr
    );
    let mut two = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    two.add_query(Query::query(
        Name::from_str("web.marathon.l4lb.thisdcos.directory.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        index.answer(&two, &AlwaysServing).response_code(),
        ResponseCode::FormErr
    );
    let mut update = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    update.set_op_code(OpCode::Update);
    let m = index.answer(&update, &AlwaysServing);
    assert_eq!(m.response_code(), ResponseCode::NotImp);

    // Byte level: the same through respond().
    let mut out = Vec::new();
    let mut bytes = update.to_vec().unwrap();
    assert!(respond(
        &bytes,
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.response_code(), ResponseCode::NotImp);
    assert_eq!(m.id(), 4242);
    // Garbage after a valid header: FORMERR with the query id.
    bytes = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A)
        .to_vec()
        .unwrap();
    bytes.truncate(20);
    assert!(respond(
        &bytes,
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    assert_eq!(m.id(), 4242);
}

#[test]
fn responses_and_runts_get_no_reply() {
    let index = ZoneIndex::new(sample(), &zone());
    let mut out = Vec::new();
    assert!(!respond(
        &[0u8; 5],
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    let mut resp = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    resp.set_message_type(MessageType::Response);
    let bytes = resp.to_vec().unwrap();
    assert!(!respond(
        &bytes,
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
}

#[test]
fn other_classes_and_zone_transfers_are_refused() {
    let mut q = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    q.queries_mut()[0].set_query_class(DNSClass::CH);
    let m = answer(&q, sample(), &AlwaysServing, &zone());
    assert_eq!(m.response_code(), ResponseCode::Refused);
    let m = ask("l4lb.thisdcos.directory.", RecordType::AXFR);
    assert_eq!(m.response_code(), ResponseCode::Refused);
}

#[test]
fn edns_version_above_zero_is_badvers() {
    let mut q = query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_version(1);
    q.set_edns(edns);
    let index = ZoneIndex::new(sample(), &zone());
    let mut out = Vec::new();
    assert!(respond(
        &q.to_vec().unwrap(),
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    let m = Message::from_vec(&out).unwrap();
    // BADVERS and BADSIG share code 16; hickory decodes 16 as BADSIG.
    assert_eq!(u16::from(m.response_code()), 16);
    assert!(m.extensions().is_some(), "extended rcode needs an OPT");
}

/// 60 frontends under one name: over 512 bytes without EDNS -> TC; fits with EDNS 1232 or TCP.
#[test]
fn large_udp_answers_are_truncated_unless_edns_or_tcp() {
    let frontends = (1..=60)
        .map(|i| {
            vip(
                Protocol::Tcp,
                &format!("11.0.1.{i}:80"),
                Some("big.marathon.l4lb.thisdcos.directory"),
                1,
            )
        })
        .collect();
    let index = ZoneIndex::new(table(frontends), &zone());
    let q = query("big.marathon.l4lb.thisdcos.directory.", RecordType::A);
    let mut out = Vec::new();
    assert!(respond(
        &q.to_vec().unwrap(),
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    assert!(out.len() <= 512);
    let m = Message::from_vec(&out).unwrap();
    assert!(m.truncated());
    assert!(m.answers().is_empty());
    assert_eq!(m.queries().len(), 1);

    assert!(respond(
        &q.to_vec().unwrap(),
        &index,
        &AlwaysServing,
        Transport::Tcp,
        &mut out
    ));
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 60);

    let mut q = q;
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    assert!(respond(
        &q.to_vec().unwrap(),
        &index,
        &AlwaysServing,
        Transport::Udp,
        &mut out
    ));
    assert!(out.len() <= usize::from(MAX_UDP_PAYLOAD));
    let m = Message::from_vec(&out).unwrap();
    assert!(!m.truncated());
    assert_eq!(m.answers().len(), 60);
    assert_eq!(m.max_payload(), MAX_UDP_PAYLOAD);
}

#[test]
fn the_index_is_built_from_the_snapshot_it_is_given() {
    let t = sample();
    let index = ZoneIndex::new(t.clone(), &zone());
    assert!(Arc::ptr_eq(index.snapshot(), &t));
    let empty = ZoneIndex::new(Arc::new(PublishedTable::default()), &zone());
    let m = empty.answer(
        &query("acme.marathon.l4lb.thisdcos.directory.", RecordType::A),
        &AlwaysServing,
    );
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn check(bytes: &[u8], index: &ZoneIndex) {
        let mut out = Vec::new();
        for transport in [Transport::Udp, Transport::Tcp] {
            if respond(bytes, index, &AlwaysServing, transport, &mut out) {
                let m = Message::from_vec(&out).expect("our response decodes");
                assert_eq!(m.id(), u16::from_be_bytes([bytes[0], bytes[1]]));
                assert_eq!(m.message_type(), MessageType::Response);
                if transport == Transport::Udp {
                    assert!(out.len() <= usize::from(MAX_UDP_PAYLOAD));
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let index = ZoneIndex::new(sample(), &zone());
            check(&bytes, &index);
        }

        #[test]
        fn mutated_queries_never_panic(
            qtype in prop_oneof![Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::SRV), Just(RecordType::ANY)],
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let index = ZoneIndex::new(sample(), &zone());
            let mut q = query("_port-80._tcp.acme.marathon.l4lb.thisdcos.directory.", qtype);
            q.set_edns(Edns::new());
            let mut bytes = q.to_vec().unwrap();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            bytes.truncate(cut % (bytes.len() + 1));
            if bytes.len() >= 2 {
                check(&bytes, &index);
            } else {
                let mut out = Vec::new();
                prop_assert!(!respond(&bytes, &index, &AlwaysServing, Transport::Udp, &mut out));
            }
        }
    }
}
