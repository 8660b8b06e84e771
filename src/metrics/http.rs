//! A very small HTTP/1.1 server for three GET endpoints: `/metrics`, `/healthz`,
//! `/readyz`. One request per connection (`Connection: close`), bounded request size
//! and read time, so a slow or hostile client cannot tie it up.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The largest request head read; anything longer is refused.
const MAX_REQUEST: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A response: status code, content type, body.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
}

/// Serves until `shutdown` resolves; `route` maps a path to a response.
pub async fn serve<F>(listener: TcpListener, route: F, shutdown: impl Future<Output = ()>)
where
    F: Fn(&str) -> Response + Clone + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let route = route.clone();
        tokio::task::spawn_local(async move {
            let _ = handle(stream, route).await;
        });
    }
}

async fn handle<F: Fn(&str) -> Response>(mut stream: TcpStream, route: F) -> std::io::Result<()> {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut len = 0;
    let head_end = loop {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf[len..])).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        len += n;
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if len == buf.len() {
            return respond(&mut stream, &Response::text(431, "request too large\n")).await;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let response = match (parts.next(), parts.next()) {
        (Some("GET" | "HEAD"), Some(target)) => route(target.split('?').next().unwrap_or("/")),
        _ => Response::text(405, "only GET is served here\n"),
    };
    respond(&mut stream, &response).await
}

async fn respond(stream: &mut TcpStream, r: &Response) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        r.content_type,
        r.body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(r.body.as_bytes()).await?;
    stream.shutdown().await
}
