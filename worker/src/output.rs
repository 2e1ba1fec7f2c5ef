//! A run's output: the last `cap` bytes in memory ([`TailBuffer`]), and,
//! when large outputs go to a bucket, the whole output spooled to a file
//! ([`OutputCapture`]).

use std::collections::VecDeque;
use std::io::Write;

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

/// How output is captured.
#[derive(Debug, Clone)]
pub enum CaptureConfig {
    /// Keep the last `limit` bytes.
    Tail { limit: usize },
    /// Keep up to `inline` bytes in the record; beyond that, spool the whole
    /// output (up to `max` bytes) to a file in `dir` for upload, and keep the
    /// head and tail inline.
    Spool {
        inline: usize,
        max: u64,
        dir: std::path::PathBuf,
    },
}

/// The captured output of a finished run.
pub struct Captured {
    /// The record's `output`: everything, or head and tail around a marker.
    pub inline: String,
    /// The inline text is not the whole output.
    pub truncated: bool,
    /// Total bytes the run wrote.
    pub total_bytes: u64,
    /// The whole output (up to the spool limit), when it did not fit inline.
    pub spool: Option<tempfile::NamedTempFile>,
}

pub struct OutputCapture {
    tail: TailBuffer,
    /// The first bytes, when spooling (inline head).
    head: Vec<u8>,
    inline: usize,
    total: u64,
    spool: Option<(
        std::io::BufWriter<std::fs::File>,
        tempfile::NamedTempFile,
        u64,
    )>,
    spool_failed: bool,
}

impl OutputCapture {
    pub fn new(config: &CaptureConfig) -> Self {
        match config {
            CaptureConfig::Tail { limit } => OutputCapture {
                tail: TailBuffer::new(*limit),
                head: Vec::new(),
                inline: 0,
                total: 0,
                spool: None,
                spool_failed: false,
            },
            CaptureConfig::Spool { inline, max, dir } => {
                let spool = tempfile::Builder::new()
                    .prefix("gdts-output-")
                    .tempfile_in(dir)
                    .and_then(|f| Ok((std::io::BufWriter::new(f.reopen()?), f)));
                let spool_failed = spool.is_err();
                if let Err(e) = &spool {
                    tracing::warn!(error = %e, "cannot spool output; keeping the tail only");
                }
                OutputCapture {
                    tail: TailBuffer::new((*inline / 2).max(1)),
                    head: Vec::with_capacity((*inline).min(64 * 1024)),
                    inline: *inline,
                    total: 0,
                    spool: spool.ok().map(|(w, f)| (w, f, *max)),
                    spool_failed,
                }
            }
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        self.tail.push(chunk);
        if self.inline > 0 && self.head.len() < self.inline {
            let room = self.inline - self.head.len();
            self.head.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if let Some((writer, _, max)) = &mut self.spool {
            let written_before = self.total - chunk.len() as u64;
            let room = max.saturating_sub(written_before) as usize;
            if let Err(e) = writer.write_all(&chunk[..chunk.len().min(room)]) {
                tracing::warn!(error = %e, "spooling output failed; keeping the tail only");
                self.spool = None;
                self.spool_failed = true;
            }
        }
    }

    pub fn finish(self) -> Captured {
        let OutputCapture {
            tail,
            head,
            inline,
            total,
            spool,
            spool_failed,
        } = self;
        if inline == 0 || spool_failed {
            let (text, truncated) = tail.into_string();
            return Captured {
                inline: text,
                truncated,
                total_bytes: total,
                spool: None,
            };
        }
        if total as usize <= inline {
            return Captured {
                inline: String::from_utf8_lossy(&head).into_owned(),
                truncated: false,
                total_bytes: total,
                spool: None,
            };
        }
        let spool = spool.and_then(|(mut writer, file, _)| match writer.flush() {
            Ok(()) => Some(file),
            Err(e) => {
                tracing::warn!(error = %e, "flushing the output spool failed");
                None
            }
        });
        let (tail_text, _) = tail.into_string();
        let head_text = String::from_utf8_lossy(&head[..inline / 2]).into_owned();
        let omitted = total.saturating_sub((inline / 2) as u64 + tail_text.len() as u64);
        Captured {
            inline: format!("{head_text}\n... [{omitted} bytes omitted] ...\n{tail_text}"),
            truncated: true,
            total_bytes: total,
            spool,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spools_only_what_does_not_fit_inline() {
        let dir = tempfile::tempdir().unwrap();
        let config = CaptureConfig::Spool {
            inline: 8,
            max: 1000,
            dir: dir.path().to_path_buf(),
        };
        let mut small = OutputCapture::new(&config);
        small.push(b"abc");
        let c = small.finish();
        assert_eq!(
            (c.inline.as_str(), c.truncated, c.spool.is_none()),
            ("abc", false, true)
        );

        let mut big = OutputCapture::new(&config);
        big.push(b"0123456789");
        big.push(b"abcdefghij");
        let c = big.finish();
        assert!(c.truncated);
        assert_eq!(c.total_bytes, 20);
        assert!(
            c.inline.starts_with("0123") && c.inline.ends_with("ghij"),
            "{}",
            c.inline
        );
        let whole = std::fs::read(c.spool.unwrap().path()).unwrap();
        assert_eq!(whole, b"0123456789abcdefghij");
    }

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
