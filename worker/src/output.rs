//! Keeps the last `cap` bytes of a run's output.

use std::collections::VecDeque;

pub struct TailBuffer {
    cap: usize,
    bytes: VecDeque<u8>,
    truncated: bool,
}

impl TailBuffer {
    pub fn new(cap: usize) -> Self {
        TailBuffer {
            cap,
            bytes: VecDeque::new(),
            truncated: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        let chunk = if chunk.len() > self.cap {
            self.truncated = true;
            self.bytes.clear();
            &chunk[chunk.len() - self.cap..]
        } else {
            chunk
        };
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.cap);
        if overflow > 0 {
            self.truncated = true;
            self.bytes.drain(..overflow);
        }
        self.bytes.extend(chunk);
    }

    /// The kept bytes as text (invalid UTF-8, including a character cut at
    /// the front by truncation, becomes U+FFFD) and whether anything was dropped.
    pub fn into_string(self) -> (String, bool) {
        let bytes: Vec<u8> = self.bytes.into();
        (String::from_utf8_lossy(&bytes).into_owned(), self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_tail() {
        let mut b = TailBuffer::new(5);
        b.push(b"abc");
        b.push(b"defg");
        assert_eq!(b.into_string(), ("cdefg".to_string(), true));
        let mut b = TailBuffer::new(5);
        b.push(b"0123456789");
        assert_eq!(b.into_string(), ("56789".to_string(), true));
        let mut b = TailBuffer::new(5);
        b.push(b"ab");
        assert_eq!(b.into_string(), ("ab".to_string(), false));
    }
}
