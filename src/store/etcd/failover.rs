//! Failover: every request goes to the preferred member and, while members are unreachable,
//! round the others (see the module docs of [`super`]); and the probe that checks each member
//! at connect time.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use super::error::{classify, closed_early, Failed, Kind, TlsProblem};
use super::{EtcdError, EtcdOptions, EtcdStore, Member};

/// How many times a request goes round all members while they are unreachable (pausing 0.1,
/// 0.2, 0.4, 0.8 and 1.6 s between rounds).
pub const FAILOVER_ROUNDS: usize = 6;

/// However many rounds that takes, failover keeps trying an unreachable cluster for at least this
/// long: a leader election on a loaded machine can take several seconds.
pub const FAILOVER_WINDOW: Duration = Duration::from_secs(15);

impl EtcdStore {
    /// Sends `request` to the preferred member; when that member is unreachable, to the next
    /// ones. After every round over all members it pauses (0.1 s, doubling: a leader election
    /// takes a second or two), for [`FAILOVER_ROUNDS`] rounds. Other failures return at once.
    pub(super) async fn call<T, F, Fut>(&self, mut request: F) -> Result<T, Failed>
    where
        F: FnMut(&Member) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let members = &self.inner.members;
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let attempts = members.len() * FAILOVER_ROUNDS;
        let deadline = tokio::time::Instant::now() + FAILOVER_WINDOW;
        let mut attempt = 0;
        loop {
            let index = (start + attempt) % members.len();
            let member = &members[index];
            // tonic's own timeout ends when the response headers arrive: a member that stalls
            // in the middle of a response body (found by the fault tests, with etcd 3.6) would
            // hang the request for ever. This bounds the whole response.
            let timeout = self.inner.request_timeout;
            let answer = match tokio::time::timeout(timeout, request(member)).await {
                Ok(answer) => answer,
                Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no complete answer within {} ms (--command-timeout)",
                        timeout.as_millis()
                    ),
                ))),
            };
            match answer {
                Ok(value) => {
                    if index != start {
                        self.inner.preferred.store(index, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(error) => {
                    let (kind, detail) = classify(&error);
                    attempt += 1;
                    let exhausted = attempt >= attempts && tokio::time::Instant::now() >= deadline;
                    if kind == Kind::Unreachable && members.len() > 1 {
                        self.note_unanswered(&member.endpoint, detail.clone());
                    }
                    if kind != Kind::Unreachable || exhausted {
                        return Err(Failed {
                            kind,
                            endpoint: member.endpoint.clone(),
                            detail,
                            error,
                        });
                    }
                    if attempt % members.len() == 0 {
                        let round = (attempt / members.len()).min(5);
                        tokio::time::sleep(Duration::from_millis(100 << (round - 1))).await;
                    }
                }
            }
        }
    }
}

/// Connects one member and asks for its status within the connect timeout. A TLS failure is
/// diagnosed in terms of the files given ([`TlsProblem`]).
pub(super) async fn probe(
    endpoint: &str,
    options: ConnectOptions,
    opts: &EtcdOptions,
) -> Result<Member, EtcdError> {
    let timeout = opts.connect_timeout;
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await?;
        let status = client.status().await?;
        // etcd always names its member and cluster; kine answers with an empty header.
        let kine = status
            .header()
            .is_none_or(|h| h.member_id() == 0 && h.cluster_id() == 0);
        Ok::<_, etcd_client::Error>((client, kine))
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok((client, kine))) => Ok(Member {
            endpoint: endpoint.to_owned(),
            kv: client
                .kv_client()
                .max_decoding_message_size(opts.max_page_bytes),
            client,
            kine,
        }),
        Ok(Err(error)) => {
            let (mut kind, mut detail) = classify(&error);
            // A TLS server hangs up on a client that sends no certificate (unless the alert
            // arrives first, which is a race) and on a client speaking plain HTTP/2.
            let early = kind != Kind::Tls && closed_early(&detail);
            let identity = opts.cert.as_ref().zip(opts.key.as_ref());
            if kind == Kind::Tls || early || kind == Kind::Unreachable {
                if let Some(problem) =
                    TlsProblem::diagnose(&detail, endpoint, opts.cacert.as_ref(), identity, early)
                {
                    return Err(EtcdError::Tls {
                        endpoint: endpoint.to_owned(),
                        problem: Some(Box::new(problem)),
                        detail,
                    });
                }
            }
            if early {
                kind = Kind::Tls;
                let hint = if endpoint.starts_with("https://") {
                    "the server closed the connection during the handshake (it may require a \
                     client certificate)"
                } else {
                    "the server closed the connection (a TLS etcd does this to plain http:// \
                     clients)"
                };
                detail = format!("{hint}: {detail}");
            }
            Err(Failed {
                kind,
                endpoint: endpoint.to_owned(),
                detail,
                error,
            }
            .into_error("status"))
        }
        Err(_) => Err(EtcdError::Unreachable {
            endpoint: endpoint.to_owned(),
            detail: format!("no answer within {} ms", timeout.as_millis()),
        }),
    }
}
