//! Metadata blocks: a byte stream cut into 8 KiB pieces, each compressed on its own and preceded
//! by its stored length (top bit set when stored raw). Inodes and directory listings are
//! addressed as (block start, offset in the uncompressed block).

use super::blocks::{Codec, compress};
use anyhow::Result;

pub const BLOCK: usize = 8192;
const RAW: u16 = 0x8000;

pub struct MetaWriter {
    codec: Codec,
    out: Vec<u8>,
    buf: Vec<u8>,
}

/// Where a record starts: its metadata block (relative to the table) and offset inside it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ref {
    pub block: u32,
    pub offset: u16,
}

impl Ref {
    /// The 64-bit reference the superblock and lookup tables use.
    pub fn packed(self) -> u64 {
        ((self.block as u64) << 16) | self.offset as u64
    }
}

impl MetaWriter {
    pub fn new(codec: Codec) -> MetaWriter {
        MetaWriter {
            codec,
            out: Vec::new(),
            buf: Vec::with_capacity(2 * BLOCK),
        }
    }

    pub fn pos(&self) -> Ref {
        Ref {
            block: self.out.len() as u32,
            offset: self.buf.len() as u16,
        }
    }

    pub fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= BLOCK {
            let rest = self.buf.split_off(BLOCK);
            let full = std::mem::replace(&mut self.buf, rest);
            emit(&mut self.out, &full, self.codec)?;
        }
        Ok(())
    }

    /// The table's bytes, the last (short) block included.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if !self.buf.is_empty() {
            let last = std::mem::take(&mut self.buf);
            emit(&mut self.out, &last, self.codec)?;
        }
        Ok(self.out)
    }
}

fn emit(out: &mut Vec<u8>, block: &[u8], codec: Codec) -> Result<()> {
    let stored = compress(block, codec)?;
    let len = stored.bytes.len() as u16 | if stored.raw { RAW } else { 0 };
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&stored.bytes);
    Ok(())
}

/// A lookup table (fragment or id table) placed at absolute offset `at`: its metadata blocks,
/// then the absolute offsets of those blocks. Returns the bytes and where the offsets start,
/// which is what the superblock points to.
pub fn lookup_table(table: &[u8], at: u64, codec: Codec) -> Result<(Vec<u8>, u64)> {
    let (mut out, starts) = table_blocks(table, at, codec)?;
    let list = at + out.len() as u64;
    for s in starts {
        out.extend_from_slice(&s.to_le_bytes());
    }
    Ok((out, list))
}

/// A lookup table's metadata blocks placed at `at`, and their absolute offsets.
pub fn table_blocks(table: &[u8], at: u64, codec: Codec) -> Result<(Vec<u8>, Vec<u64>)> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for chunk in table.chunks(BLOCK) {
        starts.push(at + out.len() as u64);
        emit(&mut out, chunk, codec)?;
    }
    Ok((out, starts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(table: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < table.len() {
            let len = u16::from_le_bytes([table[at], table[at + 1]]);
            let body = &table[at + 2..at + 2 + (len & !RAW) as usize];
            out.push(if len & RAW != 0 {
                body.to_vec()
            } else {
                zstd::bulk::decompress(body, BLOCK).unwrap()
            });
            at += 2 + (len & !RAW) as usize;
        }
        out
    }

    #[test]
    fn records_may_straddle_blocks_and_refs_point_at_their_start() {
        let mut w = MetaWriter::new(Codec::Zstd(3));
        w.put(&[1; 8000]).unwrap();
        let r = w.pos();
        assert_eq!(
            r,
            Ref {
                block: 0,
                offset: 8000
            }
        );
        w.put(&[2; 400]).unwrap();
        let next = w.pos();
        assert_eq!(next.offset, 208);
        assert!(next.block > 0);
        let table = w.finish().unwrap();
        let decoded = blocks(&table);
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].len(), BLOCK);
        assert_eq!(&decoded[0][8000..], &[2; 192]);
        assert_eq!(decoded[1], vec![2; 208]);
        assert_eq!(
            next.block as usize,
            table.len()
                - 2
                - (u16::from_le_bytes([table[next.block as usize], table[next.block as usize + 1]]) & !RAW)
                    as usize
        );
    }

    #[test]
    fn lookup_tables_end_with_the_block_offsets() {
        let table: Vec<u8> = (0..20_000u32).map(|i| (i % 7) as u8).collect();
        let (bytes, list) = lookup_table(&table, 1000, Codec::Zstd(3)).unwrap();
        let starts: Vec<u64> = bytes[(list - 1000) as usize..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[0], 1000);
        let body = &bytes[..(list - 1000) as usize];
        assert_eq!(blocks(body).concat(), table);
    }
}
