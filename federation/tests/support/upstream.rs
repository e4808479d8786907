//! A tiny upstream resolver for the forwarding tests, on UDP and TCP of one ephemeral port: it
//! answers every A question with 192.0.2.1 (names starting `big.`: 30 addresses, and over
//! UDP only an empty TC response, so the asker must come back over TCP), and records each
//! query's transport, id and name. Silent mode receives and never answers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode};
use hickory_proto::rr::{RData, Record, rdata};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// One query the upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The message id.
    pub id: u16,
    /// The question's name, lowercase, with the final dot.
    pub name: String,
}

/// A running fake upstream; stops when dropped.
pub(crate) struct FakeUpstream {
    /// Its address (UDP and TCP).
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts one that answers.
    pub(crate) async fn answering() -> anyhow::Result<Self> {
        Self::start(true).await
    }

    /// Starts one that receives and never answers.
    pub(crate) async fn silent() -> anyhow::Result<Self> {
        Self::start(false).await
    }

    async fn start(answers: bool) -> anyhow::Result<Self> {
        // One port for both protocols: a free UDP port may be taken for TCP by another test
        // running at the same time, so a clash picks another port.
        let mut attempt = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (udp, addr, tcp),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && attempt < 20 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let udp_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok((len, from)) = udp.recv_from(&mut buf).await {
                    if let Some(response) = respond(&buf[..len], "udp", &seen)
                        && answers
                    {
                        let _ = udp.send_to(&response, from).await;
                    }
                }
            })
        };
        let tcp_task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = tcp.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let Ok(len) = stream.read_u16().await else {
                            return;
                        };
                        let mut query = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut query).await.is_err() {
                            return;
                        }
                        if let Some(response) = respond(&query, "tcp", &seen)
                            && answers
                        {
                            let mut framed = (response.len() as u16).to_be_bytes().to_vec();
                            framed.extend(response);
                            let _ = stream.write_all(&framed).await;
                        }
                        // Silent: hold the connection open until the asker gives up.
                        let _ = stream.read_u8().await;
                    });
                }
            })
        };
        Ok(Self {
            addr,
            seen,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// Every query received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Records `query` and builds the answer.
fn respond(query: &[u8], transport: &'static str, seen: &Mutex<Vec<Seen>>) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    let question = request.queries.first()?.clone();
    let name = question.name.to_ascii().to_ascii_lowercase();
    seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        transport,
        id: request.metadata.id,
        name: name.clone(),
    });
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(question.clone());
    let big = name.starts_with("big.");
    if big && transport == "udp" {
        response.metadata.truncation = true;
        return response.to_vec().ok();
    }
    let count = if big { 30 } else { 1 };
    for i in 0..count {
        response.add_answer(Record::from_rdata(
            question.name.clone(),
            60,
            RData::A(rdata::A::new(192, 0, 2, 1 + i)),
        ));
    }
    response.to_vec().ok()
}
