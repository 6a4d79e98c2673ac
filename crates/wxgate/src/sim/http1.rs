//! A minimal HTTP/1.1 client connection for the load generator: write a pre-built request
//! in one call, read one response, keep the connection alive.
//!
//! It exists because a general client (pooling, header maps, URL parsing, body streams)
//! costs more per request than the server under test spends on a `success`, and the load
//! generator must be able to saturate a server from a single core. It supports exactly what
//! a webhook answer needs: `Content-Length`, `Transfer-Encoding: chunked`, a body ended by
//! closing the connection, and `Connection: close`. No pipelining, no TLS, no redirects.

use std::fmt;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The largest response body accepted.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ClientError {
    /// A socket error.
    Io(std::io::Error),
    /// The server closed the connection before a complete response.
    Closed,
    /// The response is not HTTP/1.x as this client reads it.
    Malformed(&'static str),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "{e}"),
            ClientError::Closed => f.write_str("connection closed before a complete response"),
            ClientError::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// A short label for counting errors by kind.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Io(e) => format!("io: {:?}", e.kind()),
            ClientError::Closed => "closed by server".to_owned(),
            ClientError::Malformed(why) => format!("malformed: {why}"),
        }
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed (a response head, body, or the next response).
    buffer: Vec<u8>,
    /// The last response's body.
    body: Vec<u8>,
}

/// The head of a response, as far as this client needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Whether the server will close the connection after this response.
    pub close: bool,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

impl Connection {
    /// Connects with `TCP_NODELAY` (requests are one write each; Nagle would only delay).
    pub async fn connect(addr: SocketAddr) -> Result<Connection, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: Vec::with_capacity(8192),
            body: Vec::with_capacity(4096),
        })
    }

    /// The body of the last response.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the response.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Response, ClientError> {
        self.stream.write_all(request).await?;
        let (head_len, status, framing, close) = self.read_head().await?;
        self.buffer.drain(..head_len);
        self.body.clear();
        let no_body =
            status / 100 == 1 || status == 204 || status == 304 || request.starts_with(b"HEAD ");
        let mut close = close;
        if !no_body {
            match framing {
                Framing::Length(len) => self.read_length(len).await?,
                Framing::Chunked => self.read_chunked().await?,
                Framing::UntilClose => {
                    self.read_until_close().await?;
                    close = true;
                }
            }
        }
        Ok(Response { status, close })
    }

    /// Reads more bytes into the buffer; `Closed` at end of stream.
    async fn fill(&mut self) -> Result<(), ClientError> {
        if self.buffer.capacity() - self.buffer.len() < 4096 {
            self.buffer.reserve(8192);
        }
        let read = self.stream.read_buf(&mut self.buffer).await?;
        if read == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    async fn read_head(&mut self) -> Result<(usize, u16, Framing, bool), ClientError> {
        let mut searched = 0;
        loop {
            if let Some(end) = find_head_end(&self.buffer, searched) {
                let (status, framing, close) = parse_head(&self.buffer[..end])?;
                return Ok((end, status, framing, close));
            }
            searched = self.buffer.len().saturating_sub(3);
            if self.buffer.len() > MAX_HEAD {
                return Err(ClientError::Malformed("response head too large"));
            }
            self.fill().await?;
        }
    }

    async fn read_length(&mut self, len: usize) -> Result<(), ClientError> {
        if len > MAX_BODY {
            return Err(ClientError::Malformed("body too large"));
        }
        while self.buffer.len() < len {
            self.fill().await?;
        }
        self.body.extend_from_slice(&self.buffer[..len]);
        self.buffer.drain(..len);
        Ok(())
    }

    async fn read_chunked(&mut self) -> Result<(), ClientError> {
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buffer, b"\r\n", 0) {
                    break at;
                }
                if self.buffer.len() > MAX_HEAD {
                    return Err(ClientError::Malformed("chunk size line too long"));
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buffer[..line_end])
                .map_err(|_| ClientError::Malformed("chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ClientError::Malformed("chunk size"))?;
            if self.body.len() + size > MAX_BODY {
                return Err(ClientError::Malformed("body too large"));
            }
            self.buffer.drain(..line_end + 2);
            if size == 0 {
                // Trailers (rare) end with an empty line.
                loop {
                    if let Some(at) = find(&self.buffer, b"\r\n", 0) {
                        self.buffer.drain(..at + 2);
                        if at == 0 {
                            return Ok(());
                        }
                        continue;
                    }
                    self.fill().await?;
                }
            }
            while self.buffer.len() < size + 2 {
                self.fill().await?;
            }
            self.body.extend_from_slice(&self.buffer[..size]);
            self.buffer.drain(..size + 2);
        }
    }

    async fn read_until_close(&mut self) -> Result<(), ClientError> {
        loop {
            if self.buffer.len() > MAX_BODY {
                return Err(ClientError::Malformed("body too large"));
            }
            match self.fill().await {
                Ok(()) => {}
                Err(ClientError::Closed) => break,
                Err(e) => return Err(e),
            }
        }
        self.body.extend_from_slice(&self.buffer);
        self.buffer.clear();
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// The length of the head including its blank line, once complete.
fn find_head_end(buffer: &[u8], from: usize) -> Option<usize> {
    find(buffer, b"\r\n\r\n", from).map(|at| at + 4)
}

fn parse_head(head: &[u8]) -> Result<(u16, Framing, bool), ClientError> {
    let text =
        std::str::from_utf8(head).map_err(|_| ClientError::Malformed("head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(ClientError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or(ClientError::Malformed("status code"))?;
    let mut framing = Framing::UntilClose;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if !matches!(framing, Framing::Chunked) {
                let len = value
                    .parse()
                    .map_err(|_| ClientError::Malformed("content-length"))?;
                framing = Framing::Length(len);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().contains("chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            let value = value.to_ascii_lowercase();
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    Ok((status, framing, close))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request with the next canned response.
    async fn canned(responses: Vec<&'static [u8]>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 4096];
            for response in responses {
                let _ = socket.read(&mut buffer).await.unwrap();
                socket.write_all(response).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_length_chunked_and_close_framed_bodies_on_one_connection() {
        let addr = canned(vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsuccess",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nsuc\r\n4;x=y\r\ncess\r\n0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.0 500 Oops\r\n\r\n{\"error\":1}",
        ])
        .await;
        let mut connection = Connection::connect(addr).await.unwrap();
        let request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
        let response = connection.exchange(request).await.unwrap();
        assert_eq!((response.status, connection.body()), (200, &b"success"[..]));
        assert!(!response.close);
        let response = connection.exchange(request).await.unwrap();
        assert_eq!((response.status, connection.body()), (200, &b"success"[..]));
        let response = connection.exchange(request).await.unwrap();
        assert_eq!((response.status, connection.body()), (204, &b""[..]));
        let response = connection.exchange(request).await.unwrap();
        assert_eq!(
            (response.status, connection.body()),
            (500, &b"{\"error\":1}"[..])
        );
        assert!(response.close);
        assert!(matches!(
            connection.exchange(request).await,
            Err(ClientError::Io(_) | ClientError::Closed)
        ));
    }

    #[test]
    fn rejects_what_is_not_http() {
        assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
    }
}
