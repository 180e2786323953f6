//! A disk image's GPT partitions, as sfdisk lists them: the table is not ours to parse.

use crate::proc;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// A partition as `sfdisk --json` lists it, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub start: u64,
    pub size: u64,
}

/// The partitions of `disk`, in table order.
pub fn list(disk: &Path) -> Result<Vec<Part>> {
    let json = proc::output("sfdisk", ["--json".as_ref(), disk.as_os_str()])
        .with_context(|| format!("reading the partition table of {}", disk.display()))?;
    parse_sfdisk(&json).with_context(|| format!("reading sfdisk's listing of {}", disk.display()))
}

fn parse_sfdisk(json: &str) -> Result<Vec<Part>> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let table = &v["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let Some(parts) = table["partitions"].as_array() else {
        bail!("no partitions listed");
    };
    parts
        .iter()
        .map(|p| {
            let num = |k: &str| p[k].as_u64().with_context(|| format!("partition without {k}"));
            Ok(Part {
                name: p["name"].as_str().unwrap_or("").to_string(),
                start: num("start")? * sector,
                size: num("size")? * sector,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfdisk_listing_in_bytes() {
        let json = r#"{"partitiontable": {"label": "gpt", "sectorsize": 512, "partitions": [
            {"node": "d1", "start": 2048, "size": 262144, "type": "x", "uuid": "u", "name": "boot-a"},
            {"node": "d2", "start": 264192, "size": 8, "type": "x", "uuid": "v"}]}}"#;
        let p = parse_sfdisk(json).unwrap();
        assert_eq!(
            p[0],
            Part {
                name: "boot-a".into(),
                start: 1 << 20,
                size: 128 << 20
            }
        );
        assert_eq!(p[1].name, "");
    }
}
