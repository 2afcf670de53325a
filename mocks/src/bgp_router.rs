//! An in-process BGP router for `simulate`: it listens on 127.0.0.1 (a
//! port of its own), accepts the controller's session (OPEN checked
//! against the AS it expects, KEEPALIVEs inside the hold time), and keeps
//! the routes the UPDATEs announce until they are withdrawn or the session
//! ends. Built on the `bgp` crate's codec, so simulate needs no FRR; the
//! tests against a real router are in `frr`. It announces nothing and does
//! not keep routes through a restart (no graceful restart on this side).

use bgp::codec::BgpCodec;
use bgp::message::{Message, Notification, Open, PathAttribute};
use bgp::rib::Routes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;

/// What the router has seen, as a user would ask a router for it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterView {
    /// Whether a session is Established right now.
    pub established: bool,
    /// Prefix -> next hop, as announced on the current session.
    pub table: Routes,
    /// Sessions that reached Established.
    pub sessions: u64,
    /// Established sessions that ended.
    pub sessions_ended: u64,
    /// UPDATE messages received over the router's life (End-of-RIB too).
    pub updates: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
}

/// A running router; dropping it stops it and closes its session.
pub struct BgpRouter {
    pub address: SocketAddr,
    pub asn: u32,
    view: Arc<Mutex<RouterView>>,
    task: JoinHandle<()>,
}

impl Drop for BgpRouter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BgpRouter {
    /// Listen on 127.0.0.1 (a free port) as AS `asn`, with identifier
    /// `router_id`, accepting sessions from AS `peer_as`.
    pub async fn start(asn: u32, router_id: Ipv4Addr, peer_as: u32) -> std::io::Result<BgpRouter> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let address = listener.local_addr()?;
        let view = Arc::new(Mutex::new(RouterView::default()));
        let task = tokio::spawn(accept_loop(
            listener,
            Speaker {
                asn,
                router_id,
                peer_as,
            },
            view.clone(),
        ));
        Ok(BgpRouter {
            address,
            asn,
            view,
            task,
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// What the router holds and has seen now.
    pub fn view(&self) -> RouterView {
        self.view.lock().clone()
    }
}

#[derive(Clone, Copy)]
struct Speaker {
    asn: u32,
    router_id: Ipv4Addr,
    peer_as: u32,
}

/// One session at a time: a new connection replaces the one before (a new
/// leader's session after a kill, before the old one's hold time is out).
async fn accept_loop(listener: TcpListener, me: Speaker, view: Arc<Mutex<RouterView>>) {
    let mut current: Option<JoinHandle<()>> = None;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if let Some(old) = current.take() {
            old.abort();
            end_session(&view, "replaced by a new connection".into());
        }
        let view = view.clone();
        current = Some(tokio::spawn(async move {
            let why = session(stream, me, &view).await;
            end_session(&view, why);
        }));
    }
}

fn end_session(view: &Mutex<RouterView>, why: String) {
    let mut v = view.lock();
    if v.established {
        v.sessions_ended += 1;
    }
    v.established = false;
    v.table.clear();
    v.last_error = Some(why);
}

/// Run one session until it ends; returns why it ended.
async fn session(stream: TcpStream, me: Speaker, view: &Mutex<RouterView>) -> String {
    let _ = stream.set_nodelay(true);
    let mut conn = Framed::new(stream, BgpCodec::default());
    let open = match tokio::time::timeout(Duration::from_secs(30), conn.next()).await {
        Ok(Some(Ok(Message::Open(o)))) => o,
        Ok(Some(Ok(other))) => return format!("expected OPEN, got {other:?}"),
        Ok(Some(Err(e))) => return format!("malformed: {e}"),
        Ok(None) => return "closed before OPEN".into(),
        Err(_) => return "no OPEN within 30 s".into(),
    };
    if open.asn() != me.peer_as {
        let n = Notification::new(Notification::OPEN, 2);
        let _ = conn.send(Message::Notification(n)).await;
        return format!("OPEN from AS {}, expected AS {}", open.asn(), me.peer_as);
    }
    let hold = open.hold_time.min(90);
    let ours = Open::new(me.asn, hold, me.router_id, Vec::new());
    conn.codec_mut().four_octet_as = open.four_octet_as().is_some();
    if conn.send(Message::Open(ours)).await.is_err() || conn.send(Message::Keepalive).await.is_err()
    {
        return "cannot send OPEN".into();
    }
    let keepalive_every = Duration::from_secs(u64::from((hold / 3).max(1)));
    let hold_time = (hold > 0).then(|| Duration::from_secs(u64::from(hold)));
    let mut ticker = tokio::time::interval(keepalive_every);
    let mut established = false;
    loop {
        let next = async {
            match hold_time {
                Some(h) => tokio::time::timeout(h, conn.next()).await.ok(),
                None => Some(conn.next().await),
            }
        };
        tokio::select! {
            _ = ticker.tick() => {
                if conn.send(Message::Keepalive).await.is_err() {
                    return "cannot send KEEPALIVE".into();
                }
            }
            m = next => match m {
                None => {
                    let n = Notification::new(Notification::HOLD_TIMER_EXPIRED, 0);
                    let _ = conn.send(Message::Notification(n)).await;
                    return "hold timer expired".into();
                }
                Some(None) => return "the speaker closed the connection".into(),
                Some(Some(Err(e))) => return format!("malformed: {e}"),
                Some(Some(Ok(Message::Keepalive))) if !established => {
                    established = true;
                    let mut v = view.lock();
                    v.established = true;
                    v.sessions += 1;
                    v.table.clear();
                }
                Some(Some(Ok(Message::Update(u)))) => {
                    let mut v = view.lock();
                    v.updates += 1;
                    for w in &u.withdrawn {
                        v.table.remove(&w.trunc());
                    }
                    let hop = u.attributes.iter().find_map(|a| match a {
                        PathAttribute::NextHop(h) => Some(*h),
                        _ => None,
                    });
                    if let Some(hop) = hop {
                        for p in &u.nlri {
                            v.table.insert(p.trunc(), hop);
                        }
                    }
                }
                Some(Some(Ok(Message::Notification(n)))) => {
                    return format!("the speaker sent NOTIFICATION {n}")
                }
                Some(Some(Ok(_))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bgp::{PeerConfig, PeerState, Session};
    use ipnet::Ipv4Net;
    use tokio::sync::watch;

    fn config(port: u16, local_as: u32) -> PeerConfig {
        PeerConfig {
            address: (Ipv4Addr::LOCALHOST, port).into(),
            local_as,
            peer_as: 65001,
            router_id: Some(Ipv4Addr::new(192, 0, 2, 10)),
            hold_time: 9,
            graceful_restart: Some(120),
            connect_timeout: Duration::from_secs(1),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        }
    }

    async fn until(router: &BgpRouter, what: &str, f: impl Fn(&RouterView) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f(&router.view()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {:?}",
                router.view()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn holds_what_the_speaker_announces_and_forgets_withdrawals() {
        let router = BgpRouter::start(65001, Ipv4Addr::new(192, 0, 2, 1), 64512)
            .await
            .unwrap();
        let a: Ipv4Net = "10.244.1.0/24".parse().unwrap();
        let b: Ipv4Net = "10.244.2.0/24".parse().unwrap();
        let (tx, rx) = watch::channel(Routes::from([
            (a, Ipv4Addr::new(192, 168, 0, 1)),
            (b, Ipv4Addr::new(192, 168, 0, 2)),
        ]));
        let (task, status) = Session::spawn(config(router.port(), 64512), rx);
        until(&router, "two routes", |v| {
            v.established && v.table.len() == 2
        })
        .await;
        assert_eq!(router.view().table[&b], Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(status.borrow().state, PeerState::Established);
        tx.send_replace(Routes::from([(a, Ipv4Addr::new(192, 168, 0, 1))]));
        until(&router, "b withdrawn", |v| v.table.len() == 1).await;
        assert_eq!(router.view().table.keys().collect::<Vec<_>>(), [&a]);
        drop(tx);
        let _ = task.await;
        until(&router, "session over", |v| !v.established).await;
        let v = router.view();
        assert!(v.table.is_empty() && v.sessions == 1 && v.sessions_ended == 1);
    }

    #[tokio::test]
    async fn refuses_the_wrong_as() {
        let router = BgpRouter::start(65001, Ipv4Addr::new(192, 0, 2, 1), 64512)
            .await
            .unwrap();
        let (_tx, rx) = watch::channel(Routes::new());
        let (task, mut status) = Session::spawn(config(router.port(), 64999), rx);
        let s = tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| s.last_error.is_some()),
        )
        .await
        .unwrap()
        .unwrap()
        .clone();
        assert!(
            s.last_error.as_deref().unwrap_or("").contains("AS"),
            "{s:?}"
        );
        assert!(!router.view().established);
        task.abort();
    }
}
