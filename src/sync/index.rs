//! What the app's Tanium source holds, keyed by identity, compact enough for a million
//! documents, with the bookkeeping a run adds (seen, removed, created).

use std::collections::{BTreeMap, BTreeSet};

use crate::compact::CompactMap;
use crate::intel;
use crate::intel::group::{self, BucketKey};
use crate::intel::Format;
use crate::tanium::model::IntelDoc;
use crate::tc::model::IndicatorType;

use super::labels::LabelSets;

/// The indicator was met in this run's pull (its document is current or being written).
pub(super) const SEEN: u8 = 1;
/// The document is being removed or replaced.
pub(super) const GONE: u8 = 2;
/// The document is in the other intel format than the job now renders.
pub(super) const OTHER_FORMAT: u8 = 4;

/// What the source holds for one identity (48 bytes with its key in the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub doc_id: i64,
    /// The rev in the document's description marker (0: unknown, e.g. listings without
    /// descriptions).
    pub rev: u64,
    /// The first 64 bits of the document's MD5 (0: unknown).
    pub md5: u64,
    /// The document's labels as listed, in [`SourceIndex::label_sets`] (in what was padding).
    pub labels: u32,
    pub flags: u8,
}

/// The app's source content: identity -> document, plus documents to clean up.
#[derive(Default)]
pub(super) struct SourceIndex {
    pub map: CompactMap<u128, Entry>,
    /// Identities this run creates documents for (16 bytes each rather than a whole entry, so
    /// a first sync of a million stays small); a second sighting in the run is skipped.
    pub created: CompactMap<u128, ()>,
    /// Extra documents claiming an identity already present (same indicator twice).
    pub duplicates: Vec<(i64, String)>,
    /// Documents in the app's source that carry no identity of ours: id, name, intrinsic id.
    pub unidentified: Vec<(i64, String, String)>,
    pub docs: u64,
    /// Documents in the other intel format than the job renders now.
    pub other_format: u64,
    /// Taking the source over: documents this job did not make that cover exactly one
    /// indicator, by (type, identity key), with the root id they keep when adopted.
    pub adoptable: BTreeMap<(IndicatorType, String), (i64, String)>,
    /// Documents adopted this run (no longer foreign).
    pub adopted: BTreeSet<i64>,
    /// Taking the source over: documents this job did not make that could not be read, so
    /// what they cover is unknown; they stay.
    pub unread: BTreeSet<i64>,
    /// Adopted documents (identified by the marker in their name) and the root id they keep.
    pub roots: BTreeMap<u128, String>,
    pub label_sets: LabelSets,
    /// Grouped documents (Indicators per Intel Document above 1), as their names say.
    pub groups: Vec<Listed>,
    /// Documents Threat Response has disabled, as the listing shows them.
    pub disabled: Vec<Disabled>,
}

/// A document of the source that Threat Response has disabled (noisy intel), everywhere or
/// on some endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Disabled {
    pub doc_id: i64,
    pub name: String,
    /// Turned off everywhere (else on `endpoints` endpoints).
    pub everywhere: bool,
    pub endpoints: Option<i64>,
    pub throttled: Option<i64>,
    pub status: Option<String>,
    /// A grouped document: its bucket and how many indicators its name says it holds.
    pub bucket: Option<(BucketKey, u64)>,
    /// Its labels as listed (None: the listing does not say).
    pub labels: Option<Vec<i64>>,
}

impl Disabled {
    fn of(doc: &IntelDoc, bucket: Option<(BucketKey, u64)>) -> Option<Disabled> {
        doc.disabled_by_tr().then(|| Disabled {
            doc_id: doc.id,
            name: doc.name.clone(),
            everywhere: doc.disabled == Some(true),
            endpoints: doc.disabled_endpoint_count,
            throttled: doc.throttled_finding_count,
            status: doc.status.clone(),
            bucket,
            labels: doc.label_ids.clone(),
        })
    }
}

/// A grouped document as the listing shows it.
#[derive(Debug, Clone)]
pub(super) struct Listed {
    pub doc_id: i64,
    pub key: BucketKey,
    /// What its name says (None: the server named it otherwise; its content says).
    pub marker: Option<group::Marker>,
    pub format: Option<Format>,
    /// Its labels as listed, in [`SourceIndex::label_sets`].
    pub labels: u32,
    pub name: String,
}

impl Listed {
    /// The indicators its name says it holds (0 when it does not say).
    pub fn count(&self) -> u64 {
        self.marker.map_or(0, |m| m.count)
    }
}

impl SourceIndex {
    pub fn add(&mut self, doc: IntelDoc, format: Format) {
        self.docs += 1;
        let marker = group::marker(&doc.name);
        let key = marker.map(|m| m.key).or_else(|| {
            doc.intrinsic_id
                .as_deref()
                .and_then(group::BucketKey::from_id)
        });
        if let Some(key) = key {
            self.disabled.extend(Disabled::of(
                &doc,
                Some((key, marker.map_or(0, |m| m.count))),
            ));
            let format = doc_format(&doc);
            self.groups.push(Listed {
                doc_id: doc.id,
                key,
                marker,
                format,
                labels: self.label_sets.intern(doc.label_ids),
                name: doc.name,
            });
            return;
        }
        let identity = intel::identity_from_doc(
            doc.intrinsic_id.as_deref(),
            &doc.name,
            doc.description.as_deref(),
        )
        .map(intel::Identity::as_u128);
        if identity.is_some() {
            self.disabled.extend(Disabled::of(&doc, None));
        }
        let Some(key) = identity else {
            self.unidentified
                .push((doc.id, doc.name, doc.intrinsic_id.unwrap_or_default()));
            return;
        };
        let root = doc.intrinsic_id.as_deref().unwrap_or("");
        if !root.is_empty() && intel::identity_from_doc(Some(root), "", None).is_none() {
            self.roots.insert(key, root.to_string());
        }
        let other = doc_format(&doc).is_some_and(|f| f != format);
        self.other_format += u64::from(other);
        let entry = Entry {
            doc_id: doc.id,
            rev: intel::rev_from_doc(doc.description.as_deref()).map_or(0, |r| r.0),
            md5: doc.md5.as_deref().and_then(intel::md5_prefix).unwrap_or(0),
            labels: self.label_sets.intern(doc.label_ids),
            flags: if other { OTHER_FORMAT } else { 0 },
        };
        match self.map.get_mut(&key) {
            None => {
                self.map.insert(key, entry);
            }
            Some(existing) => {
                // Keep the one in the current format (a format switch interrupted between its
                // create and its delete leaves both), then one whose labels hold all of the
                // other's (of two creates, the one whose answer was lost never got its labels,
                // and an incremental run that does not pull its indicator cannot give them),
                // then the oldest (lowest id), so Tanium ids stay stable.
                let sets = &self.label_sets;
                let fuller = |a: &Entry, b: &Entry| match (sets.get(a.labels), sets.get(b.labels)) {
                    (Some(a), Some(b)) => a.len() > b.len() && b.iter().all(|l| a.contains(l)),
                    _ => false,
                };
                let rank = |e: &Entry, other: &Entry| {
                    (e.flags & OTHER_FORMAT != 0, !fuller(e, other), e.doc_id)
                };
                let (keep, drop) = if rank(&entry, existing) < rank(existing, &entry) {
                    (entry, *existing)
                } else {
                    (*existing, entry)
                };
                *existing = keep;
                self.duplicates.push((drop.doc_id, doc.name));
            }
        }
    }

    /// Marks the document of `key` for removal; its id when there is one to remove (not one
    /// this run met in the pull, nor one already on its way out).
    pub fn take_for_removal(&mut self, key: u128) -> Option<i64> {
        let e = self.map.get_mut(&key)?;
        if e.flags & (SEEN | GONE) != 0 || e.doc_id < 0 {
            return None;
        }
        e.flags |= GONE;
        Some(e.doc_id)
    }

    /// Every document the pull did not meet, marked for removal (a full reconcile's sweep).
    pub fn take_unseen(&mut self) -> Vec<(u128, i64)> {
        let mut out = Vec::new();
        for (key, e) in self.map.iter_mut() {
            if e.flags & (SEEN | GONE) == 0 && e.doc_id >= 0 {
                e.flags |= GONE;
                out.push((*key, e.doc_id));
            }
        }
        out
    }
}

/// The format of a listed document, from Tanium's `type` (or the name of the file it came from).
fn doc_format(doc: &IntelDoc) -> Option<Format> {
    let kind = doc.kind.as_deref()?.to_ascii_lowercase();
    if kind.contains("stix") {
        Some(Format::Stix)
    } else if kind.contains("ioc") {
        Some(Format::OpenIoc)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: i64, identity: &intel::Identity, kind: &str) -> IntelDoc {
        IntelDoc {
            id,
            source_id: Some(1),
            name: format!("doc {id}"),
            intrinsic_id: Some(format!("tctr:Package-{identity}")),
            md5: Some("0123456789abcdef0123456789abcdef".into()),
            kind: Some(kind.into()),
            ..IntelDoc::default()
        }
    }

    #[test]
    fn an_entry_stays_32_bytes_with_its_labels() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }

    #[test]
    fn duplicates_keep_the_current_format_then_the_oldest() {
        let a = intel::identity::identity("o", crate::tc::model::IndicatorType::Host, "a.b");
        let mut index = SourceIndex::default();
        index.add(doc(7, &a, "openioc"), Format::Stix);
        index.add(doc(9, &a, "stix"), Format::Stix);
        index.add(doc(8, &a, "stix"), Format::Stix);
        let e = index.map.get(&a.as_u128()).unwrap();
        assert_eq!(e.doc_id, 8);
        assert_eq!(e.md5, 0x0123456789abcdef);
        let mut dropped: Vec<i64> = index.duplicates.iter().map(|d| d.0).collect();
        dropped.sort();
        assert_eq!(dropped, vec![7, 9]);
        index.add(
            IntelDoc {
                intrinsic_id: Some("someone else's".into()),
                ..doc(10, &a, "stix")
            },
            Format::Stix,
        );
        assert_eq!(
            index.unidentified,
            vec![(10, "doc 10".to_string(), "someone else's".to_string())]
        );
        assert_eq!(index.docs, 4);
    }

    #[test]
    fn of_two_duplicates_the_one_with_all_the_others_labels_is_kept() {
        let a = intel::identity::identity("o", crate::tc::model::IndicatorType::Host, "a.b");
        let labelled = |id: i64, labels: Option<Vec<i64>>| IntelDoc {
            label_ids: labels,
            ..doc(id, &a, "stix")
        };
        for (older, newer, kept) in [
            (Some(vec![]), Some(vec![1, 5]), 9),
            (Some(vec![1]), Some(vec![1, 5]), 9),
            (Some(vec![1, 5]), Some(vec![1, 5]), 7),
            (Some(vec![1, 6]), Some(vec![1, 5]), 7),
            (None, Some(vec![1, 5]), 7),
            (Some(vec![1, 5]), Some(vec![]), 7),
        ] {
            for order in [[7, 9], [9, 7]] {
                let mut index = SourceIndex::default();
                for id in order {
                    let labels = if id == 7 {
                        older.clone()
                    } else {
                        newer.clone()
                    };
                    index.add(labelled(id, labels), Format::Stix);
                }
                let e = index.map.get(&a.as_u128()).unwrap();
                assert_eq!(e.doc_id, kept, "{older:?} {newer:?} {order:?}");
                let dropped: Vec<i64> = index.duplicates.iter().map(|d| d.0).collect();
                assert_eq!(dropped, vec![16 - kept], "{older:?} {newer:?} {order:?}");
            }
        }
    }

    #[test]
    fn a_document_is_taken_for_removal_once_and_never_after_being_seen() {
        let a = intel::identity::identity("o", crate::tc::model::IndicatorType::Host, "a.b");
        let b = intel::identity::identity("o", crate::tc::model::IndicatorType::Host, "c.d");
        let mut index = SourceIndex::default();
        index.add(doc(1, &a, "stix"), Format::Stix);
        index.add(doc(2, &b, "stix"), Format::Stix);
        let (ka, kb) = (a.as_u128(), b.as_u128());
        if let Some(e) = index.map.get_mut(&kb) {
            e.flags |= SEEN;
        }
        assert_eq!(index.take_for_removal(kb), None, "met in the pull");
        assert_eq!(index.take_for_removal(ka), Some(1));
        assert_eq!(index.take_for_removal(ka), None, "already going");
        assert!(index.take_unseen().is_empty());
    }
}
