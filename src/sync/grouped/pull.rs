//! The pull of a grouped run: one 40-byte record a kept indicator, members in a scratch file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::intel::group::{self, Member};
use crate::tc::model::Indicator;

use super::layout;
use crate::sync::cause::Cause;
use crate::sync::pull::describe;
use crate::sync::report::Counts;
use crate::sync::select::{select, NotSent, Selection, Verdict};
use crate::sync::Run;

/// One kept indicator: where its member line is in the scratch file (40 bytes: a million
/// of them are the largest thing a run holds).
#[derive(Debug, Clone, Copy)]
pub(super) struct Rec {
    /// The identity's bits, high half first (two words keep the record 8-byte aligned).
    pub(super) id: [u64; 2],
    pub(super) rev: u64,
    /// Scratch file offset (low 40 bits) and line length (high 24 bits).
    pub(super) at: u64,
    pub(super) labels: u32,
    /// lastModified, Unix seconds (0: unknown).
    pub(super) modified: u32,
}

pub(super) const OFFSET_BITS: u32 = 40;

impl Rec {
    pub(super) fn identity(&self) -> u128 {
        (u128::from(self.id[0]) << 64) | u128::from(self.id[1])
    }

    pub(super) fn off(&self) -> u64 {
        self.at & ((1 << OFFSET_BITS) - 1)
    }

    pub(super) fn len(&self) -> usize {
        (self.at >> OFFSET_BITS) as usize
    }

    pub(super) fn modified(&self) -> Option<OffsetDateTime> {
        (self.modified != 0)
            .then(|| OffsetDateTime::from_unix_timestamp(i64::from(self.modified)).ok())
            .flatten()
    }
}

/// Records sorted by identity, as the layout reads identities.
pub(super) struct RecIds<'a>(pub(super) &'a [Rec]);

impl layout::Ids for RecIds<'_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn at(&self, i: usize) -> u128 {
        self.0[i].identity()
    }
}

/// The pull's members, one line each, in a scratch file deleted when the run ends.
pub(super) struct Spill {
    pub(super) path: PathBuf,
    pub(super) writer: Option<BufWriter<File>>,
    pub(super) reader: Option<File>,
    pub(super) len: u64,
}

impl Spill {
    pub(super) fn open(dir: &Path) -> Result<Spill> {
        let dir = if std::fs::create_dir_all(dir).is_ok() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!("tanium-tr-groups-{}.tmp", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Spill {
            path,
            writer: Some(BufWriter::new(file)),
            reader: None,
            len: 0,
        })
    }

    /// Appends a line; where it is, as a record keeps it.
    pub(super) fn put(&mut self, line: &str) -> Result<u64> {
        let w = self.writer.as_mut().expect("spill open for writing");
        w.write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))?;
        let at = self.len;
        self.len += line.len() as u64;
        let fits = at < (1 << OFFSET_BITS) && line.len() < (1 << (64 - OFFSET_BITS));
        if !fits {
            return Err(Error::io(
                &self.path,
                std::io::Error::other("scratch file or member line too large"),
            ));
        }
        Ok(at | ((line.len() as u64) << OFFSET_BITS))
    }

    pub(super) fn seal(&mut self) -> Result<()> {
        if let Some(w) = self.writer.take() {
            let f = w
                .into_inner()
                .map_err(|e| Error::io(&self.path, e.into_error()))?;
            self.reader = Some(f);
        }
        Ok(())
    }

    pub(super) fn member(&self, r: &Rec) -> std::result::Result<Member, String> {
        let f = self.reader.as_ref().ok_or("scratch file not sealed")?;
        let mut buf = vec![0u8; r.len()];
        f.read_exact_at(&mut buf, r.off())
            .map_err(|e| format!("scratch file unreadable: {e}"))?;
        let line = String::from_utf8(buf).map_err(|_| "scratch file damaged".to_string())?;
        Member::from_line(&line).ok_or_else(|| "scratch file damaged".to_string())
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An indicator that no longer qualifies, with what the plan says of it and why it goes.
pub(super) struct Gone {
    pub(super) identity: u128,
    pub(super) what: String,
    pub(super) cause: Cause,
}

/// What the pull kept, as planning and writing read it.
#[derive(Clone, Copy)]
pub(super) struct Kept<'a> {
    /// One record per identity, by label set then identity.
    pub(super) recs: &'a [Rec],
    /// Every identity sent, sorted (a full reconcile with several label sets; empty: `recs`
    /// are in identity order and say it).
    pub(super) desired: &'a [u128],
    /// What left the selection, by identity.
    pub(super) gone: &'a [Gone],
    /// The pull's floor (the horizon or Maximum Indicator Age).
    pub(super) floor: Option<OffsetDateTime>,
}

impl Kept<'_> {
    /// Whether this run sends `id` (a full reconcile's records are every identity it sends).
    pub(super) fn sent(&self, id: u128) -> bool {
        if self.desired.is_empty() {
            self.recs.binary_search_by_key(&id, Rec::identity).is_ok()
        } else {
            self.desired.binary_search(&id).is_ok()
        }
    }

    /// Why an indicator this run does not send leaves: what the pull met of it, or, not met,
    /// not selected any more.
    pub(super) fn cause_of(&self, id: u128) -> Cause {
        match self.gone.binary_search_by_key(&id, |g| g.identity) {
            Ok(i) => self.gone[i].cause.clone(),
            Err(_) => Cause::NotSelected { floor: self.floor },
        }
    }
}

/// What the pull kept.
pub(super) struct Pulled {
    /// The pull's floor (the horizon or Maximum Indicator Age).
    pub(super) floor: Option<OffsetDateTime>,
    pub(super) recs: Vec<Rec>,
    pub(super) spill: Spill,
    /// Label names by label-set hash.
    pub(super) names: HashMap<u32, Vec<String>>,
    pub(super) gone: Vec<Gone>,
}

/// Plans one indicator of the pull: kept as a member, or counted (and, when it may be in a
/// document, noted as gone).
pub(super) fn take(
    run: &Run,
    counts: &mut Counts,
    ind: &Indicator,
    sel: &Selection,
    pulled: &mut Pulled,
) -> Result<()> {
    let member = match select(ind, sel, group::member) {
        Verdict::Sent(m) => m,
        Verdict::NotSent(why) => {
            why.count(ind, counts, run.opts.dry_run);
            if let NotSent::Out {
                identity: Some(identity),
                cause,
                ..
            } = why
            {
                pulled.gone.push(Gone {
                    identity,
                    what: describe(ind),
                    cause,
                });
            }
            return Ok(());
        }
    };
    counts.matched += 1;
    let names = run.config.labels.for_indicator(ind);
    let labels = group::label_set_hash(&names);
    pulled.names.entry(labels).or_insert(names);
    let at = pulled.spill.put(&member.to_line())?;
    let id = member.identity.as_u128();
    pulled.recs.push(Rec {
        id: [(id >> 64) as u64, id as u64],
        labels,
        rev: member.rev.0,
        at,
        modified: ind
            .last_modified_at()
            .and_then(|t| u32::try_from(t.unix_timestamp()).ok())
            .unwrap_or(0),
    });
    Ok(())
}
