//! One peer's BGP session, as a task: connect, exchange OPENs, keep the
//! session up with KEEPALIVEs inside the negotiated hold time, announce the
//! routes the caller wants and withdraw the ones it no longer wants; on any
//! failure tell the peer why (NOTIFICATION) when the RFC says so, record it
//! in the status, and connect again after a growing pause.
//!
//! States follow RFC 4271 section 8. This speaker only connects out (it
//! never listens), so `Active` is the state it waits in between attempts.
//! Graceful restart (RFC 4724), restarting-speaker side: the OPEN carries
//! the capability with our restart time, the R-bit on the first session of
//! the speaker's life (a new process or a new leader is a restart to the
//! peer), and End-of-RIB follows the initial announcement. Stopping (the
//! caller drops its sender) closes the connection without a NOTIFICATION,
//! so a peer with graceful restart keeps forwarding on our routes until
//! the next speaker has announced them again.

use crate::codec::{BgpCodec, CodecError};
use crate::message::{
    Capability, GracefulRestart, Message, Notification, Open, Update, AFI_IPV4, SAFI_UNICAST,
};
use crate::rib::{updates, PathContext, Routes};
use futures::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::Framed;

/// What one session needs to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: SocketAddr,
    /// The AS we speak to this peer as.
    pub local_as: u32,
    /// The AS the peer must say it is in.
    pub peer_as: u32,
    /// Our BGP identifier; `None`: the local address of the connection.
    pub router_id: Option<Ipv4Addr>,
    /// Proposed hold time in seconds (0, or at least 3).
    pub hold_time: u16,
    /// Graceful restart: the restart time we announce; `None`: off.
    pub graceful_restart: Option<u16>,
    pub connect_timeout: Duration,
    /// Pause after the first failure; doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

/// RFC 4271 section 8 states.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerState {
    #[default]
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl PeerState {
    pub const ALL: [PeerState; 6] = [
        PeerState::Idle,
        PeerState::Connect,
        PeerState::Active,
        PeerState::OpenSent,
        PeerState::OpenConfirm,
        PeerState::Established,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            PeerState::Idle => "Idle",
            PeerState::Connect => "Connect",
            PeerState::Active => "Active",
            PeerState::OpenSent => "OpenSent",
            PeerState::OpenConfirm => "OpenConfirm",
            PeerState::Established => "Established",
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A session as its owner sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerStatus {
    pub state: PeerState,
    /// What the peer has from us on the current session (empty when not
    /// Established).
    pub advertised: Arc<Routes>,
    /// Established sessions that ended.
    pub flaps: u64,
    /// Why the last session or attempt ended.
    pub last_error: Option<String>,
    /// UPDATE messages and their bytes sent, over the speaker's life.
    pub updates_sent: u64,
    pub update_bytes_sent: u64,
}

/// A running session; dropping the sender of the desired routes stops it.
pub struct Session;

impl Session {
    /// Start a session that keeps `desired` announced to the peer until the
    /// sender side of `desired` is dropped.
    pub fn spawn(
        config: PeerConfig,
        desired: watch::Receiver<Routes>,
    ) -> (tokio::task::JoinHandle<()>, watch::Receiver<PeerStatus>) {
        let (tx, rx) = watch::channel(PeerStatus::default());
        let runner = Runner {
            config,
            desired,
            status: tx,
        };
        (tokio::spawn(runner.run()), rx)
    }
}

struct Runner {
    config: PeerConfig,
    desired: watch::Receiver<Routes>,
    status: watch::Sender<PeerStatus>,
}

/// How a session ended.
enum End {
    /// The owner is gone: stop for good.
    Stopped,
    Failed(String),
}

type Conn = Framed<TcpStream, BgpCodec>;

/// What woke a session up.
enum Wake {
    Message(Message),
    Malformed(Notification, String),
    Closed(String),
    HoldExpired,
    Keepalive,
    Desired,
    Stopped,
}

impl Runner {
    async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut first = true;
        loop {
            self.set_state(PeerState::Connect);
            let end = match timeout(
                self.config.connect_timeout,
                TcpStream::connect(self.config.address),
            )
            .await
            {
                Ok(Ok(stream)) => {
                    let restarted = first;
                    first = false;
                    self.session(stream, restarted).await
                }
                Ok(Err(e)) => End::Failed(format!("cannot connect: {e}")),
                Err(_) => End::Failed(format!(
                    "cannot connect: no answer within {:?}",
                    self.config.connect_timeout
                )),
            };
            let was_established = self.status.borrow().state == PeerState::Established;
            match end {
                End::Stopped => {
                    self.set_state(PeerState::Idle);
                    return;
                }
                End::Failed(why) => {
                    tracing::warn!(peer = %self.config.address, error = %why, "BGP session down");
                    self.status.send_modify(|s| {
                        if was_established {
                            s.flaps += 1;
                        }
                        s.state = PeerState::Active;
                        s.advertised = Arc::default();
                        s.last_error = Some(why);
                    });
                }
            }
            failures = if was_established {
                1
            } else {
                failures.saturating_add(1)
            };
            let pause = self.backoff(failures);
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.stopped() => {
                    self.set_state(PeerState::Idle);
                    return;
                }
            }
        }
    }

    /// Resolves when the owner has dropped its sender.
    async fn stopped(&mut self) {
        while self.desired.changed().await.is_ok() {}
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        let base = self
            .config
            .min_backoff
            .saturating_mul(1u32 << exp)
            .min(self.config.max_backoff);
        // Up to a quarter more, so speakers restarted together spread out.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base + base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }

    fn set_state(&self, state: PeerState) {
        self.status.send_if_modified(|s| {
            let changed = s.state != state;
            s.state = state;
            changed
        });
    }

    fn open(&self, router_id: Ipv4Addr, restarted: bool) -> Open {
        let mut caps = vec![
            Capability::MultiProtocol {
                afi: AFI_IPV4,
                safi: SAFI_UNICAST,
            },
            Capability::RouteRefresh,
        ];
        if let Some(restart_time) = self.config.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestart {
                restarted,
                restart_time: restart_time.min(4095),
                // The nodes keep forwarding to their pods while we restart.
                families: vec![(AFI_IPV4, SAFI_UNICAST, true)],
            }));
        }
        Open::new(self.config.local_as, self.config.hold_time, router_id, caps)
    }

    async fn send(&self, conn: &mut Conn, m: Message) -> Result<(), String> {
        let limit = Duration::from_secs(u64::from(self.config.hold_time.max(3)));
        match timeout(limit, conn.send(m)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot send: {e}")),
            Err(_) => Err("cannot send: the peer has not read for a hold time".into()),
        }
    }

    /// Tell the peer why we close, then report it.
    async fn fail(&self, conn: &mut Conn, n: Notification, why: String) -> End {
        let _ = timeout(
            Duration::from_secs(1),
            conn.send(Message::Notification(n.clone())),
        )
        .await;
        End::Failed(format!("{why}; sent NOTIFICATION {n}"))
    }

    async fn wake(
        &mut self,
        conn: &mut Conn,
        hold: Option<Instant>,
        keepalive: Option<Instant>,
    ) -> Wake {
        let hold_timer = async {
            match hold {
                Some(t) => sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let keepalive_timer = async {
            match keepalive {
                Some(t) => sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = conn.next() => match m {
                Some(Ok(m)) => Wake::Message(m),
                Some(Err(CodecError::Malformed(e))) => Wake::Malformed(e.notification, e.what),
                Some(Err(CodecError::Io(e))) => Wake::Closed(format!("connection failed: {e}")),
                None => Wake::Closed("the peer closed the connection".into()),
            },
            _ = hold_timer => Wake::HoldExpired,
            _ = keepalive_timer => Wake::Keepalive,
            c = self.desired.changed() => if c.is_ok() { Wake::Desired } else { Wake::Stopped },
        }
    }

    async fn session(&mut self, stream: TcpStream, restarted: bool) -> End {
        let _ = stream.set_nodelay(true);
        let local = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => *a.ip(),
            _ => Ipv4Addr::UNSPECIFIED,
        };
        let router_id = self.config.router_id.unwrap_or(local);
        let mut conn = Framed::new(stream, BgpCodec::default());
        if let Err(e) = self
            .send(&mut conn, Message::Open(self.open(router_id, restarted)))
            .await
        {
            return End::Failed(e);
        }
        self.set_state(PeerState::OpenSent);
        // RFC 4271 8.2.2: a large hold timer until the OPEN arrives.
        let open_deadline = Instant::now() + Duration::from_secs(240);
        let peer_open = loop {
            match self.wake(&mut conn, Some(open_deadline), None).await {
                Wake::Message(Message::Open(o)) => break o,
                Wake::Message(Message::Notification(n)) => {
                    return End::Failed(format!("peer sent NOTIFICATION {n}"))
                }
                Wake::Message(other) => {
                    return self
                        .fail(
                            &mut conn,
                            Notification::new(Notification::FSM, 1),
                            format!("peer sent {} before its OPEN", kind(&other)),
                        )
                        .await
                }
                Wake::Malformed(n, what) => {
                    return self
                        .fail(
                            &mut conn,
                            n,
                            format!("malformed message from the peer: {what}"),
                        )
                        .await
                }
                Wake::Closed(why) => return End::Failed(why),
                Wake::HoldExpired => {
                    return self
                        .fail(
                            &mut conn,
                            Notification::new(Notification::HOLD_TIMER_EXPIRED, 0),
                            "no OPEN within 240 s".into(),
                        )
                        .await
                }
                Wake::Keepalive | Wake::Desired => {}
                Wake::Stopped => return End::Stopped,
            }
        };
        if let Err((n, why)) = self.check_open(&peer_open, router_id) {
            return self.fail(&mut conn, n, why).await;
        }
        let hold_secs = self.config.hold_time.min(peer_open.hold_time);
        let hold = (hold_secs > 0).then(|| Duration::from_secs(u64::from(hold_secs)));
        let keepalive_every = hold.map(|h| h / 3);
        conn.codec_mut().four_octet_as = peer_open.four_octet_as().is_some();
        if let Err(e) = self.send(&mut conn, Message::Keepalive).await {
            return End::Failed(e);
        }
        self.set_state(PeerState::OpenConfirm);
        let mut hold_at = hold.map(|h| Instant::now() + h);
        let mut keepalive_at = keepalive_every.map(|k| Instant::now() + k);
        loop {
            match self.wake(&mut conn, hold_at, keepalive_at).await {
                Wake::Message(Message::Keepalive) => break,
                Wake::Message(Message::Notification(n)) => {
                    return End::Failed(format!("peer sent NOTIFICATION {n}"))
                }
                Wake::Message(other) => {
                    return self
                        .fail(
                            &mut conn,
                            Notification::new(Notification::FSM, 2),
                            format!("peer sent {} in OpenConfirm", kind(&other)),
                        )
                        .await
                }
                Wake::Malformed(n, what) => {
                    return self
                        .fail(
                            &mut conn,
                            n,
                            format!("malformed message from the peer: {what}"),
                        )
                        .await
                }
                Wake::Closed(why) => return End::Failed(why),
                Wake::HoldExpired => return self.hold_expired(&mut conn, hold_secs).await,
                Wake::Keepalive => {
                    if let Err(e) = self.send(&mut conn, Message::Keepalive).await {
                        return End::Failed(e);
                    }
                    keepalive_at = keepalive_every.map(|k| Instant::now() + k);
                }
                Wake::Desired => {}
                Wake::Stopped => return End::Stopped,
            }
        }
        hold_at = hold.map(|h| Instant::now() + h);
        self.status.send_modify(|s| {
            s.state = PeerState::Established;
            s.last_error = None;
        });
        tracing::info!(peer = %self.config.address, peer_as = peer_open.asn(), hold = hold_secs, graceful_restart = peer_open.graceful_restart().is_some(), "BGP session established");
        let ctx = PathContext {
            local_as: self.config.local_as,
            ebgp: self.config.local_as != self.config.peer_as,
        };
        let mut advertised = Routes::new();
        if let Err(e) = self.announce(&mut conn, &mut advertised, &ctx).await {
            return End::Failed(e);
        }
        if peer_open.graceful_restart().is_some() || self.config.graceful_restart.is_some() {
            if let Err(e) = self.send_update(&mut conn, Update::default()).await {
                return End::Failed(e);
            }
        }
        loop {
            match self.wake(&mut conn, hold_at, keepalive_at).await {
                Wake::Message(Message::Keepalive | Message::Update(_)) => {
                    hold_at = hold.map(|h| Instant::now() + h);
                }
                Wake::Message(Message::RouteRefresh { .. }) => {
                    hold_at = hold.map(|h| Instant::now() + h);
                    let mut none = Routes::new();
                    if let Err(e) = self.announce(&mut conn, &mut none, &ctx).await {
                        return End::Failed(e);
                    }
                    advertised = none;
                }
                Wake::Message(Message::Notification(n)) => {
                    return End::Failed(format!("peer sent NOTIFICATION {n}"))
                }
                Wake::Message(Message::Open(_)) => {
                    return self
                        .fail(
                            &mut conn,
                            Notification::new(Notification::FSM, 3),
                            "peer sent OPEN in Established".into(),
                        )
                        .await
                }
                Wake::Malformed(n, what) => {
                    return self
                        .fail(
                            &mut conn,
                            n,
                            format!("malformed message from the peer: {what}"),
                        )
                        .await
                }
                Wake::Closed(why) => return End::Failed(why),
                Wake::HoldExpired => return self.hold_expired(&mut conn, hold_secs).await,
                Wake::Keepalive => {
                    if let Err(e) = self.send(&mut conn, Message::Keepalive).await {
                        return End::Failed(e);
                    }
                    keepalive_at = keepalive_every.map(|k| Instant::now() + k);
                }
                Wake::Desired => {
                    if let Err(e) = self.announce(&mut conn, &mut advertised, &ctx).await {
                        return End::Failed(e);
                    }
                }
                Wake::Stopped => return End::Stopped,
            }
        }
    }

    async fn hold_expired(&self, conn: &mut Conn, hold_secs: u16) -> End {
        self.fail(
            conn,
            Notification::new(Notification::HOLD_TIMER_EXPIRED, 0),
            format!("hold timer expired: nothing from the peer for {hold_secs} s"),
        )
        .await
    }

    /// Bring the peer from `advertised` to what the owner wants now.
    async fn announce(
        &mut self,
        conn: &mut Conn,
        advertised: &mut Routes,
        ctx: &PathContext,
    ) -> Result<(), String> {
        let desired = self.desired.borrow_and_update().clone();
        for u in updates(advertised, &desired, ctx) {
            self.send_update(conn, u).await?;
        }
        *advertised = desired;
        let snapshot = Arc::new(advertised.clone());
        self.status.send_modify(|s| s.advertised = snapshot);
        Ok(())
    }

    async fn send_update(&self, conn: &mut Conn, u: Update) -> Result<(), String> {
        let m = Message::Update(u);
        let mut buf = bytes::BytesMut::new();
        m.encode(conn.codec().four_octet_as, &mut buf);
        let len = buf.len() as u64;
        self.send(conn, m).await?;
        self.status.send_modify(|s| {
            s.updates_sent += 1;
            s.update_bytes_sent += len;
        });
        Ok(())
    }

    /// RFC 4271 6.2 and RFC 6793: version, AS, identifier, hold time.
    fn check_open(&self, o: &Open, router_id: Ipv4Addr) -> Result<(), (Notification, String)> {
        if o.version != 4 {
            return Err((
                Notification {
                    code: Notification::OPEN,
                    subcode: 1,
                    data: vec![0, 4],
                },
                format!("peer speaks BGP version {}, not 4", o.version),
            ));
        }
        if o.asn() != self.config.peer_as {
            return Err((
                Notification::new(Notification::OPEN, 2),
                format!(
                    "peer's OPEN says AS {}, but it is configured as AS {}",
                    o.asn(),
                    self.config.peer_as
                ),
            ));
        }
        let ibgp = self.config.local_as == self.config.peer_as;
        if o.bgp_id.is_unspecified() || (ibgp && o.bgp_id == router_id) {
            return Err((
                Notification::new(Notification::OPEN, 3),
                format!(
                    "peer's BGP identifier {} is not usable (zero, or ours on iBGP)",
                    o.bgp_id
                ),
            ));
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            return Err((
                Notification::new(Notification::OPEN, 6),
                format!("peer's hold time {} s is below 3 s", o.hold_time),
            ));
        }
        Ok(())
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Open(_) => "OPEN",
        Message::Update(_) => "UPDATE",
        Message::Notification(_) => "NOTIFICATION",
        Message::Keepalive => "KEEPALIVE",
        Message::RouteRefresh { .. } => "ROUTE-REFRESH",
    }
}
