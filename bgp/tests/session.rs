//! A session against scripted peers on 127.0.0.1: what it sends (OPEN
//! capabilities, the initial announcement, End-of-RIB, changes), and what
//! it does with bad input (garbage, a NOTIFICATION, the wrong AS, silence
//! past the hold time): the right NOTIFICATION back, the reason in its
//! status, and a new connection after a growing pause. Never a panic.

use bgp::codec::BgpCodec;
use bgp::message::{Capability, GracefulRestart, Message, Notification, Open, PathAttribute};
use bgp::rib::Routes;
use bgp::{PeerConfig, PeerState, PeerStatus, Session};
use futures::{SinkExt, StreamExt};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

type Peer = Framed<TcpStream, BgpCodec>;

fn config(port: u16) -> PeerConfig {
    PeerConfig {
        address: (Ipv4Addr::LOCALHOST, port).into(),
        local_as: 64512,
        peer_as: 64512,
        router_id: Some(Ipv4Addr::new(192, 0, 2, 10)),
        hold_time: 3,
        graceful_restart: Some(120),
        connect_timeout: Duration::from_secs(1),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
    }
}

fn routes(items: &[(&str, [u8; 4])]) -> Routes {
    items
        .iter()
        .map(|(p, h)| (p.parse().unwrap(), Ipv4Addr::from(*h)))
        .collect()
}

async fn accept(listener: &TcpListener) -> Peer {
    let (s, _) = timeout(WAIT, listener.accept())
        .await
        .expect("no connection")
        .unwrap();
    Framed::new(s, BgpCodec::default())
}

async fn next(peer: &mut Peer) -> Message {
    timeout(WAIT, peer.next())
        .await
        .expect("nothing from the speaker")
        .expect("connection closed")
        .expect("speaker sent something malformed")
}

fn peer_open(asn: u32, hold: u16) -> Message {
    Message::Open(Open::new(
        asn,
        hold,
        Ipv4Addr::new(192, 0, 2, 1),
        vec![Capability::GracefulRestart(GracefulRestart {
            restarted: false,
            restart_time: 120,
            families: vec![(1, 1, false)],
        })],
    ))
}

/// Accept, read the speaker's OPEN, answer with ours and a KEEPALIVE, read
/// its KEEPALIVE.
async fn establish(listener: &TcpListener, asn: u32) -> (Peer, Open) {
    let mut peer = accept(listener).await;
    let Message::Open(open) = next(&mut peer).await else {
        panic!("first message is not OPEN")
    };
    peer.codec_mut().four_octet_as = true;
    peer.send(peer_open(asn, 3)).await.unwrap();
    peer.send(Message::Keepalive).await.unwrap();
    assert_eq!(next(&mut peer).await, Message::Keepalive);
    (peer, open)
}

async fn wait_status(
    rx: &mut watch::Receiver<PeerStatus>,
    what: &str,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let found = match timeout(WAIT, rx.wait_for(|s| f(s))).await {
        Ok(Ok(s)) => Some(s.clone()),
        _ => None,
    };
    found.unwrap_or_else(|| panic!("{what}: status is {:?}", *rx.borrow()))
}

/// The next message that is not a KEEPALIVE.
async fn next_non_keepalive(peer: &mut Peer) -> Message {
    loop {
        match next(peer).await {
            Message::Keepalive => continue,
            m => return m,
        }
    }
}

#[tokio::test]
async fn announces_then_end_of_rib_then_follows_changes() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = watch::channel(routes(&[
        ("10.244.1.0/24", [10, 0, 0, 1]),
        ("10.244.2.0/24", [10, 0, 0, 2]),
    ]));
    let (task, mut status) = Session::spawn(config(port), rx);
    let (mut peer, open) = establish(&listener, 64512).await;
    assert_eq!(open.asn(), 64512);
    assert_eq!(open.hold_time, 3);
    assert!(open.route_refresh());
    let gr = open
        .graceful_restart()
        .expect("graceful restart capability");
    assert!(
        gr.restarted,
        "the first session of a speaker carries the R-bit"
    );
    assert_eq!(gr.restart_time, 120);
    let mut announced = Routes::new();
    for _ in 0..2 {
        let Message::Update(u) = next_non_keepalive(&mut peer).await else {
            panic!("not an UPDATE")
        };
        let hop = u.attributes.iter().find_map(|a| match a {
            PathAttribute::NextHop(h) => Some(*h),
            _ => None,
        });
        for p in u.nlri {
            announced.insert(p, hop.unwrap());
        }
    }
    assert_eq!(announced, *tx.borrow());
    let Message::Update(eor) = next_non_keepalive(&mut peer).await else {
        panic!("not an UPDATE")
    };
    assert!(eor.is_end_of_rib());
    wait_status(&mut status, "established", |s| {
        s.state == PeerState::Established && s.advertised.len() == 2
    })
    .await;

    tx.send_replace(routes(&[("10.244.1.0/24", [10, 0, 0, 1])]));
    let Message::Update(w) = next_non_keepalive(&mut peer).await else {
        panic!("not an UPDATE")
    };
    assert_eq!(w.withdrawn, vec!["10.244.2.0/24".parse().unwrap()]);
    // A route refresh gets everything again.
    peer.send(Message::RouteRefresh { afi: 1, safi: 1 })
        .await
        .unwrap();
    let Message::Update(again) = next_non_keepalive(&mut peer).await else {
        panic!("not an UPDATE")
    };
    assert_eq!(again.nlri, vec!["10.244.1.0/24".parse().unwrap()]);
    // Keepalives keep coming within the hold time while we only listen.
    peer.send(Message::Keepalive).await.unwrap();
    let started = Instant::now();
    assert_eq!(next(&mut peer).await, Message::Keepalive);
    assert!(started.elapsed() < Duration::from_secs(3));
    // Stopping closes without a NOTIFICATION (graceful restart keeps our routes).
    drop(tx);
    assert!(timeout(WAIT, peer.next()).await.unwrap().is_none());
    timeout(WAIT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn garbage_gets_a_header_error_and_a_reconnect_after_a_pause() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, rx) = watch::channel(Routes::new());
    let (_task, mut status) = Session::spawn(config(port), rx);
    let mut peer = accept(&listener).await;
    assert!(matches!(next(&mut peer).await, Message::Open(_)));
    peer.get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: router\r\n\r\n")
        .await
        .unwrap();
    let closed_at = Instant::now();
    match next(&mut peer).await {
        Message::Notification(n) => assert_eq!((n.code, n.subcode), (1, 1)),
        m => panic!("{m:?}"),
    }
    let s = wait_status(&mut status, "error reported", |s| s.last_error.is_some()).await;
    assert!(s.last_error.unwrap().contains("marker"));
    let mut again = accept(&listener).await;
    assert!(
        closed_at.elapsed() >= Duration::from_millis(200),
        "reconnected without a pause"
    );
    let Message::Open(open) = next(&mut again).await else {
        panic!()
    };
    assert!(
        !open.graceful_restart().unwrap().restarted,
        "only the first session carries the R-bit"
    );
}

#[tokio::test]
async fn a_peer_notification_is_reported_and_the_session_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, rx) = watch::channel(routes(&[("10.244.1.0/24", [10, 0, 0, 1])]));
    let (_task, mut status) = Session::spawn(config(port), rx);
    let (mut peer, _) = establish(&listener, 64512).await;
    wait_status(&mut status, "established", |s| {
        s.state == PeerState::Established
    })
    .await;
    peer.send(Message::Notification(Notification::new(6, 4)))
        .await
        .unwrap();
    let s = wait_status(&mut status, "down", |s| s.state != PeerState::Established).await;
    assert_eq!(s.flaps, 1);
    assert!(s.last_error.unwrap().contains("Administrative Reset"));
    assert!(s.advertised.is_empty());
    let (_peer, _) = establish(&listener, 64512).await;
    let s = wait_status(&mut status, "back", |s| {
        s.state == PeerState::Established && s.advertised.len() == 1
    })
    .await;
    assert_eq!(s.flaps, 1);
}

#[tokio::test]
async fn the_wrong_as_is_refused_with_bad_peer_as() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, rx) = watch::channel(Routes::new());
    let (_task, mut status) = Session::spawn(config(port), rx);
    let mut peer = accept(&listener).await;
    assert!(matches!(next(&mut peer).await, Message::Open(_)));
    peer.send(peer_open(4_200_000_099, 3)).await.unwrap();
    match next(&mut peer).await {
        Message::Notification(n) => assert_eq!((n.code, n.subcode), (2, 2)),
        m => panic!("{m:?}"),
    }
    let s = wait_status(&mut status, "refused", |s| s.last_error.is_some()).await;
    let e = s.last_error.unwrap();
    assert!(e.contains("AS 4200000099") && e.contains("AS 64512"), "{e}");
    assert_ne!(s.state, PeerState::Established);
    // And it tries again.
    let _ = accept(&listener).await;
}

#[tokio::test]
async fn silence_past_the_hold_time_ends_the_session() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, rx) = watch::channel(Routes::new());
    let (_task, mut status) = Session::spawn(config(port), rx);
    let (mut peer, _) = establish(&listener, 64512).await;
    let up = Instant::now();
    let n = loop {
        match next(&mut peer).await {
            Message::Notification(n) => break n,
            _ => continue,
        }
    };
    assert_eq!(n.code, Notification::HOLD_TIMER_EXPIRED);
    assert!(
        up.elapsed() >= Duration::from_millis(2900),
        "expired after {:?}",
        up.elapsed()
    );
    let s = wait_status(&mut status, "down", |s| s.flaps == 1).await;
    assert!(s.last_error.unwrap().contains("hold timer expired"));
    let _ = accept(&listener).await;
}

#[tokio::test]
async fn pauses_between_failed_attempts_grow() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_tx, rx) = watch::channel(Routes::new());
    let (_task, _status) = Session::spawn(config(port), rx);
    let mut at = Vec::new();
    for _ in 0..4 {
        let (s, _) = timeout(WAIT, listener.accept()).await.unwrap().unwrap();
        at.push(Instant::now());
        drop(s);
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0]), "{gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(200), "{gaps:?}");
}
