//! Raw HTTP/2 frames for the tests that send what a well-behaved client
//! library would refuse to (RFC 9113 §4, §6).

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;

/// RST_STREAM / GOAWAY error code CANCEL.
pub const CANCEL: u32 = 0x8;

/// One frame: 24-bit length, type, flags, 31-bit stream id, payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header block of a request: `:method`, `:scheme http`,
/// `:authority proxy` and `:path` as literals without indexing (values
/// under 127 bytes).
pub fn request_block(method: &str, path: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, v) in [
        (":method", method),
        (":scheme", "http"),
        (":authority", "proxy"),
        (":path", path),
    ] {
        out.push(0x00);
        out.push(n.len() as u8);
        out.extend_from_slice(n.as_bytes());
        out.push(v.len() as u8);
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// One frame as read off the wire (the stream id without its reserved bit).
#[derive(Debug)]
pub struct RawFrame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads the next frame; `None` once the peer closed or the read failed.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(io: &mut R) -> Option<RawFrame> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(RawFrame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}
