//! Cost of one pick per algorithm (10 and 100 backends, nothing ejected) and of building a
//! Maglev table. Run: `cargo bench --bench select`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use vipd::balance::maglev::Maglev;
use vipd::balance::select::{Candidates, Route, Select};
use vipd::balance::{BackendRegistry, Balance, HealthConfig};
use vipd::table::{Backend, BackendState, Frontend, FrontendKind, Protocol};

fn frontend(n: usize, balance: Balance) -> Frontend {
    Frontend {
        protocol: Protocol::Tcp,
        listen: SocketAddr::from(([127, 0, 0, 1], 80)),
        kind: FrontendKind::ServicePort,
        vip_name: None,
        app: "/bench".into(),
        owner_kind: vipd::table::OwnerKind::App,
        apps: vec!["/bench".into()],
        port_index: 0,
        port_name: None,
        options: vipd::table::PortOptions::from_pairs([("balance", balance.as_str())]).unwrap(),
        backends: (0..n)
            .map(|i| Backend {
                address: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080)),
                task: format!("t{i}").into(),
                state: BackendState::Up,
            })
            .collect(),
    }
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    for n in [10usize, 100] {
        for balance in [
            Balance::RoundRobin,
            Balance::LeastConn,
            Balance::P2c,
            Balance::Maglev,
        ] {
            let fe = frontend(n, balance);
            let sel = Route::for_frontend(&fe, &BackendRegistry::new(), &HealthConfig::default());
            let mut ip = 0u32;
            group.bench_with_input(BenchmarkId::new(balance.as_str(), n), &n, |b, _| {
                b.iter(|| {
                    ip = ip.wrapping_add(1);
                    let client = IpAddr::V4(Ipv4Addr::from(ip));
                    black_box(sel.select(&Candidates::with_client(&fe.backends, &[], client)))
                })
            });
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group.sample_size(20);
    for n in [10usize, 100, 1000] {
        let addrs: Vec<SocketAddr> = frontend(n, Balance::Maglev)
            .backends
            .iter()
            .map(|b| b.address)
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(n), &addrs, |b, a| {
            b.iter(|| black_box(Maglev::build(a)))
        });
    }
    group.finish();
}

criterion_group!(benches, picks, maglev_build);
criterion_main!(benches);
