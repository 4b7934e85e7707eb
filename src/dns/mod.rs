//! Authoritative DNS for named VIPs (`<label>.<framework>.l4lb.thisdcos.directory`).
//!
//! Owns: the pure zone logic ([`ZoneIndex`], [`answer`], [`respond`]) that turns one DNS query
//! and one published table snapshot into one response, the [`ServingCheck`] contract the data
//! plane implements, and the UDP/TCP server ([`server`]).
//! The wire format is `hickory-proto`'s; this module only decides what to answer.
//!
//! Must not: resolve anything outside the zone (vipd is not an open resolver: REFUSED), mutate or
//! cache tables beyond one index per published generation, bind sockets (only [`server`] does),
//! log per query above `trace`, or panic on any input.
//!
//! # What is answered
//! - `A`/`AAAA` for every frontend with `kind: vip` and a `vip_name`, from the frontend's listen
//!   IP (v4 -> A, v6 -> AAAA), TTL 5 s as in Minuteman/dcos-net. Names match case-insensitively;
//!   the answer echoes the question's spelling. `vip_name` is the full DNS name
//!   (`acme.marathon.l4lb.thisdcos.directory`); a name that is not inside the zone is taken as
//!   relative to it (`acme.marathon` + zone); an unparsable name is left out of the zone.
//! - `SRV` at `_<port-name>._tcp.<name>` (when the port has a name that is a valid DNS label) and
//!   at `_port-<port>._tcp.<name>` (always; `_udp` for UDP frontends): priority 0, weight 1, the
//!   VIP port, target = the VIP name, with the target's A/AAAA in the additional section.
//! - `ANY` on a VIP name returns its A and AAAA records (on an SRV name, its SRV records).
//! - At the apex: `SOA` (synthetic: `ns.<zone>`, `hostmaster.<zone>`, serial = table generation
//!   mod 2^32, minimum 1 s). `NS` at the apex gets NODATA with the SOA: vipd does not know the
//!   address it is reached on, and a dangling NS target would be worse than none. The zone is
//!   reached by forwarding (dcos-dns / systemd-resolved / dnsmasq), not by delegation.
//! - Existing name, other type: NOERROR with an empty answer and the SOA in authority (NODATA).
//!   Empty non-terminals (`marathon.<zone>`, `_tcp.<name>`) are NODATA too, never NXDOMAIN: an
//!   RFC 8020 resolver would otherwise deny every name below them.
//! - Unknown name in the zone: NXDOMAIN with the SOA. Negative answers carry the SOA with TTL 1 s
//!   (= its minimum), so a resolver caches the miss for one second.
//! - Outside the zone, or a class other than IN, or AXFR/IXFR: REFUSED (AA clear for the former).
//! - Undecodable message or a QDCOUNT other than 1: FORMERR. Opcode other than QUERY: NOTIMP.
//!   EDNS version > 0: BADVERS. A message with QR set (a response), or shorter than a header, gets
//!   no reply at all (no reflection loops).
//!
//! # The dcos-net #130 race, and why a not-yet-serving name gets SERVFAIL
//! In dcos-net a VIP name resolved before IPVS was programmed, and clients connected to whatever
//! listened on that port locally. Here a name is answered only when at least one of its
//! frontends has a bound listener ([`ServingCheck::is_serving`], implemented by the data plane)
//! AND at least one backend. A name that is in the table but not serving yet gets **SERVFAIL**
//! (with the EDNS Extended DNS Error 14 "Not Ready" when the client speaks EDNS), not NXDOMAIN
//! and not NODATA:
//! - NXDOMAIN says "this name does not exist", is negatively cached, and (RFC 8020) denies every
//!   name below it; it would pin the miss exactly when a deploy is in progress.
//! - NODATA says "the name exists but has no address": `getaddrinfo` returns EAI_NODATA/EAI_NONAME,
//!   which most clients report as a permanent "unknown host" and do not retry.
//! - SERVFAIL is the answer that means "try again": stub resolvers return EAI_AGAIN /
//!   TRY_AGAIN, which clients and connection pools treat as transient, and a forwarding resolver
//!   tries its other upstreams. Resolvers cache SERVFAIL only briefly (BIND: 1 s by default; RFC
//!   9520: at least 1 s, at most 5 min with backoff), so the name resolves soon after it serves.
//!   The cost: a VIP whose app is scaled to zero answers SERVFAIL for as long as it has no
//!   backends, which is honest (nothing can serve it) and recovers as soon as a task runs.

pub mod server;

use crate::published::PublishedTable;
use crate::table::{FrontendKey, FrontendKind, Protocol};
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub use server::{serve, DnsServer, ServerLimits};

/// TTL of A/AAAA/SRV answers (Minuteman and dcos-net both use 5 s).
pub const TTL: u32 = 5;
/// Negative-caching TTL: the SOA minimum, and the TTL of the SOA in negative answers.
pub const NEGATIVE_TTL: u32 = 1;
/// The UDP payload size vipd advertises and never exceeds (DNS flag day 2020 value).
pub const MAX_UDP_PAYLOAD: u16 = 1232;
/// The payload limit of a UDP response to a query without EDNS (RFC 1035).
pub const CLASSIC_UDP_PAYLOAD: u16 = 512;
/// EDNS option code of Extended DNS Errors (RFC 8914) and its "Not Ready" info code.
const EDE_OPTION: u16 = 15;
const EDE_NOT_READY: u16 = 14;

/// Errors of the DNS server's setup. Per-query problems are answered (FORMERR, ...), not errors.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("invalid DNS zone {zone:?}: {reason}")]
    InvalidZone { zone: String, reason: String },
    #[error("cannot bind the DNS {protocol} socket on {addr}: {source}")]
    Bind {
        protocol: Protocol,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("DNS {protocol} socket on {addr} failed: {source}")]
    Socket {
        protocol: Protocol,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Whether a frontend's listener is bound, as the data plane sees it. The DNS answers a VIP name
/// only once this says yes for one of its frontends (and that frontend has a backend).
pub trait ServingCheck {
    fn is_serving(&self, key: &FrontendKey) -> bool;
}

impl<F: Fn(&FrontendKey) -> bool> ServingCheck for F {
    fn is_serving(&self, key: &FrontendKey) -> bool {
        self(key)
    }
}

/// A [`ServingCheck`] that says every frontend is bound. For tests and for a deployment without
/// an in-process data plane; it gives up the "no name before its listener" guarantee.
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysServing;

impl ServingCheck for AlwaysServing {
    fn is_serving(&self, _key: &FrontendKey) -> bool {
        true
    }
}

/// Parses a zone name (`l4lb.thisdcos.directory`, trailing dot optional) into a lower-case FQDN.
pub fn parse_zone(zone: &str) -> Result<Name, DnsError> {
    let invalid = |reason: String| DnsError::InvalidZone {
        zone: zone.to_string(),
        reason,
    };
    let trimmed = zone.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(invalid("the zone must not be empty or the root".into()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|e| invalid(e.to_string()))?;
    name.set_fqdn(true);
    if name.is_root() {
        return Err(invalid("the zone must not be the root".into()));
    }
    Ok(name.to_lowercase())
}

/// The owner name of a VIP inside `apex`, or `None` when `raw` is not a usable DNS name.
fn vip_owner(raw: &str, apex: &Name) -> Option<Name> {
    let trimmed = raw.trim().trim_end_matches('.');
    if trimmed.is_empty() {
        return None;
    }
    let mut name = Name::from_ascii(trimmed).ok()?.to_lowercase();
    name.set_fqdn(true);
    if apex.zone_of(&name) {
        // The apex itself cannot be a VIP name (it carries the SOA).
        return (name.num_labels() > apex.num_labels()).then_some(name);
    }
    name.set_fqdn(false);
    name.append_domain(apex).ok()
}

/// A valid SRV service label: `[a-z0-9-]`, 1..=62 chars (63 with the `_`), no leading `-`.
fn srv_label(port_name: &str) -> Option<String> {
    let lower = port_name.to_ascii_lowercase();
    let ok = !lower.is_empty()
        && lower.len() <= 62
        && !lower.starts_with('-')
        && lower
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    ok.then(|| format!("_{lower}"))
}

#[derive(Debug)]
struct SrvEntry {
    target: Name,
    /// Indices into the table's frontends.
    frontends: Vec<usize>,
}

/// The zone view of one published table: names -> frontends. Built once per generation (the
/// server caches it) and answered from without touching any other state. Whether a frontend is
/// serving is asked per query, because listeners come and go between table generations.
#[derive(Debug)]
pub struct ZoneIndex {
    snapshot: Arc<PublishedTable>,
    apex: Name,
    apex_lower: LowerName,
    soa: SOA,
    hosts: HashMap<LowerName, Vec<usize>>,
    srv: HashMap<LowerName, SrvEntry>,
    /// Names that exist only because something below them exists.
    empty_non_terminals: HashSet<LowerName>,
}

impl ZoneIndex {
    /// Indexes the named VIPs of `snapshot` under `apex` (a lower-case FQDN, see [`parse_zone`]).
    pub fn new(snapshot: Arc<PublishedTable>, apex: &Name) -> Self {
        let mut apex = apex.to_lowercase();
        apex.set_fqdn(true);
        let mut hosts: HashMap<LowerName, Vec<usize>> = HashMap::new();
        let mut srv: HashMap<LowerName, SrvEntry> = HashMap::new();
        for (i, f) in snapshot.table.frontends.iter().enumerate() {
            if f.kind != FrontendKind::Vip {
                continue;
            }
            let Some(owner) = f.vip_name.as_deref().and_then(|raw| vip_owner(raw, &apex)) else {
                continue;
            };
            hosts.entry(LowerName::new(&owner)).or_default().push(i);
            let proto_label = match f.protocol {
                Protocol::Tcp => "_tcp",
                Protocol::Udp => "_udp",
            };
            let Ok(proto_name) = owner.prepend_label(proto_label) else {
                continue;
            };
            let mut services = vec![format!("_port-{}", f.listen.port())];
            if let Some(label) = f.port_name.as_deref().and_then(srv_label) {
                if !services.contains(&label) {
                    services.push(label);
                }
            }
            for service in services {
                if let Ok(name) = proto_name.prepend_label(service.as_str()) {
                    srv.entry(LowerName::new(&name))
                        .or_insert_with(|| SrvEntry {
                            target: owner.clone(),
                            frontends: Vec::new(),
                        })
                        .frontends
                        .push(i);
                }
            }
        }
        let apex_labels = usize::from(apex.num_labels());
        let mut empty_non_terminals = HashSet::new();
        for name in hosts.keys().chain(srv.keys()) {
            let labels = usize::from(name.num_labels());
            for keep in (apex_labels + 1)..labels {
                let ancestor = LowerName::new(&name.trim_to(keep));
                if !hosts.contains_key(&ancestor) && !srv.contains_key(&ancestor) {
                    empty_non_terminals.insert(ancestor);
                }
            }
        }
        let soa = SOA::new(
            Name::from_ascii("ns")
                .and_then(|n| n.append_domain(&apex))
                .unwrap_or_else(|_| apex.clone()),
            Name::from_ascii("hostmaster")
                .and_then(|n| n.append_domain(&apex))
                .unwrap_or_else(|_| apex.clone()),
            // Serial arithmetic (RFC 1982) wraps; the generation's low 32 bits are enough.
            snapshot.generation as u32,
            60,
            10,
            3600,
            NEGATIVE_TTL,
        );
        ZoneIndex {
            apex_lower: LowerName::new(&apex),
            apex,
            soa,
            snapshot,
            hosts,
            srv,
            empty_non_terminals,
        }
    }

    /// The table snapshot this index was built from.
    pub fn snapshot(&self) -> &Arc<PublishedTable> {
        &self.snapshot
    }

    /// The zone apex (lower-case FQDN).
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    /// Every VIP owner name in the zone, sorted (for logs and the admin API).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hosts.keys().map(|n| n.to_string()).collect();
        names.sort();
        names
    }

    /// A frontend answers when the data plane has bound it and it has at least one backend.
    fn live(&self, index: usize, serving: &dyn ServingCheck) -> bool {
        self.snapshot
            .table
            .frontends
            .get(index)
            .is_some_and(|f| !f.backends.is_empty() && serving.is_serving(&f.key()))
    }

    fn soa_record(&self, ttl: u32) -> Record {
        Record::from_rdata(self.apex.clone(), ttl, RData::SOA(self.soa.clone()))
    }

    /// Address records for `owner` from the live frontends among `frontends`.
    fn address_records(&self, owner: &Name, frontends: &[usize], qtype: RecordType) -> Vec<Record> {
        let ips: BTreeSet<IpAddr> = frontends
            .iter()
            .map(|&i| self.snapshot.table.frontends[i].listen.ip())
            .collect();
        ips.into_iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            })
            .map(|rdata| Record::from_rdata(owner.clone(), TTL, rdata))
            .collect()
    }

    /// Answers one decoded request. Total: every input gets a response message (the byte-level
    /// [`respond`] additionally drops messages that are responses themselves).
    pub fn answer(&self, request: &Message, serving: &dyn ServingCheck) -> Message {
        let mut response = Message::new();
        let mut header = Header::response_from_request(request.header());
        header.set_authoritative(false);
        header.set_recursion_available(false);
        header.set_authentic_data(false);
        header.set_truncated(false);
        response.set_header(header);
        let edns = request.extensions().as_ref();
        if let Some(edns) = edns {
            let mut ours = Edns::new();
            ours.set_max_payload(MAX_UDP_PAYLOAD);
            ours.set_version(0);
            response.set_edns(ours);
            if edns.version() > 0 {
                response.set_response_code(ResponseCode::BADVERS);
                return response;
            }
        }
        if request.message_type() != MessageType::Query {
            response.set_response_code(ResponseCode::FormErr);
            return response;
        }
        if request.op_code() != OpCode::Query {
            response.set_response_code(ResponseCode::NotImp);
            return response;
        }
        let [query] = request.queries() else {
            response.set_response_code(ResponseCode::FormErr);
            return response;
        };
        response.add_query(query.clone());
        self.answer_query(query, serving, edns.is_some(), &mut response);
        response
    }

    fn answer_query(
        &self,
        query: &Query,
        serving: &dyn ServingCheck,
        edns: bool,
        response: &mut Message,
    ) {
        let qname = query.name();
        let qtype = query.query_type();
        if !self.apex.zone_of(qname) {
            response.set_response_code(ResponseCode::Refused);
            return;
        }
        if query.query_class() != DNSClass::IN {
            response.set_response_code(ResponseCode::Refused);
            return;
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            response.set_response_code(ResponseCode::Refused);
            return;
        }
        response.set_authoritative(true);
        let mut owner = qname.clone();
        owner.set_fqdn(true);
        let lower = LowerName::new(&owner);

        if lower == self.apex_lower {
            match qtype {
                RecordType::SOA | RecordType::ANY => {
                    response.add_answer(self.soa_record(TTL));
                }
                _ => self.nodata(response),
            }
            return;
        }
        if let Some(frontends) = self.hosts.get(&lower) {
            let live: Vec<usize> = frontends
                .iter()
                .copied()
                .filter(|&i| self.live(i, serving))
                .collect();
            if live.is_empty() {
                self.not_ready(response, edns);
                return;
            }
            let records = self.address_records(&owner, &live, qtype);
            if records.is_empty() {
                self.nodata(response);
            } else {
                response.add_answers(records);
            }
            return;
        }
        if let Some(entry) = self.srv.get(&lower) {
            let live: Vec<usize> = entry
                .frontends
                .iter()
                .copied()
                .filter(|&i| self.live(i, serving))
                .collect();
            if live.is_empty() {
                self.not_ready(response, edns);
                return;
            }
            if !matches!(qtype, RecordType::SRV | RecordType::ANY) {
                self.nodata(response);
                return;
            }
            let ports: BTreeSet<u16> = live
                .iter()
                .map(|&i| self.snapshot.table.frontends[i].listen.port())
                .collect();
            for port in ports {
                let srv = SRV::new(0, 1, port, entry.target.clone());
                response.add_answer(Record::from_rdata(owner.clone(), TTL, RData::SRV(srv)));
            }
            // The target's addresses, from every live frontend of that name (not only this port).
            if let Some(target_frontends) = self.hosts.get(&LowerName::new(&entry.target)) {
                let live_target: Vec<usize> = target_frontends
                    .iter()
                    .copied()
                    .filter(|&i| self.live(i, serving))
                    .collect();
                response.add_additionals(self.address_records(
                    &entry.target,
                    &live_target,
                    RecordType::ANY,
                ));
            }
            return;
        }
        if self.empty_non_terminals.contains(&lower) {
            self.nodata(response);
            return;
        }
        response.set_response_code(ResponseCode::NXDomain);
        response.add_name_server(self.soa_record(NEGATIVE_TTL));
    }

    fn nodata(&self, response: &mut Message) {
        response.set_response_code(ResponseCode::NoError);
        response.add_name_server(self.soa_record(NEGATIVE_TTL));
    }

    fn not_ready(&self, response: &mut Message, edns: bool) {
        response.set_authoritative(false);
        response.set_response_code(ResponseCode::ServFail);
        if edns {
            if let Some(opt) = response.extensions_mut().as_mut() {
                let mut data = EDE_NOT_READY.to_be_bytes().to_vec();
                data.extend_from_slice(b"VIP not serving yet");
                opt.options_mut()
                    .insert(EdnsOption::Unknown(EDE_OPTION, data));
            }
        }
    }
}

/// Answers `request` from `snapshot` (convenience form of [`ZoneIndex::answer`] that indexes the
/// table for this one query; the server keeps one index per generation instead).
pub fn answer(
    request: &Message,
    snapshot: Arc<PublishedTable>,
    serving: &dyn ServingCheck,
    zone: &Name,
) -> Message {
    ZoneIndex::new(snapshot, zone).answer(request, serving)
}

/// The transport a query arrived on: it decides the response size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Decodes one query, answers it and encodes the response into `out` (cleared first).
/// Returns `false` when nothing must be sent: the input is shorter than a DNS header or is a
/// response (QR set). Never panics. UDP responses over the limit (512 bytes without EDNS, else
/// the client's size capped at [`MAX_UDP_PAYLOAD`]) first lose the additional section, then
/// everything but the question and OPT, with TC set.
pub fn respond(
    request: &[u8],
    index: &ZoneIndex,
    serving: &dyn ServingCheck,
    transport: Transport,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let Ok(header) = Header::read(&mut BinDecoder::new(request)) else {
        return false;
    };
    if header.message_type() == MessageType::Response {
        return false;
    }
    let error = |code: ResponseCode| {
        let mut m = Message::error_msg(header.id(), header.op_code(), code);
        m.set_recursion_desired(header.recursion_desired());
        m
    };
    if header.op_code() != OpCode::Query {
        return encode(&error(ResponseCode::NotImp), out);
    }
    let request = match Message::from_vec(request) {
        Ok(m) => m,
        Err(_) => return encode(&error(ResponseCode::FormErr), out),
    };
    let response = index.answer(&request, serving);
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp => usize::from(if request.extensions().is_some() {
            request
                .max_payload()
                .clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        } else {
            CLASSIC_UDP_PAYLOAD
        }),
    };
    if !encode(&response, out) {
        return encode(&error(ResponseCode::ServFail), out);
    }
    if out.len() <= limit {
        return true;
    }
    // Additional data is optional: dropping it does not need TC (RFC 2181 section 9).
    let mut smaller = response.clone();
    smaller.take_additionals();
    if encode(&smaller, out) && out.len() <= limit {
        return true;
    }
    encode(&response.truncate(), out)
}

fn encode(message: &Message, out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut encoder = BinEncoder::new(out);
    message.emit(&mut encoder).is_ok()
}

#[cfg(test)]
mod tests;
