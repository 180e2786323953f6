//! A child's output cut into lines with bounded work and memory per byte: only the new bytes
//! are searched for line ends, and a line longer than `MAX` keeps its first `MAX` bytes and a
//! count of the rest (a phase that prints 20 MB without a newline costs 20 MB of scanning, not
//! 20 MB for every chunk, and is shown cut).

pub struct Lines {
    partial: Vec<u8>,
    cut: usize,
    ends: &'static [u8],
}

/// A line as kept: its first bytes, and how many more it had.
pub struct Line<'a> {
    pub bytes: &'a [u8],
    pub cut: usize,
}

impl Lines {
    pub const MAX: usize = 4096;

    /// `ends`: the bytes that end a line (`b"\n"`, or `b"\n\r"` to count `\r` progress
    /// counters as lines).
    pub fn new(ends: &'static [u8]) -> Lines {
        Lines {
            partial: Vec::new(),
            cut: 0,
            ends,
        }
    }

    /// Feeds `chunk`; `done` gets every line it completes, without its line end.
    pub fn push(&mut self, mut chunk: &[u8], mut done: impl FnMut(Line)) {
        while !chunk.is_empty() {
            let end = chunk.iter().position(|b| self.ends.contains(b));
            let piece = &chunk[..end.unwrap_or(chunk.len())];
            let room = Self::MAX - self.partial.len();
            self.partial.extend_from_slice(&piece[..piece.len().min(room)]);
            self.cut += piece.len().saturating_sub(room);
            match end {
                Some(e) => {
                    done(Line {
                        bytes: &self.partial,
                        cut: self.cut,
                    });
                    self.partial.clear();
                    self.cut = 0;
                    chunk = &chunk[e + 1..];
                }
                None => break,
            }
        }
    }

    /// The line still being written, if any.
    pub fn pending(&self) -> Option<Line<'_>> {
        (!self.partial.is_empty() || self.cut > 0).then_some(Line {
            bytes: &self.partial,
            cut: self.cut,
        })
    }
}

impl Line<'_> {
    /// For a terminal: control characters (ESC, BEL, CR, ...) shown escaped so they cannot
    /// move the cursor or recolour the user's terminal, and a cut line says so.
    pub fn escaped(&self) -> String {
        let mut out = String::new();
        for c in String::from_utf8_lossy(self.bytes).chars() {
            if c.is_control() && c != '\t' {
                out.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                out.push(c);
            }
        }
        if self.cut > 0 {
            out.push_str(&format!(" … ({} more bytes)", self.cut));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(l: &mut Lines, chunk: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        l.push(chunk, |line| v.push(line.escaped()));
        v
    }

    #[test]
    fn lines_split_across_chunks_and_several_per_chunk() {
        let mut l = Lines::new(b"\n");
        assert_eq!(collect(&mut l, b"one\ntw"), ["one"]);
        assert_eq!(collect(&mut l, b"o\nthree\nfo"), ["two", "three"]);
        assert_eq!(l.pending().unwrap().escaped(), "fo");
        let mut cr = Lines::new(b"\n\r");
        assert_eq!(collect(&mut cr, b" 10%\r 20%\rdone\n"), [" 10%", " 20%", "done"]);
    }

    #[test]
    fn a_huge_line_is_kept_short_and_says_how_much_was_cut() {
        let mut l = Lines::new(b"\n");
        let chunk = vec![b'x'; 16384];
        for _ in 0..1280 {
            // 20 MiB without a newline
            assert!(collect(&mut l, &chunk).is_empty());
            assert!(l.partial.len() <= Lines::MAX);
        }
        let line = collect(&mut l, b"\n").remove(0);
        assert!(line.starts_with(&"x".repeat(Lines::MAX)));
        assert!(line.ends_with(&format!(" … ({} more bytes)", 1280 * 16384 - Lines::MAX)));
    }

    #[test]
    fn control_characters_are_shown_escaped() {
        let mut l = Lines::new(b"\n");
        let got = collect(&mut l, b"\x1b[31mred\x07 a\rb\tc\n");
        assert_eq!(got, [r"\x1b[31mred\x07 a\x0db	c"]);
    }
}
