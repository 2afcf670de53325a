//! Leader election as the cluster sees it, against the fake apiserver: a
//! leader whose apiserver connection goes half-open stops writing within
//! its fence, before a standby may take over; a standby judges a Lease by
//! what it has watched on its own clock, so a holder whose clock runs an
//! hour behind (and who keeps renewing) is never pushed out.

use controller::fence::Fence;
use controller::leader::{LeaderElector, LeaseSettings};
use controller::server::Health;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use mocks::kubeapi::{FakeApiServer, Options};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

async fn apiserver() -> FakeApiServer {
    FakeApiServer::start(Options::without_controllers())
        .await
        .unwrap()
}

fn settings(identity: &str, lease: Duration) -> LeaseSettings {
    LeaseSettings {
        name: "vpc-eni-controller".into(),
        namespace: "default".into(),
        identity: identity.into(),
        lease_duration: lease,
        renew_interval: Duration::from_millis(300),
    }
}

/// A TCP proxy on 127.0.0.1 that can be frozen: open connections stay open
/// but nothing is passed on any more, as a half-open connection behaves.
struct Proxy {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pass(ri, wo, f.clone()));
                tokio::spawn(pass(ro, wi, f.clone()));
            }
        });
        Proxy { addr, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::SeqCst) {
            // Hold the connection open and pass nothing, for good.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_behind_a_half_open_connection_stops_writing_before_a_standby_may_lead() {
    let api = apiserver().await;
    let proxy = Proxy::start(api.addr()).await;
    let mut config = api.client_config();
    config.cluster_url = format!("http://{}", proxy.addr).parse().unwrap();
    let client = kube::Client::try_from(config).unwrap();

    let lease = Duration::from_secs(3);
    let elector = LeaderElector::new(client, settings("leader-a", lease));
    let (tx, rx) = watch::channel(false);
    let health = Health::default();
    health.expect_election(lease * 2);
    let fence = Fence::closed();
    let shutdown = CancellationToken::new();
    tokio::spawn(elector.run(tx, health.clone(), fence.clone(), shutdown.clone()));
    wait_until("leadership", Duration::from_secs(5), || *rx.borrow()).await;
    assert!(fence.is_open());

    // The connection goes half-open: requests are sent, nothing comes back.
    proxy.freeze();
    let took = wait_until("stepping down", lease * 2, || !*rx.borrow()).await;
    assert!(!fence.is_open(), "writes still allowed after stepping down");
    // Fenced within 2/3 of the lease: before any standby may take over.
    assert!(
        took < lease,
        "stepped down only after {took:?}; a standby may lead after {lease:?}"
    );
    // The election loop itself goes on (its rounds are bounded): live.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(health.is_live());
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn healthz_fails_when_the_election_loop_stops_coming_round() {
    let health = Health::default();
    assert!(health.is_live(), "no election: always live");
    health.expect_election(Duration::from_secs(30));
    tokio::time::advance(Duration::from_secs(20)).await;
    health.election_alive();
    tokio::time::advance(Duration::from_secs(20)).await;
    assert!(health.is_live());
    tokio::time::advance(Duration::from_secs(15)).await;
    assert!(!health.is_live());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_clock_runs_an_hour_behind_is_never_pushed_out_while_it_renews() {
    let api = apiserver().await;
    let client = kube::Client::try_from(api.client_config()).unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let behind = |n: i64| {
        let t = k8s_openapi::jiff::Timestamp::now()
            - k8s_openapi::jiff::SignedDuration::from_secs(3600)
            + k8s_openapi::jiff::SignedDuration::from_millis(n);
        MicroTime(t)
    };
    leases
        .create(
            &PostParams::default(),
            &Lease {
                metadata: ObjectMeta {
                    name: Some("vpc-eni-controller".into()),
                    namespace: Some("default".into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some("slow-clock".into()),
                    lease_duration_seconds: Some(2),
                    renew_time: Some(behind(0)),
                    ..LeaseSpec::default()
                }),
            },
        )
        .await
        .unwrap();
    // The holder keeps renewing, with its wall clock an hour behind.
    let renewing = CancellationToken::new();
    {
        let leases = leases.clone();
        let stop = renewing.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.is_cancelled() {
                n += 500;
                if let Ok(mut lease) = leases.get("vpc-eni-controller").await {
                    if let Some(spec) = lease.spec.as_mut() {
                        spec.renew_time = Some(behind(n));
                    }
                    let _ = leases
                        .replace("vpc-eni-controller", &PostParams::default(), &lease)
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    let elector = LeaderElector::new(client, settings("standby", Duration::from_secs(2)));
    let (tx, rx) = watch::channel(false);
    let health = Health::default();
    let fence = Fence::closed();
    let shutdown = CancellationToken::new();
    tokio::spawn(elector.run(tx, health, fence.clone(), shutdown.clone()));
    // Three lease durations while the holder renews: never taken over.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        !*rx.borrow(),
        "took the Lease of a holder that kept renewing"
    );
    assert!(!fence.is_open());

    // The holder stops: after a lease duration of silence, the standby leads.
    renewing.cancel();
    wait_until("the standby taking over", Duration::from_secs(8), || {
        *rx.borrow()
    })
    .await;
    let lease = leases.get("vpc-eni-controller").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("standby")
    );
    shutdown.cancel();
}
