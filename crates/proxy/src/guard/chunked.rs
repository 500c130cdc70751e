//! An incremental parser for chunked bodies (RFC 9112 §7.1): hex size, optional extensions,
//! CRLF, data, CRLF, ..., `0`, trailers, CRLF. Bare LF, overlong sizes and garbage are faults.
//! The client-facing server ([`crate::h1server`]) decodes request bodies with it, the
//! upstream client ([`crate::h1client`]) responses.

use bytes::{Buf, Bytes, BytesMut};

/// Longest chunk-size line (size plus extensions) accepted.
const MAX_SIZE_LINE: usize = 4096;

#[derive(Debug, Default)]
enum Pos {
    /// Reading hex digits of the size.
    #[default]
    Size,
    /// Inside `;ext` after the size.
    Ext,
    /// Saw CR after the size line, expecting LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// Expecting CR after data.
    DataCr,
    /// Expecting LF after data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Saw CR in a trailer line, expecting LF.
    TrailerLf { empty: bool },
}

/// Validator state.
#[derive(Debug, Default)]
pub struct Chunked {
    pos: Pos,
    size: u64,
    digits: usize,
    line: usize,
    trailer_bytes: usize,
}

/// Result of feeding bytes to [`Chunked::advance`].
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkStep {
    /// All given bytes belong to the body, which continues.
    Consumed(usize),
    /// The body ended after this many bytes; the rest is the next message.
    Done(usize),
    /// Malformed framing.
    Invalid,
}

/// What [`Chunked::scan`] found in the framing bytes at the start of a slice.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Chunk data ([`Chunked::data_left`] bytes) starts after this many framing bytes.
    Data(usize),
    /// The body (trailers included) ended after this many bytes.
    End(usize),
    /// Every byte was framing; the body continues in the next bytes.
    More,
    /// Malformed framing.
    Invalid,
}

impl Chunked {
    /// Feeds `data` without separating chunk data from framing (where the body ends, for
    /// tests); `max_trailers` bounds the trailer section.
    #[cfg(test)]
    pub fn advance(&mut self, data: &[u8], max_trailers: usize) -> ChunkStep {
        let mut i = 0;
        loop {
            let left = self.data_left();
            if left > 0 {
                let take = left.min((data.len() - i) as u64) as usize;
                self.consume_data(take);
                i += take;
                if i == data.len() {
                    return ChunkStep::Consumed(data.len());
                }
            }
            match self.scan(&data[i..], max_trailers) {
                Scan::Data(n) => i += n,
                Scan::End(n) => return ChunkStep::Done(i + n),
                Scan::More => return ChunkStep::Consumed(data.len()),
                Scan::Invalid => return ChunkStep::Invalid,
            }
        }
    }

    /// Chunk data still to come in the current chunk (0 outside chunk data).
    pub fn data_left(&self) -> u64 {
        match self.pos {
            Pos::Data => self.size,
            _ => 0,
        }
    }

    /// Marks `n` (at most [`Chunked::data_left`]) bytes of chunk data as read.
    pub fn consume_data(&mut self, n: usize) {
        self.size = self.size.saturating_sub(n as u64);
        if self.size == 0 {
            self.pos = Pos::DataCr;
        }
    }

    /// Reads framing bytes from the start of `data` until chunk data begins, the body ends or
    /// the bytes run out; `max_trailers` bounds the trailer section.
    pub fn scan(&mut self, data: &[u8], max_trailers: usize) -> Scan {
        for (i, &b) in data.iter().enumerate() {
            match self.pos {
                Pos::Data => return Scan::Data(i),
                Pos::Size => {
                    if let Some(d) = (b as char).to_digit(16) {
                        self.digits += 1;
                        // 15 hex digits is already far beyond any sane chunk; refuse overflow.
                        if self.digits > 15 {
                            return Scan::Invalid;
                        }
                        self.size = self.size * 16 + u64::from(d);
                    } else if self.digits == 0 {
                        return Scan::Invalid;
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.pos = Pos::Ext;
                    } else if b == b'\r' {
                        self.pos = Pos::SizeLf;
                    } else {
                        return Scan::Invalid;
                    }
                    self.line += 1;
                }
                Pos::Ext => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE || b == b'\n' || b == 0 {
                        return Scan::Invalid;
                    }
                    if b == b'\r' {
                        self.pos = Pos::SizeLf;
                    }
                }
                Pos::SizeLf => {
                    if b != b'\n' {
                        return Scan::Invalid;
                    }
                    self.line = 0;
                    self.digits = 0;
                    self.pos = if self.size == 0 {
                        Pos::TrailerStart
                    } else {
                        Pos::Data
                    };
                }
                Pos::DataCr => {
                    if b != b'\r' {
                        return Scan::Invalid;
                    }
                    self.pos = Pos::DataLf;
                }
                Pos::DataLf => {
                    if b != b'\n' {
                        return Scan::Invalid;
                    }
                    self.pos = Pos::Size;
                }
                Pos::TrailerStart | Pos::Trailer => {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > max_trailers || b == b'\n' || b == 0 {
                        return Scan::Invalid;
                    }
                    let empty = matches!(self.pos, Pos::TrailerStart);
                    if b == b'\r' {
                        self.pos = Pos::TrailerLf { empty };
                    } else {
                        self.pos = Pos::Trailer;
                    }
                }
                Pos::TrailerLf { empty } => {
                    if b != b'\n' {
                        return Scan::Invalid;
                    }
                    if empty {
                        return Scan::End(i + 1);
                    }
                    self.pos = Pos::TrailerStart;
                }
            }
        }
        match self.pos {
            Pos::Data => Scan::Data(data.len()),
            _ => Scan::More,
        }
    }
}

/// What [`Dechunk::step`] found in the buffer.
pub(crate) enum Step {
    /// Body data.
    Data(Bytes),
    /// The body (trailers included) ended.
    End,
    /// More bytes are needed.
    More,
}

/// Malformed chunk framing.
#[derive(Debug)]
pub(crate) struct Malformed;

/// Chunked body decoder over a read buffer: [`Chunked`] (strict CRLF, at most 15 hex digits,
/// bounded size lines and trailers), with chunk data split off the buffer without a copy.
/// Trailers are read and dropped. Client request bodies and upstream responses both use it.
#[derive(Debug, Default)]
pub(crate) struct Dechunk(Chunked);

impl Dechunk {
    /// Takes the next piece of the body from the start of `buf`.
    pub(crate) fn step(
        &mut self,
        buf: &mut BytesMut,
        max_trailers: usize,
    ) -> Result<Step, Malformed> {
        loop {
            let left = self.0.data_left();
            if left > 0 {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = left.min(buf.len() as u64) as usize;
                self.0.consume_data(take);
                return Ok(Step::Data(buf.split_to(take).freeze()));
            }
            match self.0.scan(buf, max_trailers) {
                Scan::Data(n) => buf.advance(n),
                Scan::End(n) => {
                    buf.advance(n);
                    return Ok(Step::End);
                }
                Scan::More => {
                    // Every byte was framing, now held in the parser's state.
                    buf.clear();
                    return Ok(Step::More);
                }
                Scan::Invalid => return Err(Malformed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> ChunkStep {
        Chunked::default().advance(input, 1024)
    }

    #[test]
    fn valid_bodies() {
        assert_eq!(run(b"3\r\nabc\r\n0\r\n\r\nGET"), ChunkStep::Done(13));
        assert_eq!(
            run(b"3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"),
            ChunkStep::Done(27)
        );
        assert_eq!(run(b"A\r\n0123456789\r\n"), ChunkStep::Consumed(15));
    }

    #[test]
    fn byte_at_a_time_matches_whole() {
        let body = b"5\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n";
        let mut c = Chunked::default();
        for (i, b) in body.iter().enumerate() {
            let step = c.advance(std::slice::from_ref(b), 1024);
            if i + 1 == body.len() {
                assert_eq!(step, ChunkStep::Done(1));
            } else {
                assert_eq!(step, ChunkStep::Consumed(1));
            }
        }
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            &b"10000000000000003\r\n"[..],
            b"0x3\r\nabc\r\n",
            b"3\r\nabcX\r\n",
            b"3\nabc\r\n",
            b"3;x\nabc",
            b"\r\n",
            b"zz\r\n",
            b"0\r\nX: 1\n\r\n",
            b"-1\r\n",
        ] {
            assert_eq!(
                run(bad),
                ChunkStep::Invalid,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
