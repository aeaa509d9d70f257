//! A few lines of RESP over TCP: enough for the harness to ask redis-servers and Sentinels
//! (`ROLE`, `INFO`, `SENTINEL …`, `WAIT`) without a Redis crate of its own.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A RESP reply, as much of it as the harness reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple or bulk string.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// One command to the server at `port` on a fresh connection (2 s at most).
pub async fn command(port: u16, args: &[&str]) -> Result<Reply, String> {
    let mut replies = commands(port, &[args]).await?;
    Ok(replies.pop().expect("one reply per command"))
}

/// Commands in order on one fresh connection to `port`; their replies.
pub async fn commands(port: u16, cmds: &[&[&str]]) -> Result<Vec<Reply>, String> {
    let talk = async {
        let conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to port {port}: {e}"))?;
        let mut conn = BufReader::new(conn);
        let mut out = Vec::new();
        for args in cmds {
            out.extend(format!("*{}\r\n", args.len()).as_bytes());
            for a in *args {
                out.extend(format!("${}\r\n", a.len()).as_bytes());
                out.extend(a.as_bytes());
                out.extend(b"\r\n");
            }
        }
        conn.get_mut()
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        let mut replies = Vec::new();
        for _ in cmds {
            replies.push(read_reply(&mut conn).await?);
        }
        Ok(replies)
    };
    tokio::time::timeout(Duration::from_secs(2), talk)
        .await
        .map_err(|_| format!("no answer from port {port} within 2 s"))?
}

fn read_reply<'a>(
    conn: &'a mut BufReader<tokio::net::TcpStream>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, String>> + Send + 'a>> {
    Box::pin(async move {
        let mut line = String::new();
        conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
        let line = line.trim_end_matches("\r\n");
        if line.is_empty() {
            return Err("connection closed".into());
        }
        let (kind, rest) = line.split_at(1);
        let number = || {
            rest.parse::<i64>()
                .map_err(|e| format!("bad RESP line {line:?}: {e}"))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(number()?),
            "$" => match number()? {
                n if n < 0 => Reply::Bulk(None),
                n => {
                    let mut buf = vec![0; n as usize + 2];
                    conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                    buf.truncate(n as usize);
                    Reply::Bulk(Some(buf))
                }
            },
            "*" => {
                let n = number()?;
                let mut items = Vec::new();
                for _ in 0..n.max(0) {
                    items.push(read_reply(conn).await?);
                }
                Reply::Array(items)
            }
            _ => return Err(format!("unexpected RESP line {line:?}")),
        })
    })
}
